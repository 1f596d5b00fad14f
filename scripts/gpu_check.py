"""The GPU check (issues 22 and 28): what a lent GPU must measure, in two calls of under 5 minutes each, ordered
by what the decisions need, with every finished figure on disk whatever second a call is stopped at.

    scripts/gpu-check.sh OUT [PHOTOS] [--call 2 | --steps a,b]   on a GPU machine (DALI through the wheels tool)
    scripts/gpu-check.sh --cpu-smoke OUT [PHOTOS]                 every step of both calls on the CPU, tiny

PHOTOS: a prepared dataset of real photos (the 1000 ImageNet samples, prepared); without it the demo's drawn
shapes stand in, and the report says so. The plan of both calls is printed first (``STEPS``). Each step runs in
a child forked from this process (the imports are paid once) under its own deadline, and is stopped with
everything it started when it passes it; OUT/gpu-check.json and OUT/gpu-check.md are rewritten after every
step, with the rows a stopped step had finished. Call 2 adds to call 1's report in the same OUT. Copy
gpu-check.json to docs/gpu/DATE-CARD-gpu-check.json: the next run's ``compare`` reads the newest such file.
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from alexnet_cli.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
CALL_SECONDS = 280  # a call's steps; with the start and the report, a call stays under 5 minutes


@dataclass(frozen=True)
class Step:
    name: str
    seconds: int  # its deadline on a GPU
    call: int
    what: str


STEPS = [
    Step("environment", 20, 1, "torch, cuDNN, DALI, Triton and the card"),
    Step("lrn", 40, 1, "both LRN layers' shapes at batch 128 in bf16, forward + backward, each eager "
                       "implementation: µs, GB/s of the bytes it moves (benchmark traffic's count), error"),
    Step("train-loop", 70, 1, "single-gpu end to end on real JPEGs with today's defaults, beside synthetic "
                              "batches: img/s, GPU busy, host time inside DALI's run()"),
    Step("train-loop-before", 45, 1, "the same loop with the reference LRN: the code before issue 22"),
    Step("dali", 50, 1, "the training pipeline alone at hw_decoder_load 0, 0.65 and 1, NVML's JPEG-engine use "
                        "(no training beside it: an upper bound)"),
    Step("profile", 25, 1, "device time per step by category, every kernel once"),
    Step("model", 30, 1, "the paper net's eager variants step by step (bench/speed.PAPER_MATRIX), and owt"),
    Step("gpu-tests", 120, 2, "pytest -m gpu: DALI's hand-off to torch, the Triton kernels, NaN and ±inf"),
    Step("lrn-compiled", 35, 2, "the closed form compiled by Inductor at both layers' shapes"),
    Step("model-compiled", 55, 2, "the matrix's compiled rows, with the graphs and breaks each compiled to"),
    Step("train-loop-switches", 45, 2, "the loop with compile, channels_last and split groups on"),
    Step("train-eval", 20, 2, "alexnet train for a few steps, then the ten-crop eval on the GPU"),
    Step("compare", 5, 2, "every figure against the newest docs/gpu/*-gpu-check.json of the same card"),
]
BY_NAME = {step.name: step for step in STEPS}
SMOKE_SECONDS = 60  # any one step on 2 CPU cores at the smoke run's sizes


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own prints the usage too
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def parse(argv: list[str]) -> argparse.Namespace:
    """The arguments, each refused in one line before anything runs."""
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--photos", type=Path, help="a prepared dataset of real photos (default: the demo's)")
    parser.add_argument("--call", type=int, choices=(1, 2), help="run that call of the plan (default: 1)")
    parser.add_argument("--steps", help="run these steps (comma-separated) in the plan's order instead")
    parser.add_argument("--seconds", default=str(CALL_SECONDS), help="this call's steps stop after this many seconds")
    parser.add_argument("--cpu-smoke", action="store_true", help="every step of both calls on the CPU, tiny")
    parser.add_argument("--deadlines", default="", help="other deadlines for some steps: name=seconds,... (a rerun "
                        "that gives a step the time an earlier call showed it needs)")
    args = parser.parse_args(argv)
    if not args.seconds.isdigit() or int(args.seconds) < 1:
        parser.error(f"GPU_CHECK_SECONDS / --seconds {args.seconds!r}: give a whole number of seconds, e.g. 280")
    args.seconds = int(args.seconds)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"OUT {args.out} is a file: give a folder for the report (new, or one a check wrote)")
    if args.photos is not None and not (args.photos / "classes.json").is_file():
        parser.error(f"PHOTOS {args.photos} is not a prepared dataset (no classes.json): prepare it with "
                     "'alexnet prepare-imagenet'")
    args.deadlines = _deadlines(parser, args.deadlines)
    if args.call and args.steps:
        parser.error("give --call or --steps, not both")
    if args.steps:
        unknown = [name for name in args.steps.split(",") if name not in BY_NAME]
        if unknown:
            parser.error(f"--steps: unknown {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    return args


def _deadlines(parser: argparse.ArgumentParser, text: str) -> dict[str, int]:
    deadlines = {}
    for item in filter(None, text.split(",")):
        name, _, seconds = item.partition("=")
        if name not in BY_NAME or not seconds.isdigit() or int(seconds) < 1:
            parser.error(f"--deadlines {item!r}: give step=seconds with a step of {', '.join(BY_NAME)}")
        deadlines[name] = int(seconds)
    return deadlines


def chosen_steps(args: argparse.Namespace) -> list[Step]:
    if args.cpu_smoke and not (args.call or args.steps):
        return list(STEPS)
    if args.steps:
        names = set(args.steps.split(","))
        return [step for step in STEPS if step.name in names]
    return [step for step in STEPS if step.call == (args.call or 1)]


def plan(args: argparse.Namespace, steps: list[Step]) -> str:
    """The two calls of the check as they will run, printed before anything runs."""
    command = f"scripts/gpu-check.sh {args.out}" + (f" {args.photos}" if args.photos else "")
    lines = [f"GPU check plan: two calls of ≤ {CALL_SECONDS} s of steps each, every figure written as it comes"]
    for call in (1, 2):
        chosen = [s for s in STEPS if s.call == call]
        running = "  <- this call" if all(s in steps for s in chosen) else ""
        lines.append(f"  call {call} ({sum(s.seconds for s in chosen)} s): {command}"
                     f"{' --call 2' if call == 2 else ''}{running}")
        lines += [f"    {s.name:<20} ≤ {s.seconds:>3} s  {s.what}" for s in chosen]
    return "\n".join(lines)


class Report:
    """gpu-check.json and gpu-check.md, rewritten whole (atomically) after every step."""

    def __init__(self, out: Path, smoke: bool, photos: Path | None, fresh: bool) -> None:
        self.json, self.md = out / "gpu-check.json", out / "gpu-check.md"
        earlier = {} if fresh or not self.json.is_file() else json.loads(self.json.read_text())
        self.results = earlier or {"smoke": smoke, "steps": [], "figures": {}}
        self.results["data"] = ("real photos: " + str(photos)) if photos else "the demo's drawn shapes, not photos"

    def add(self, step: str, status: str, seconds: float, rows: dict | None) -> None:
        self.results["steps"] = [s for s in self.results["steps"] if s["step"] != step]
        self.results["steps"].append({"step": step, "status": status, "seconds": round(seconds, 1)})
        if rows is not None:
            self.results["figures"].update(rows.pop("figures", {}))
            self.results[step] = rows
        self.save()

    def save(self) -> None:
        from gpu_check_report import markdown

        write_text_atomic(self.json, json.dumps(self.results, indent=1, default=str))
        write_text_atomic(self.md, markdown(self.results))


def run_step(step: Step, deadline: float, context) -> tuple[str, dict | None]:
    """``step`` in a forked child, in a process group of its own (its DALI workers and compilers with it),
    stopped at ``deadline`` seconds; returns its status and what it wrote."""
    from gpu_check_steps import run_in_child

    rows_file = context.work / f"{step.name}.json"
    rows_file.unlink(missing_ok=True)
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: run, write, and leave without running the parent's cleanup
        os.setpgid(0, 0)
        code = 1
        try:
            run_in_child(step.name, context, rows_file)
            code = 0
        except BaseException:  # noqa: BLE001 - reported by the parent from the file and the exit code
            traceback.print_exc()
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(code)
    try:
        os.setpgid(pid, pid)  # here too: the group exists before the deadline can pass, whichever runs first
    except OSError:
        pass  # the child has set it already (or has exec'd: not here)
    began, status = time.monotonic(), None
    while status is None:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = "ok" if os.waitstatus_to_exitcode(code) == 0 else "failed"
            _stop_group(pid, reaped=True)  # what the step left running (DALI's workers, a compiler's)
        elif time.monotonic() - began > deadline:
            _stop_group(pid)
            status = f"stopped at its {deadline:.0f} s deadline"
        else:
            time.sleep(0.1)
    rows = json.loads(rows_file.read_text()) if rows_file.is_file() else None
    if status == "failed":
        status = f"failed: {(rows or {}).get('error', 'the child process died')}"[:300]
    elif status.startswith("stopped") and rows:
        status += f" (kept {len(rows.get('rows', []))} finished rows)"
    return status, rows


def _stop_group(pid: int, reaped: bool = False) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if not reaped:
        os.waitpid(pid, 0)


def main(argv: list[str]) -> int:
    args = parse(argv)
    steps = chosen_steps(args)
    print(plan(args, steps), file=sys.stderr, flush=True)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "scripts"))
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # the Triton LRN's kernels on CPU tensors (read when they are defined)
    # Imported here, once, before the children fork: each step then starts without paying for them. Nothing here
    # touches CUDA (a forked child could not use it then): DALI, which might, is imported by the steps.
    import lightning  # noqa: F401
    import torch  # noqa: F401
    from gpu_check_context import Context

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.gettempdir()) / f"alexnet-gpu-check{'-smoke' if args.cpu_smoke else ''}-{os.getuid()}"
    work.mkdir(exist_ok=True)
    context = Context(out=args.out, work=work, smoke=args.cpu_smoke, photos=args.photos)
    report = Report(args.out, args.cpu_smoke, args.photos, fresh=not (args.call == 2 or args.steps))
    began = time.monotonic()
    for step in steps:
        left = args.seconds - (time.monotonic() - began)
        if left < 1:
            report.add(step.name, f"not run: this call's {args.seconds} s were spent", 0.0, None)
            continue
        own = args.deadlines.get(step.name, SMOKE_SECONDS if args.cpu_smoke else step.seconds)
        deadline = min(own, left)
        print(f"== {step.name} (≤ {deadline:.0f} s): {step.what}", file=sys.stderr, flush=True)
        started = time.monotonic()
        status, rows = run_step(step, deadline, context)
        report.add(step.name, status, time.monotonic() - started, rows)
        print(f"   {status}, {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        if step.name == "environment" and not status == "ok":
            print("error: the environment step failed; nothing else can run", file=sys.stderr)
            return 1
    failed = [s["step"] for s in report.results["steps"] if s["status"].startswith(("failed", "stopped"))]
    print(f"gpu check: wrote {report.md}; {len(failed)} step(s) failed or stopped"
          + (f" ({', '.join(failed)})" if failed else ""), file=sys.stderr)
    if not args.cpu_smoke and (args.call or 1) == 1 and not args.steps:
        print(f"next: scripts/gpu-check.sh {args.out}{' ' + str(args.photos) if args.photos else ''} --call 2",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
