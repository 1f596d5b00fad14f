"""Every output a command will write is checked before its work starts: hours of evaluation or training must
never end in a failed write."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import invoke_alexnet, one_line_error

NOBODY = 65534


@pytest.mark.parametrize("arguments", [
    ["train", "--recipe", "cpu-demo", "--data", "DATA", "--out", "TMP/run", "--set", "data.batch_size=4",
     "--set", "trainer.max_steps=1", "--json", "TMP"],
    ["eval", "--checkpoint", "TMP/c.ckpt", "--data", "DATA", "--json", "TMP"],
    ["eval", "--checkpoint", "TMP/c.ckpt", "--data", "DATA", "--predictions", "TMP"],
    ["predict", "--checkpoint", "TMP/c.ckpt", "TMP/x.jpg", "--json", "TMP"],
    ["prepare-imagenet", "--demo", "--out", "TMP/d", "--json", "TMP"],
    ["benchmark", "model", "--batches", "1", "--warmup", "0", "--json", "TMP"],
    ["benchmark", "data", "--data", "DATA", "--json", "TMP"],
    ["benchmark", "train", "--recipe", "cpu-demo", "--synthetic", "--json", "TMP"],
    ["benchmark", "soak", "--data", "DATA", "--json", "TMP"],
    ["benchmark", "comms", "--json", "TMP"],
], ids=lambda arguments: " ".join(a for a in arguments[:2] if not a.startswith("-")))
def test_an_output_file_that_is_a_folder_is_refused_before_any_work(arguments, prepared, tmp_path):
    option = arguments[-2]
    arguments = [str(tmp_path) if a == "TMP" else a.replace("TMP", str(tmp_path)).replace("DATA", str(prepared))
                 for a in arguments]
    before = sorted(tmp_path.iterdir())
    result = invoke_alexnet(*arguments)
    one_line_error(result, f"{option} {tmp_path} is a folder: name a file to write")
    assert result.stdout == "" and sorted(tmp_path.iterdir()) == before  # nothing trained, measured or written


def invoke_as_nobody(*arguments: str):
    """The command in this process as user nobody: root writes through any mode bits, so a read-only folder
    needs another user. It runs as root first with the output under a file, which fails as early: the modules
    the command imports on the way are loaded then, for the interpreter's own library may be closed to nobody."""
    blocked = Path(tempfile.mkdtemp()) / "a-file"
    blocked.write_text("")
    invoke_alexnet(*arguments[:-1], blocked / "x")
    shutil.rmtree(blocked.parent)
    with unprivileged():
        return invoke_alexnet(*arguments)


@contextmanager
def unprivileged() -> Iterator[None]:
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def read_only_folder() -> Iterator[Path]:
    """A folder nobody may enter but not write in (pytest's tmp_path is closed to other users)."""
    outer = Path(tempfile.mkdtemp(prefix="alexnet-read-only-"))
    outer.chmod(0o755)
    folder = outer / "read-only"
    folder.mkdir(mode=0o555)
    yield folder
    shutil.rmtree(outer)


@pytest.mark.parametrize("arguments", [
    ["train", "--recipe", "cpu-demo", "--data", "d", "--out", "RO/run"],
    ["prepare-imagenet", "--demo", "--out", "RO/data"],
    ["report", "run", "--out", "RO/report"],
    ["viz-filters", "--checkpoint", "c.ckpt", "--out", "RO/filters.png"],
    ["eval", "--checkpoint", "c.ckpt", "--data", "d", "--json", "RO/eval.json"],
], ids=lambda arguments: arguments[0])
def test_an_output_in_a_read_only_folder_is_refused_before_any_work(arguments, read_only_folder):
    option, target = arguments[-2], arguments[-1].replace("RO", str(read_only_folder))
    result = invoke_as_nobody(*arguments[:-1], target)
    one_line_error(result, f"{option} {target}: cannot write in {read_only_folder} (Permission denied)")


def test_more_devices_than_the_machine_has_are_refused_naming_the_count(prepared, tmp_path):
    cores = len(os.sched_getaffinity(0))
    result = invoke_alexnet("eval", "--weights", tmp_path / "w.pth", "--data", prepared, "--devices", 64)
    one_line_error(result, f"--devices 64: this machine has {cores} CPU core(s) for this process; "
                           f"give at most {2 * cores}")  # two gloo ranks per core still finish (hybrid: 4 on 2)
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", tmp_path / "run",
                            "--set", "trainer.accelerator=cpu", "--set", "trainer.devices=64")
    one_line_error(result, f"trainer.devices 64: this machine has {cores} CPU core(s)")
    assert not (tmp_path / "run").exists()


def test_an_output_under_a_folder_the_user_cannot_enter_is_refused_in_one_line(read_only_folder):
    if os.geteuid() != 0:
        pytest.skip("needs root to make a folder that this test's user cannot enter")
    closed = read_only_folder.parent / "closed"
    closed.mkdir(mode=0o700)  # root's, closed to nobody
    target = closed / "inner" / "report"
    result = invoke_as_nobody("report", "run", "--out", target)
    one_line_error(result, f"--out {target}: cannot reach {target} (Permission denied)")
