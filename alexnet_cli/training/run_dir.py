"""The run directory's own files: refusing to overwrite a run, --overwrite, and run.json."""

import csv
import json
from collections.abc import Callable
from pathlib import Path

from alexnet_cli.atomic import write_text_atomic
from alexnet_cli.errors import AlexnetError
from alexnet_cli.locks import ExclusiveLock
from alexnet_cli.training.checkpoint_io import remove_unfinished

# What a run writes at its top level; --overwrite removes these and the run's checkpoints, nothing else.
_RUN_FILES = ("metrics.csv", "run.json", "eval.json", "recipe.yaml", "hparams.yaml")
# The checkpoints a run writes in RUN/checkpoints (training/trainer.checkpoint_callbacks): other files there,
# a user's own checkpoint included, are not the run's.
_RUN_CHECKPOINTS = ("last.ckpt", "best.ckpt", "step-*.ckpt")


def run_checkpoints(folder: Path) -> list[Path]:
    """The checkpoints a run wrote in ``folder`` (RUN/checkpoints, or the folder a link there names)."""
    return sorted({path for pattern in _RUN_CHECKPOINTS for path in folder.glob(pattern)})


def check_run_dir(run_dir: Path, overwrite: bool) -> bool:
    """Refuse to start a run where another already is (it would replace its checkpoints and metrics);
    True when ``overwrite`` lets it. A folder with no checkpoint of a run yet (a job requeued before its
    first save) holds nothing to lose."""
    if run_dir.exists() and not run_dir.is_dir():
        raise AlexnetError(f"--out {run_dir} is a file: name a folder for the run")
    held = next(iter(run_checkpoints(run_dir / "checkpoints")), None)
    if held is None:
        return False
    if not overwrite:
        raise AlexnetError(f"--out {run_dir} already holds a run ({held}): continue it with --resume {run_dir}, "
                           "choose another --out, or add --overwrite to replace it")
    return True


def run_lock(run_dir: Path) -> ExclusiveLock:
    """One 'alexnet train' per run directory at a time (a requeued job racing the old one, two --resume RUN):
    two would log every row of metrics.csv twice and save over each other's checkpoints."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return ExclusiveLock(run_dir / ".lock", f"another alexnet train is using run {run_dir}")


def remove_run_files(run_dir: Path) -> None:
    """--overwrite: the earlier run's checkpoints and records (and only those) go before the new run starts.

    RUN/checkpoints may be a link (to scratch space, on clusters): the run's checkpoints in the folder it names
    go, and the link and everything else there stay. A file that cannot be removed stops the run: a new run
    beside an old checkpoint would be continued from it by the next --resume.
    """
    for path in [*run_checkpoints(run_dir / "checkpoints"), *(run_dir / name for name in _RUN_FILES)]:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise AlexnetError(f"--overwrite: cannot remove {path}: {exc.strerror}; remove it by hand or choose "
                               "another --out") from None


def drop_metrics_past(run_dir: Path, step: int) -> int:
    """On resume: drop the metrics.csv rows of steps ``step`` and later, which the resumed run logs again
    (a kill -9, or a save that failed, leaves rows newer than the newest checkpoint); how many went.

    A row's ``step`` is the index of the batch it was logged at; a checkpoint's ``global_step`` counts the
    batches trained before it, so its resumed run logs from that index on.
    """
    path = run_dir / "metrics.csv"
    lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
    header = next(csv.reader(lines[:1]), [])
    if "step" not in header:
        return 0
    column = header.index("step")

    def logged_before(line: str) -> bool:
        row = next(csv.reader([line]), [])
        try:
            return float(row[column]) < step
        except (IndexError, ValueError):
            return True  # not a row this rule can place: kept

    kept = [lines[0], *(line for line in lines[1:] if logged_before(line))]
    if len(kept) < len(lines):
        write_text_atomic(path, "".join(kept))
    return len(lines) - len(kept)


def copy_metrics_before(source_dir: Path | None, run_dir: Path, step: int) -> None:
    """A run continued in a new folder (--resume A --out B): B's metrics.csv starts with A's rows of the steps
    the checkpoint had trained (up to its ``step``), so that B's curves are the whole run's. A metrics.csv already
    in B (an earlier try at this resume) is kept; in both, the rows past that step go (the run logs them again)."""
    source, target = (source_dir / "metrics.csv" if source_dir else None), run_dir / "metrics.csv"
    if not target.exists() and source is not None and source.is_file():
        write_text_atomic(target, source.read_text())
    drop_metrics_past(run_dir, step)


def read_run_facts(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def write_run_facts(run_dir: Path, facts: dict) -> None:
    """RUN_DIR/run.json: what 'alexnet report' needs beside metrics.csv (finished or not, wall time, data)."""
    write_text_atomic(run_dir / "run.json", json.dumps(facts, indent=1) + "\n")


def start_run_directory(run_dir: Path, facts: dict, *, recipe_text: str, resumed: tuple[Path | None, int] | None,
                        in_place: bool, replaces_run: bool, rank_zero: bool, say: Callable[[str], None]) -> dict:
    """Clear what --overwrite replaces and what a killed save left; a new run writes recipe.yaml and run.json
    (unfinished) now, a resumed one when its training starts (``RunRecord``, ``WriteOnTrainStart``).
    ``resumed``: (the checkpoint's run folder, None where it was in none; its step), ``in_place`` when that folder
    is ``run_dir``. Returns the run's facts so far, ``facts`` and its seconds: a resumed run adds up its segments'
    seconds, also when it continues in another folder (whose metrics.csv then starts with the rows the checkpoint
    had trained); one that continues in place drops the rows past its checkpoint, which it logs again (saying
    so)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    resumed_dir, step = resumed if resumed is not None else (None, 0)
    if rank_zero:
        if replaces_run:
            remove_run_files(run_dir)
        remove_unfinished(run_dir / "checkpoints")
        if in_place and (dropped := drop_metrics_past(run_dir, step)):
            say(f"dropped {dropped} metrics.csv row(s) past the checkpoint's step {step}: the resumed run logs those "
                "steps again")
        elif resumed is not None and not in_place:
            copy_metrics_before(resumed_dir, run_dir, step)
    if resumed is None:
        write_text_atomic(run_dir / "recipe.yaml", recipe_text)
    earlier = read_run_facts(resumed_dir or run_dir) if resumed is not None else {}
    facts = {**facts, "finished": False, "seconds": float(earlier.get("seconds", 0.0))}
    if rank_zero and resumed is None:
        write_run_facts(run_dir, facts)
    return facts
