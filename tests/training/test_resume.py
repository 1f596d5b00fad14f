"""Training that survives: kill -9, a kill while a checkpoint is written, SIGTERM, SIGUSR1, Ctrl-C, NaN.

Each test runs the real ``alexnet train`` (in its own process where that process is killed or signalled) and
compares the weights of an interrupted-and-resumed run with those of an uninterrupted run of the same seed.
"""

import csv
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import NARROW_FC, invoke_alexnet, scratch_dir

# 23 training images in batches of 4: 5 steps per epoch, 10 in all; last.ckpt every 3 steps and at epoch ends
# (steps 3, 5, 6, 9, 10).
RUN = ["--recipe", "cpu-demo", "--quiet", "--set", "trainer.max_epochs=2", "--set", "data.batch_size=4",
       "--set", "checkpoint.every_n_train_steps=3", "--set", "checkpoint.every_n_epochs=1",
       "--set", "trainer.limit_val_batches=0", *NARROW_FC]


def start_training(prepared: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "alexnet_cli", "train", "--data", str(prepared), "--out", str(out),
                             *RUN, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, timeout: float = 300, poll: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training ended (rc {process.returncode}) first: {process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out")
        time.sleep(poll)


def resume(prepared: Path, out: Path) -> subprocess.CompletedProcess:
    result = invoke_alexnet("train", "--data", prepared, "--out", out, *RUN, "--resume", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]


def saved_step(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True, map_location="cpu", mmap=True)["global_step"]


@pytest.fixture(scope="module")
def uninterrupted_run(prepared, tmp_path_factory) -> Path:
    with scratch_dir(tmp_path_factory, "uninterrupted") as out:
        result = invoke_alexnet("train", "--data", prepared, "--out", out, *RUN)
        assert result.returncode == 0, result.stderr[-3000:]
        assert saved_step(out / "checkpoints" / "last.ckpt") == 10
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]  # keep_last 0: no copies
        yield out


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_run) -> dict[str, torch.Tensor]:
    return weights(uninterrupted_run / "checkpoints" / "last.ckpt")


def test_kill_9_mid_epoch_then_resume_trains_exactly_the_uninterrupted_run(prepared, tmp_path, uninterrupted):
    out = tmp_path / "run"
    process = start_training(prepared, out)
    wait_for(lambda: (out / "checkpoints" / "last.ckpt").exists(), process)
    process.kill()
    process.wait()
    assert saved_step(out / "checkpoints" / "last.ckpt") in (3, 5), "killed in epoch 0, after its step-3 save"
    resume(prepared, out)
    assert saved_step(out / "checkpoints" / "last.ckpt") == 10
    torch.testing.assert_close(weights(out / "checkpoints" / "last.ckpt"), uninterrupted, rtol=1e-6, atol=1e-7)


def test_a_checkpoint_with_the_old_single_group_optimizer_state_resumes_exactly(prepared, tmp_path, uninterrupted):
    from alexnet_cli.training.optimizer import ordered_names

    out = tmp_path / "run"
    result = invoke_alexnet("train", "--data", prepared, "--out", out, *RUN, "--set", "trainer.max_steps=5")
    assert result.returncode == 0, result.stderr[-2000:]
    last = out / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    names = [key.removeprefix("model.") for key in checkpoint["state_dict"]]
    [state] = checkpoint["optimizer_states"]
    order = ordered_names(names)  # the two-group layout's order; merge it back into one group in model order
    by_name = {order[index]: entry for index, entry in state["state"].items()}
    group = {**state["param_groups"][0], "params": list(range(len(names)))}
    state.update(state={names.index(n): e for n, e in by_name.items()}, param_groups=[group])
    torch.save(checkpoint, last)
    resume(prepared, out)
    assert saved_step(last) == 10
    torch.testing.assert_close(weights(last), uninterrupted, rtol=1e-6, atol=1e-7)


def test_kill_during_a_checkpoint_write_keeps_the_previous_one(prepared, tmp_path, uninterrupted):
    out = tmp_path / "run"
    checkpoints = out / "checkpoints"
    process = start_training(prepared, out)
    wait_for(lambda: (checkpoints / "last.ckpt").exists() and any(checkpoints.glob(".*.tmp")), process)
    process.kill()
    process.wait()
    unfinished = list(checkpoints.glob(".*.tmp"))
    assert unfinished, "the kill landed while a checkpoint was being written"
    good = saved_step(checkpoints / "last.ckpt")  # whole and loadable
    assert good in (3, 5, 6)
    resume(prepared, out)
    assert not list(checkpoints.glob(".*.tmp")), "the resumed run removed the unfinished write"
    torch.testing.assert_close(weights(checkpoints / "last.ckpt"), uninterrupted, rtol=1e-6, atol=1e-7)


def test_sigterm_saves_exits_143_with_the_resume_command_and_resumes_exactly(prepared, tmp_path, uninterrupted):
    out = tmp_path / "run"
    process = start_training(prepared, out)
    wait_for(lambda: (out / "checkpoints" / "last.ckpt").exists(), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr[-2000:]
    message = [line for line in stderr.splitlines() if line.startswith("stopped:")]
    assert len(message) == 1 and "SIGTERM received: saved" in message[0]
    assert f"--resume {out}" in message[0] and "Traceback" not in stderr
    stopped_at = saved_step(out / "checkpoints" / "last.ckpt")
    assert 3 <= stopped_at < 10 and f"at step {stopped_at};" in message[0]
    stopped = json.loads((out / "run.json").read_text())  # the stopped segment's time and step are kept
    assert not stopped["finished"] and stopped["seconds"] > 0 and stopped["global_step"] == stopped_at
    resume(prepared, out)
    torch.testing.assert_close(weights(out / "checkpoints" / "last.ckpt"), uninterrupted, rtol=1e-6, atol=1e-7)
    finished = json.loads((out / "run.json").read_text())
    assert finished["finished"] and finished["global_step"] == 10 and finished["seconds"] > stopped["seconds"]


@pytest.mark.parametrize("signum, exit_code, words", [(signal.SIGUSR1, 138, "SIGUSR1 received"),
                                                       (signal.SIGINT, 130, "SIGINT received")])
def test_sigusr1_and_ctrl_c_save_and_stop_cleanly(prepared, tmp_path, signum, exit_code, words):
    out = tmp_path / "run"
    process = start_training(prepared, out)
    wait_for(lambda: (out / "checkpoints" / "last.ckpt").exists(), process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == exit_code, stderr[-2000:]
    assert words in stderr and "Traceback" not in stderr
    assert 3 <= saved_step(out / "checkpoints" / "last.ckpt") < 10


def test_a_second_ctrl_c_stops_at_once_with_130_and_names_the_checkpoint_on_disk(prepared, tmp_path):
    out = tmp_path / "run"
    # batches of 16 at the paper's full width: steps and saves long enough (~1 s here) that the second
    # Ctrl-C lands inside one
    process = start_training(prepared, out, "--set", "data.batch_size=16", "--set", "trainer.max_epochs=40",
                             "--set", "model.fc_width=4096")
    wait_for(lambda: (out / "checkpoints" / "last.ckpt").exists(), process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "graceful shutdown" not in stderr
    step = saved_step(out / "checkpoints" / "last.ckpt")
    assert f"second Ctrl-C: stopped at once, mid-step; the newest checkpoint is {out / 'checkpoints'}" in stderr
    assert f"(step {step}); resume with: alexnet train" in stderr


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(prepared, tmp_path):
    out = tmp_path / "run"
    result = invoke_alexnet("train", "--data", prepared, "--out", out, *RUN, "--set", "optim.lr=1e12",
                            "--set", "checkpoint.every_n_train_steps=1")
    assert result.returncode == 1, result.stderr[-2000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("stopped:")]
    assert "train/loss is nan at step" in line or "train/loss is inf at step" in line
    bad_step = int(line.split(" at step ")[1].split()[0])
    last = out / "checkpoints" / "last.ckpt"
    assert saved_step(last) == bad_step, "the checkpoint of the step before the bad loss is kept"
    assert all(torch.isfinite(w).all() for w in weights(last).values() if w.is_floating_point())


def test_timed_checkpoints_look_at_the_clock_only_at_logging_steps(prepared, tmp_path):
    # Lightning's own time check broadcasts rank 0's clock every step; ours only at log_every_n_steps.
    out = tmp_path / "run"
    result = invoke_alexnet("train", "--data", prepared, "--out", out, *RUN,
                            "--set", "checkpoint.every_n_train_steps=null",
                            "--set", "checkpoint.every_minutes=0.00001", "--set", "checkpoint.keep_last=10",
                            "--set", "trainer.log_every_n_steps=3")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(saved_step(p) for p in (out / "checkpoints").glob("step-*.ckpt")) == [3, 6, 9]


def test_steps_between_a_nan_and_the_stop_never_apply_it(prepared, tmp_path):
    # The NaN record is read every log_every_n_steps steps; the steps in between are skipped on the device,
    # so every checkpoint written meanwhile holds finite weights.
    out = tmp_path / "run"
    result = invoke_alexnet("train", "--data", prepared, "--out", out, *RUN, "--set", "optim.lr=1e12",
                            "--set", "checkpoint.every_n_train_steps=1", "--set", "checkpoint.keep_last=10",
                            "--set", "trainer.log_every_n_steps=4")
    assert result.returncode == 1, result.stderr[-2000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("stopped:")]
    bad_step = int(line.split(" at step ")[1].split()[0])
    saved = sorted((out / "checkpoints").glob("step-*.ckpt"))
    assert any(saved_step(path) > bad_step for path in saved), "checkpoints were written after the bad step"
    for path in saved:
        assert all(torch.isfinite(w).all() for w in weights(path).values() if w.is_floating_point()), path


@pytest.mark.parametrize("change, words", [
    ("model.arch=owt", "holds arch 'paper'; the recipe says 'owt'"),
    ("optim.schedule=step", "optim.schedule='cosine'; the recipe says 'step'"),
    ("model.fc_width=null", "model.fc_width=64; the recipe says None (4096), which a resumed run cannot change")])
def test_resume_refuses_what_cannot_change(prepared, uninterrupted_run, change, words):
    from alexnet_cli.data.dataset_files import read_classes
    from alexnet_cli.errors import AlexnetError
    from alexnet_cli.recipes import load_recipe
    from alexnet_cli.training.resume import check_resumable

    recipe = load_recipe("cpu-demo", ["model.fc_width=64", change])  # the run's width: only `change` differs
    with pytest.raises(AlexnetError, match=re.escape(words)):
        check_resumable(uninterrupted_run / "checkpoints" / "last.ckpt", recipe, read_classes(prepared))


def test_a_run_saved_with_the_archs_own_width_resumes_only_at_that_width(tmp_path):
    """model.fc_width: null is the arch's own (4096 for paper): resuming it at 128 would not load its weights."""
    import numpy as np

    from alexnet_cli.data.dataset_files import ClassInfo
    from alexnet_cli.data.normalization import Normalization
    from alexnet_cli.errors import AlexnetError
    from alexnet_cli.models.checkpoint_meta import CheckpointMeta
    from alexnet_cli.recipes import load_recipe
    from alexnet_cli.training.resume import check_resumable

    classes = [ClassInfo(0, "n01440764", "tench"), ClassInfo(1, "n01443537", "goldfish")]
    saved = load_recipe("cpu-demo")
    meta = CheckpointMeta.of_run(saved.model, saved.to_dict(), num_classes=2, classes=classes, crop=227,
                                 resize_size=256, normalization=Normalization(np.zeros(3), np.ones(3)), version="0.1.0")
    path = tmp_path / "last.ckpt"
    torch.save({"alexnet_cli": meta.to_dict(), "state_dict": {}, "optimizer_states": [], "loops": {},
                "callbacks": {}}, path)
    with pytest.raises(AlexnetError, match=re.escape("model.fc_width=None (4096); the recipe says 128")):
        check_resumable(path, load_recipe("cpu-demo", ["model.fc_width=128"]), classes)
    assert check_resumable(path, load_recipe("cpu-demo", ["model.fc_width=4096"]), classes).changes == [
        "model.fc_width: None → 4096"]  # the same network, said as a change


@pytest.mark.parametrize("removed", ["state_dict", "callbacks", "loops", "optimizer_states"])
def test_resume_refuses_a_checkpoint_without_its_training_state(prepared, uninterrupted_run, tmp_path, removed):
    """Lightning would resume without "callbacks" (so without ResumeRepair) or "loops" (from step 0)."""
    state = torch.load(uninterrupted_run / "checkpoints" / "last.ckpt", weights_only=True)
    del state[removed]
    stripped = tmp_path / "stripped.ckpt"
    torch.save(state, stripped)
    result = invoke_alexnet("train", "--data", prepared, *RUN, "--out", tmp_path / "run", "--resume", stripped)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert f"{stripped} holds no {removed}: saved weights-only or edited, it cannot be resumed" in result.stderr


def test_a_resume_drops_the_metrics_rows_logged_after_its_checkpoint_and_says_so(prepared, uninterrupted_run,
                                                                                  tmp_path):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted_run, out)
    with open(out / "metrics.csv") as metrics:
        header = next(csv.reader(metrics))
    lost = [{"epoch": "2", "step": str(step), "train/loss": "99.0"} for step in (10, 11)]  # logged, then kill -9
    with open(out / "metrics.csv", "a", newline="") as metrics:
        csv.DictWriter(metrics, header, restval="").writerows(lost)
    result = invoke_alexnet("train", "--data", prepared, "--out", out, *RUN, "--set", "trainer.max_epochs=3",
                            "--resume", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dropped 2 metrics.csv row(s) past the checkpoint's step 10" in " ".join(result.stderr.split())
    with open(out / "metrics.csv") as metrics:
        losses = [row for row in csv.DictReader(metrics) if row.get("train/loss")]
    assert [int(row["step"]) for row in losses] == list(range(15)), "each step logged once"
    assert "99.0" not in {row["train/loss"] for row in losses}


def test_a_resume_with_nothing_left_to_train_says_so_and_changes_nothing(prepared, uninterrupted_run):
    before = {p: p.read_bytes() for p in uninterrupted_run.rglob("*") if p.is_file()}
    done = uninterrupted_run
    result = invoke_alexnet("train", "--data", prepared, "--out", done, *RUN, "--resume", done)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{uninterrupted_run} is already done" in result.stdout and "trainer.max_epochs=2" in result.stdout
    assert {p: p.read_bytes() for p in uninterrupted_run.rglob("*") if p.is_file()} == before


def test_resume_with_more_epochs_and_a_new_lr_reports_and_applies_them(prepared, uninterrupted_run, tmp_path):
    out = tmp_path / "longer"
    result = invoke_alexnet("train", "--data", prepared, *RUN, "--out", out, "--resume", uninterrupted_run,
                            "--set", "trainer.max_epochs=3", "--set", "optim.lr=1e-3",
                            "--set", "checkpoint.keep_last=1", "--set", "optim.log_grad_norm=true")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "optim.lr: 0.003 → 0.001" in result.stderr and "trainer.max_epochs: 2 → 3" in result.stderr
    assert saved_step(out / "checkpoints" / "last.ckpt") == 15
    # saved at steps 12 and 15: only the newest copy is kept
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt", "step-00000015.ckpt"]
    with open(out / "metrics.csv") as metrics:
        rows = [row for row in csv.DictReader(metrics) if row.get("lr-SGD/weights")]
    # the third epoch at the new lr's cosine over the new three epochs, as a run planned so from the start
    assert float(rows[-1]["lr-SGD/weights"]) == pytest.approx(cosine(1e-3, 2, 3))
    with open(out / "metrics.csv") as metrics:
        norms = [float(row["train/grad_norm"]) for row in csv.DictReader(metrics) if row.get("train/grad_norm")]
    assert len(norms) == 5 and all(0 < norm < float("inf") for norm in norms), "one gradient norm per resumed step"


def cosine(base: float, epoch: int, epochs: int, floor: float = 1e-5) -> float:
    """CosineAnnealingLR's lr at ``epoch`` of ``epochs`` (cpu-demo's optim.min_lr as the floor)."""
    return floor + (base - floor) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def test_extending_a_cosine_run_replans_its_schedule_over_the_new_length_and_says_so(prepared, uninterrupted_run,
                                                                                     tmp_path):
    """Without --recipe: the run's own recipe.yaml, with --set's change listed. The added epochs get the lr a
    4-epoch plan gives them, not the 2-epoch plan's floor."""
    out = tmp_path / "longer"
    result = invoke_alexnet("train", "--data", prepared, "--out", out, "--resume", uninterrupted_run, "--quiet",
                            "--set", "trainer.max_epochs=4")
    assert result.returncode == 0, result.stderr[-2000:]
    said = " ".join(result.stderr.split())
    assert "recipe changes: trainer.max_epochs: 2 → 4" in said
    assert f"cosine schedule re-planned over 4 epochs (was 2): epoch 3 resumes at lr {cosine(0.003, 2, 4):.3g}" in said
    with open(out / "metrics.csv") as metrics:
        rows = [row for row in csv.DictReader(metrics) if row.get("lr-SGD/weights")]
    lrs = {int(row["step"]) // 5: float(row["lr-SGD/weights"]) for row in rows}  # 5 steps an epoch
    assert sorted(lrs) == [0, 1, 2, 3], rows
    assert lrs[0] == pytest.approx(0.003) and lrs[1] == pytest.approx(cosine(0.003, 1, 2))  # the run as it was
    assert lrs[2] == pytest.approx(cosine(0.003, 2, 4)) and lrs[3] == pytest.approx(cosine(0.003, 3, 4))


def test_a_resume_at_an_epoch_end_keeps_the_plateau_schedule_of_the_uninterrupted_run(prepared, tmp_path):
    """Lightning does not step ReduceLROnPlateau for the epoch a run resumed in; ResumeRepair catches up."""
    from alexnet_cli.recipes import load_recipe
    from alexnet_cli.training.run import run

    # decay_biases as the paper recipes set it (cpu-demo's default decays them): a resume must keep it
    settings = ["data.batch_size=8", "optim.schedule=plateau", "optim.plateau_patience=0", "trainer.max_epochs=2",
                "checkpoint.every_n_epochs=1", "model.fc_width=64", "optim.decay_biases=false"]
    straight = run(load_recipe("cpu-demo", settings), prepared, out=tmp_path / "straight", quiet=True)
    run(load_recipe("cpu-demo", [*settings, "trainer.max_epochs=1"]), prepared, out=tmp_path / "resumed", quiet=True)
    resumed = run(load_recipe("cpu-demo", settings), prepared, out=tmp_path / "resumed", quiet=True,
                  resume=tmp_path / "resumed")
    assert resumed.global_step == straight.global_step == 4
    one, other = (torch.load(r.last_checkpoint, weights_only=True) for r in (straight, resumed))
    plateau, resumed_plateau = one["lr_schedulers"][0], other["lr_schedulers"][0]
    assert plateau["last_epoch"] == 1, "stepped after epoch 0 (the last save precedes epoch 1's step)"
    for key in ("last_epoch", "best", "num_bad_epochs", "_last_lr"):
        assert resumed_plateau[key] == plateau[key], key
    torch.testing.assert_close(other["state_dict"], one["state_dict"], rtol=1e-6, atol=1e-7)
    weights, biases = other["optimizer_states"][0]["param_groups"]
    assert (weights["weight_decay"], biases["weight_decay"]) == (5e-4, 0.0), "the resumed epoch decayed the biases"


@pytest.mark.parametrize(("saved", "devices", "now"), [("towers", 2, "two-gpu"), ("towers", 4, "hybrid")])
def test_a_run_saved_when_the_towers_layouts_were_called_towers_resumes_under_their_names_unchanged(
        tmp_path, saved, devices, now):
    import numpy as np

    from alexnet_cli.data.dataset_files import ClassInfo
    from alexnet_cli.data.normalization import Normalization
    from alexnet_cli.models.checkpoint_meta import CheckpointMeta
    from alexnet_cli.recipes import load_recipe
    from alexnet_cli.training.resume import check_resumable

    classes = [ClassInfo(0, "n01440764", "tench"), ClassInfo(1, "n01443537", "goldfish")]
    recipe = load_recipe("two-gpu", [f"trainer.devices={devices}", f"trainer.strategy={now}", "optim.lr=0.02"])
    old = recipe.to_dict()
    old["trainer"] = {**old["trainer"], "strategy": saved}
    old["optim"] = {**old["optim"], "lr": 0.01}
    meta = CheckpointMeta.of_run(recipe.model, old, num_classes=2, classes=classes, crop=227, resize_size=256,
                                 normalization=Normalization(np.zeros(3), np.ones(3)), version="0.1.0")
    path = tmp_path / "last.ckpt"
    torch.save({"alexnet_cli": meta.to_dict(), "state_dict": {}, "optimizer_states": [], "loops": {},
                "callbacks": {}}, path)
    assert check_resumable(path, recipe, classes).changes == ["optim.lr: 0.01 → 0.02"]
    # another layout is still a change a resume reports
    other = load_recipe("two-gpu", [f"trainer.devices={devices}", "trainer.strategy=ddp", "optim.lr=0.02"])
    assert f"trainer.strategy: {now!r} → 'ddp'" in check_resumable(path, other, classes).changes
