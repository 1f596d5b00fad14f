"""A run directory that holds a run is never replaced by accident, nor its recipe by a failed resume."""

import csv
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from conftest import NARROW_FC, invoke_alexnet

from alexnet_cli.training.run_dir import run_lock

ONE_STEP = ["--set", "trainer.max_epochs=1", "--set", "trainer.limit_train_batches=1", "--set", "data.batch_size=4",
            "--set", "trainer.limit_val_batches=0", "--quiet", *NARROW_FC]


def fingerprints(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def trained_once(prepared, out: Path) -> Path:
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", out, *ONE_STEP)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_a_new_run_over_an_existing_one_is_refused_and_changes_nothing(prepared, tmp_path):
    out = trained_once(prepared, tmp_path / "run")
    before = fingerprints(out)
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", out, *ONE_STEP)
    assert result.returncode == 2
    message = result.stderr.strip()
    assert message.count("\n") == 0 and "already holds a run" in message, message
    assert f"--resume {out}" in message and "--overwrite" in message
    assert fingerprints(out) == before
    dry = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", out, "--dry-run", *ONE_STEP)
    assert dry.returncode == 2 and "already holds a run" in dry.stderr  # the dry run refuses what train would

    # --overwrite replaces the run: its checkpoints and records are the new run's, a stray file stays
    (out / "notes.txt").write_text("mine")
    (out / "checkpoints" / "step-00000009.ckpt").write_bytes(b"an older copy")
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", out, "--overwrite",
                            *ONE_STEP, "--set", "optim.lr=0.001")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]
    assert "lr: 0.001" in (out / "recipe.yaml").read_text()
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["train/loss"] for r in rows if r.get("train/loss")] != [] and len([r for r in rows
                                                                            if r.get("train/loss")]) == 1
    assert {r["lr-SGD/weights"] for r in rows if r.get("lr-SGD/weights")} == {"0.001"}  # none of the old run's
    assert (out / "notes.txt").read_text() == "mine"


HOLD_THE_RUN = """
import sys, time
from pathlib import Path
from alexnet_cli.training.run_dir import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(300)
"""


def test_a_run_folder_in_use_is_refused_naming_its_holder_and_freed_when_the_holder_dies(prepared, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_RUN, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        before = fingerprints(out)
        result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", out, *ONE_STEP)
        message = result.stderr.strip()
        assert result.returncode == 2 and message.count("\n") == 0, message
        assert f"using run {out}" in message and f"pid {holder.pid} on {socket.gethostname()}" in message
        assert fingerprints(out) == before
    finally:
        holder.kill()
        holder.wait()
    with run_lock(out):  # the kernel let go of the killed holder's lock
        pass


def test_overwrite_through_a_linked_checkpoints_folder_replaces_the_checkpoints_and_keeps_the_link(prepared, tmp_path):
    scratch, out = tmp_path / "scratch", tmp_path / "run"
    scratch.mkdir()
    out.mkdir()
    (out / "checkpoints").symlink_to(scratch)  # checkpoints on a cluster's scratch space
    for name in ("last.ckpt", "best.ckpt", "step-00000009.ckpt"):
        (scratch / name).write_bytes(b"the replaced run's")
    (scratch / "notes.txt").write_text("mine")
    (scratch / "a-checkpoint-of-mine.ckpt").write_bytes(b"not the run's")  # no name a run writes: it stays
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", out, "--overwrite",
                            *ONE_STEP)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "checkpoints").is_symlink() and (out / "checkpoints").resolve() == scratch
    assert sorted(p.name for p in scratch.iterdir()) == ["a-checkpoint-of-mine.ckpt", "last.ckpt", "notes.txt"]
    assert (scratch / "a-checkpoint-of-mine.ckpt").read_bytes() == b"not the run's"
    assert torch.load(scratch / "last.ckpt", weights_only=True, mmap=True)["global_step"] == 1


def test_overwrite_that_cannot_remove_a_checkpoint_stops_naming_it(prepared, tmp_path):
    out = tmp_path / "run"
    stuck = out / "checkpoints" / "last.ckpt"
    (stuck / "inside").mkdir(parents=True)  # a folder: unlink fails, as on a read-only or busy file system
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", out, "--overwrite",
                            *ONE_STEP)
    message = result.stderr.strip()
    assert result.returncode == 2 and message.count("\n") == 0, message
    assert f"--overwrite: cannot remove {stuck}" in message
    assert (stuck / "inside").is_dir() and not (out / "metrics.csv").exists()


def test_a_folder_without_checkpoints_of_a_run_is_no_run_to_protect(prepared, tmp_path):
    out = tmp_path / "requeued"
    (out / "checkpoints").mkdir(parents=True)  # a job requeued before its first save
    (out / "checkpoints" / "a-checkpoint-of-mine.ckpt").write_bytes(b"not a run's")
    (out / "recipe.yaml").write_text("description: from the first attempt\n")
    trained_once(prepared, out)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "checkpoints" / "a-checkpoint-of-mine.ckpt").read_bytes() == b"not a run's"


def test_out_naming_a_file_is_refused(prepared, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", target, *ONE_STEP)
    assert result.returncode == 2 and "is a file" in result.stderr and str(target) in result.stderr
    assert target.read_text() == "keep me"


def test_a_resume_that_fails_to_load_keeps_the_runs_recipe(prepared, tmp_path):
    out = trained_once(prepared, tmp_path / "run")
    checkpoint = out / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    state["state_dict"].pop(next(iter(state["state_dict"])))  # a weight gone: Lightning's strict load fails
    torch.save(state, checkpoint)
    recipe_before, record_before = (out / "recipe.yaml").read_bytes(), (out / "run.json").read_bytes()
    assert json.loads(record_before)["finished"]
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--resume", out, *ONE_STEP,
                            "--set", "trainer.max_epochs=2", "--set", "optim.lr=0.5")
    assert result.returncode == 1
    assert (out / "recipe.yaml").read_bytes() == recipe_before
    assert (out / "run.json").read_bytes() == record_before  # still finished, its step and img/s kept
    assert os.path.getsize(checkpoint) > 0


def test_a_resume_into_another_folder_starts_a_run_there_and_never_writes_over_one(prepared, tmp_path):
    source, other = trained_once(prepared, tmp_path / "a"), trained_once(prepared, tmp_path / "b")
    source_before, other_before = fingerprints(source), fingerprints(other)
    more = [*ONE_STEP, "--set", "trainer.max_epochs=2"]
    refused = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--resume", source, "--out", other,
                             *more)
    assert refused.returncode == 2 and "already holds a run" in refused.stderr and "--overwrite" in refused.stderr
    dry = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--resume", source, "--out", other,
                         "--dry-run", *more)
    assert dry.returncode == 2 and "already holds a run" in dry.stderr
    assert fingerprints(other) == other_before and fingerprints(source) == source_before
    # Into a new folder: the run goes on there (its metrics.csv starts with the source's rows), the source untouched.
    continued = tmp_path / "c"
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--resume", source, "--out",
                            continued, *more)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(continued / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)["global_step"] == 2
    with open(continued / "metrics.csv") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss")]
    assert steps == [0, 1] and json.loads((continued / "run.json").read_text())["finished"]
    assert fingerprints(source) == source_before
    # --overwrite replaces the other run with the continued one.
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--resume", source, "--out", other,
                            "--overwrite", *more)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(other / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)["global_step"] == 2


def test_a_checkpoint_outside_a_run_folder_resumes_only_into_a_named_out(prepared, tmp_path):
    source = trained_once(prepared, tmp_path / "a")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    loose = downloads / "x.ckpt"
    loose.write_bytes((source / "checkpoints" / "last.ckpt").read_bytes())
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--resume", loose, *ONE_STEP,
                            "--set", "trainer.max_epochs=2")
    message = result.stderr.strip()
    assert result.returncode == 2 and message.count("\n") == 0 and "give --out RUN" in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "downloads"]  # nothing written beside it
    assert sorted(p.name for p in downloads.iterdir()) == ["x.ckpt"]
    # With --out it continues there, and without --recipe with the recipe the checkpoint recorded.
    result = invoke_alexnet("train", "--data", prepared, "--resume", loose, "--out", tmp_path / "c", "--quiet",
                            "--set", "trainer.max_epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trainer.max_epochs: 1 → 2" in " ".join(result.stderr.split())
    assert torch.load(tmp_path / "c" / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)["global_step"] == 2
