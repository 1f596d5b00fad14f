"""The GPU check's steps (``scripts/gpu_check.py`` runs each in a child process under its deadline).

A step writes what it measures as it goes (``Recorder``: each row as soon as it is done), so that a step
stopped at its deadline still leaves its finished rows. ``--cpu-smoke`` runs every step on the CPU at tiny
sizes, so that none of this runs for the first time on a lent GPU.
"""

import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from gpu_check_context import Context, Recorder, data_label, earlier_environment
from gpu_check_nvml import NvmlSampler

from alexnet_cli.errors import first_line

ROOT = Path(__file__).resolve().parent.parent
LRN_SHAPES = {"norm1": (128, 96, 55, 55), "norm2": (128, 256, 27, 27)}  # after conv1 and conv2, batch 128
SMOKE_LRN_SHAPES = {"norm1": (2, 8, 9, 9), "norm2": (2, 16, 5, 5)}
# Cards with hardware JPEG decoders, which data.hw_decoder_load sends part of each batch to.
JPEG_ENGINE_CARDS = ("A100", "A800", "A30", "H100", "H800", "H200", "H20", "GH200", "B200", "GB200")


def run_in_child(name: str, context: Context, rows_file: Path) -> None:
    recorder = Recorder(rows_file)
    try:
        STEP_FUNCTIONS[name](context, recorder)
    except Exception as exc:
        recorder.set(error=first_line(exc))
        raise


# --- steps ------------------------------------------------------------------------------------------------------


def environment(ctx: Context, rec: Recorder) -> None:
    import lightning
    import nvidia.dali

    from alexnet_cli.data.workers import usable_cores

    info = {"torch": torch.__version__, "lightning": lightning.__version__, "dali": nvidia.dali.__version__,
            "cudnn": torch.backends.cudnn.version(), "cpu_count": os.cpu_count(), "usable_cores": usable_cores(),
            "python": sys.version.split()[0]}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if not ctx.smoke:
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device here: run the check with --cpu-smoke")
        info["card"] = torch.cuda.get_device_name(0)
        info["jpeg_engines"] = any(name in info["card"] for name in JPEG_ENGINE_CARDS)
    rec.set(**info)


def lrn(ctx: Context, rec: Recorder, compiled: bool = False) -> None:
    """Each LRN implementation at both layers' shapes: µs of forward + backward, the GB/s of the bytes
    ``benchmark traffic`` counts it moving (a lower bound when compiled), and its bf16 error. Eager: reference,
    closed form and Triton in NCHW, the closed form in channels-last (where ``auto`` runs it); compiled: the
    closed form in both layouts, each compile counted."""
    from alexnet_cli.bench.traffic import lrn_layer_bytes
    from alexnet_cli.models.lrn import closed_form_lrn, reference_lrn
    from alexnet_cli.models.paper import LRN_ALPHA, LRN_BETA, LRN_K

    shapes = SMOKE_LRN_SHAPES if ctx.smoke else LRN_SHAPES
    eager = {"reference": reference_lrn, "closed-form": closed_form_lrn}
    try:
        from alexnet_cli.models.lrn_triton import triton_lrn

        eager["triton"] = triton_lrn
    except ImportError as exc:  # no Triton in this torch build: the others still run
        rec.set(triton=f"not importable: {exc}")
    if compiled:
        cases = [(layout, "closed-form compiled") for layout in ("nchw", "nhwc")]
    else:
        cases = [("nchw", impl) for impl in eager] + [("nhwc", "closed-form")]
    totals: dict[str, float] = {}
    for (layer, shape), (layout, name) in itertools.product(shapes.items(), cases):
        memory_format = torch.channels_last if layout == "nhwc" else torch.contiguous_format
        x = (torch.randn(shape, device=ctx.torch_device) * 30).relu().to(torch.bfloat16)
        x = x.contiguous(memory_format=memory_format)
        grad = torch.randn(shape, device=ctx.torch_device, dtype=torch.bfloat16).contiguous(memory_format=memory_format)
        stats = None
        if compiled:
            impl, stats = _compiled_closed_form(ctx, closed_form_lrn)
        else:
            impl = eager[name]

        def once(impl=impl, x=x, grad=grad) -> None:
            v = x.detach().requires_grad_()
            impl(v, 5, LRN_ALPHA, LRN_BETA, LRN_K, 2).backward(grad)

        seconds = _device_seconds(once, ctx.torch_device, warmup=1 if ctx.smoke else 3,
                                  repeats=1 if ctx.smoke else 20)
        counts = stats() if stats is not None else {}  # before the error's call at another shape compiles again
        kernel = "closed-form" if compiled else name
        moved = lrn_layer_bytes(kernel, shape, torch.bfloat16, 2, channels_last=layout == "nhwc", compiled=compiled)
        exact = _lrn_float64(x[:2], LRN_ALPHA, LRN_BETA, LRN_K)
        y = impl(x[:2], 5, LRN_ALPHA, LRN_BETA, LRN_K, 2).double()
        relative = ((y - exact).abs() / exact.abs().clamp(min=1e-30)).max().item()
        rec.row({"layer": layer, "layout": layout, "impl": name, "us": seconds * 1e6, "bytes": moved,
                 "bytes_counted": "lower bound" if compiled else "exact", "gb_s": moved / seconds / 1e9,
                 "bf16_max_rel_error": relative, **counts})
        key = f"{name}, {layout}"
        totals[key] = totals.get(key, 0.0) + seconds * 1e6
        rec.set(both_layers_us=totals, goal_us=1000)
    for key, us in totals.items():
        rec.figure(f"lrn both layers µs ({key})", us, higher_is_better=False)


def _compiled_closed_form(ctx: Context, closed_form_lrn):
    """A fresh compile of the closed form (dynamo reset first: no earlier variant's cache entries count toward
    its recompile limit), and a function telling how many graphs and breaks it compiled to."""
    from alexnet_cli.bench.speed import compile_counts, fresh_compile

    fresh_compile()
    backend = "aot_eager" if ctx.smoke else "inductor"
    compiled = torch.compile(closed_form_lrn, backend=backend, fullgraph=True, dynamic=False)

    def counts() -> dict:
        graphs, breaks = compile_counts()
        return {"graphs": graphs, "graph_breaks": breaks, "ran_eagerly": graphs == 0}

    return compiled, counts


def train_loop(ctx: Context, rec: Recorder, *switches: str, label: str = "train-loop",
               synthetic: bool = True) -> None:
    from alexnet_cli.bench.train_loop import benchmark_train

    steps, warmup = (2, 1) if ctx.smoke else (40, 10)
    rec.set(switches=list(switches), data=data_label(ctx))
    result = benchmark_train(ctx.recipe(*switches), ctx.dataset(), steps=steps, warmup=warmup,
                             compare_synthetic=synthetic, count_syncs=not ctx.smoke)
    rec.set(**asdict(result))
    rec.figure(f"{label} Lightning img/s (real JPEGs)", result.lightning_img_s)
    if result.real_vs_synthetic is not None:
        rec.figure(f"{label} real ÷ synthetic", result.real_vs_synthetic)
    if result.gpu_busy_frac is not None:
        rec.figure(f"{label} GPU busy fraction", result.gpu_busy_frac)


def train_loop_before(ctx: Context, rec: Recorder) -> None:
    """The same loop with the reference LRN: the code as it ran before issue 22, end to end."""
    train_loop(ctx, rec, "model.lrn_impl=reference", label="train-loop-before", synthetic=False)


def train_loop_switches(ctx: Context, rec: Recorder) -> None:
    """The loop with every speed switch on: what the recipe's defaults would give if changed (no synthetic side:
    each side compiles once)."""
    switches = ["model.compile=true", "model.channels_last=true", "model.split_groups=true"]
    if ctx.smoke:
        switches.append("model.compile_backend=aot_eager")
    train_loop(ctx, rec, *switches, label="train-loop-switches", synthetic=False)


def dali(ctx: Context, rec: Recorder) -> None:
    """The training pipeline alone (nothing else on the GPU: an upper bound on what it gives beside training) at
    hw_decoder_load 0, 0.65 and 1, NVML sampling the JPEG engines. On a card that has them, a load above 0 that
    leaves them idle fails the step: the hardware decoder is not engaged."""
    from alexnet_cli.data.datamodule import DaliDataModule
    from alexnet_cli.training.plan import crop_size

    loads = [0.65] if ctx.smoke else [0.0, 0.65, 1.0]
    batches = 2 if ctx.smoke else 40
    rec.set(bound="upper bound: the pipeline alone, no training beside it", data=data_label(ctx))
    engines = earlier_environment(ctx).get("jpeg_engines", False)
    idle = []
    for load in loads:
        recipe = ctx.recipe(f"data.hw_decoder_load={load}")
        module = DaliDataModule(ctx.dataset(), recipe.data, crop=crop_size(recipe), seed=0)
        loader = module.loader("train", "train", shard=(0, 1))
        sampler = NvmlSampler() if not ctx.smoke else None
        iterator = iter(loader)
        next(iterator)  # the pipeline's start-up
        if sampler:
            sampler.start()
        began = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        if not ctx.smoke:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - began
        row = {"hw_decoder_load": load, "prefetch": recipe.data.prefetch, "threads": module.workers.threads,
               "readers": module.workers.readers, "img_s": batches * recipe.data.batch_size / seconds,
               "host_blocked_ms_per_batch": 1e3 * loader.host_wait_seconds / (batches + 1)}
        if sampler:
            row.update(sampler.stop())
        loader.close()
        rec.row(row)
        rec.figure(f"dali img/s at hw_decoder_load {load} (upper bound)", row["img_s"])
        if engines and load > 0 and not row.get("jpeg_util_mean"):  # 0 %, or no reading at all
            idle.append(load)
    if idle:
        sm = [row.get("sm_util_mean") for row in rec.data["rows"]]
        read = [row.get("jpeg_util_mean", row.get("utilisation")) for row in rec.data["rows"]]
        card = earlier_environment(ctx).get("card")
        raise RuntimeError(f"hw_decoder_load {', '.join(map(str, idle))}: the JPEG engines of {card} read {read} "
                           f"(SM use {sm} %): the hardware decoder is not engaged, or its use cannot be read here; "
                           "either way it is not verified")


def profile(ctx: Context, rec: Recorder) -> None:
    """torch.profiler over a few steps of the default eager network: time per step by category, each kernel
    once (bench/profile.py), and the total beside the kernels' sum."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    from alexnet_cli.bench.profile import LRN_LABEL, cpu_ms_by_category, device_ms_by_category, kernel_ms_total
    from alexnet_cli.bench.speed import autocast
    from alexnet_cli.models import build_network
    from alexnet_cli.models.paper import LocalResponseNorm
    from alexnet_cli.recipes import ModelConfig, OptimConfig
    from alexnet_cli.training.optimizer import sgd

    batch, steps = (2, 1) if ctx.smoke else (128, 5)
    model = build_network(ModelConfig("paper", fc_width=16 if ctx.smoke else None), 1000).to(ctx.torch_device)
    optimizer = sgd(model, OptimConfig(), 0.01)
    images = torch.randn(batch, 3, 227, 227, device=ctx.torch_device)
    labels = torch.randint(0, 1000, (batch,), device=ctx.torch_device)
    precision = autocast("bf16-mixed" if not ctx.smoke else "32", ctx.torch_device)

    def step() -> None:
        with precision():
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(1 if ctx.smoke else 5):
        step()
    for norm in (m for m in model.modules() if isinstance(m, LocalResponseNorm)):
        _label_forward(norm, LRN_LABEL)  # its backward shows under its autograd node's or op's name
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if not ctx.smoke else [])
    with profiler(activities=activities) as prof:
        for _ in range(steps):
            step()
        if not ctx.smoke:
            torch.cuda.synchronize()
    events = prof.events()
    if ctx.smoke:
        rec.set(ms_per_step_by_category=cpu_ms_by_category(events, steps), clock="cpu")
    else:
        table = device_ms_by_category(events, steps)
        rec.set(ms_per_step_by_category=table, clock="device", kernel_ms_per_step=kernel_ms_total(events, steps),
                lrn_impl="auto")
        rec.figure("profile LRN ms per step", table.get("LRN", 0.0), higher_is_better=False)


def model(ctx: Context, rec: Recorder, compiled: bool = False) -> None:
    """The paper net step by step (bench/speed.PAPER_MATRIX), its eager rows or its compiled ones, and owt."""
    from alexnet_cli.bench.speed import PAPER_MATRIX, ModelVariant, benchmark_model

    timing = ({"batch_size": 2, "warmup": 0, "batches": 1, "fc_width": 16} if ctx.smoke
              else {"batch_size": 128, "warmup": 3, "batches": 10})
    rows = [v for v in PAPER_MATRIX if (v.compile_mode is not None) == compiled]
    if ctx.smoke:  # each code path once: the baseline and the default, or one compiled row
        rows = rows[:1] if compiled else rows[:1] + [v for v in rows if v.lrn_impl == "auto"][:1]
    runs = [("paper", v) for v in rows]
    if not compiled:
        runs += [("owt", ModelVariant("bf16-mixed"))]
    rec.set(baseline=PAPER_MATRIX[0].name)
    for arch, variant in runs:
        try:
            result = benchmark_model(arch, device=ctx.device, variant=variant,
                                     compile_backend="aot_eager" if ctx.smoke else "inductor", **timing)
            rec.row(asdict(result))
            rec.figure(f"model {arch} {variant.name} img/s", result.train_img_s)
        except Exception as exc:  # one variant failing (e.g. CUDA graphs) must not hide the others
            rec.row({"arch": arch, "variant": variant.name, "error": first_line(exc, 300)})
        _free(ctx.torch_device)


def gpu_tests(ctx: Context, rec: Recorder) -> None:
    """pytest -m gpu, its output in OUT/gpu-tests.log."""
    if ctx.smoke:
        rec.set(summary="not run: no CUDA (the suite runs their CPU halves)")
        return
    log = ctx.out / "gpu-tests.log"
    with log.open("w") as output:
        done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-s", "-p",
                               "no:cacheprovider", "tests/data/test_gpu.py", "tests/models/test_gpu_speed.py"],
                              cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    rec.set(summary=lines[-1] if lines else "no output", returncode=done.returncode,
            checks=[line for line in lines if line.startswith("GPU-CHECK")])
    if done.returncode != 0:
        raise RuntimeError(f"GPU tests failed ({lines[-1] if lines else 'no output'}): see {log}")


def train_eval(ctx: Context, rec: Recorder) -> None:
    from alexnet_cli.inspection.evaluate import evaluate
    from alexnet_cli.training.run import run

    steps = 2 if ctx.smoke else 30
    overrides = [f"trainer.max_steps={steps}", "trainer.max_epochs=1", "checkpoint.every_minutes=null",
                 "trainer.limit_val_batches=2"] + ([] if ctx.smoke else ["trainer.log_every_n_steps=1"])
    run_dir = ctx.work / f"run-{os.getpid()}"
    trained = run(ctx.recipe(*overrides), ctx.dataset(), out=run_dir, quiet=True)
    rec.set(train_img_s=trained.images_per_second, data_wait=trained.data_wait_fraction, steps=trained.global_step,
            data=data_label(ctx))
    evaluated = evaluate(ctx.dataset(), checkpoint=trained.last_checkpoint, ten_crop=True,
                         batch_size=4 if ctx.smoke else 128, device=ctx.device, num_threads=4)
    rec.set(eval_images=evaluated.images, eval_img_s=evaluated.images_per_second)
    rec.figure("eval ten-crop img/s", evaluated.images_per_second)


def compare(ctx: Context, rec: Recorder) -> None:
    """This run's figures (the report so far, both calls') against the newest earlier run on the same card."""
    now = json.loads((ctx.out / "gpu-check.json").read_text())
    card = now.get("environment", {}).get("card", "CPU")
    earlier = [path for path in sorted((ROOT / "docs" / "gpu").glob("*-gpu-check.json"))
               if json.loads(path.read_text()).get("environment", {}).get("card", "CPU") == card]
    if not earlier:
        rec.set(against=None, card=card, regressions=[])
        return
    before = json.loads(earlier[-1].read_text()).get("figures", {})
    regressions = []
    for key, figure in now.get("figures", {}).items():
        if key not in before:
            continue
        old, new = before[key]["value"], figure["value"]
        change = (new - old) / old if old else 0.0
        worse = change < -0.10 if figure["higher_is_better"] else change > 0.10
        rec.row({"figure": key, "before": old, "now": new, "change": change, "regression": worse})
        regressions += [key] if worse else []
    rec.set(against=earlier[-1].name, regressions=regressions)


STEP_FUNCTIONS = {
    "environment": environment, "lrn": lrn, "train-loop": train_loop, "train-loop-before": train_loop_before,
    "dali": dali, "profile": profile, "model": model, "gpu-tests": gpu_tests,
    "lrn-compiled": lambda ctx, rec: lrn(ctx, rec, compiled=True),
    "model-compiled": lambda ctx, rec: model(ctx, rec, compiled=True),
    "train-loop-switches": train_loop_switches, "train-eval": train_eval, "compare": compare,
}


# --- helpers ----------------------------------------------------------------------------------------------------


def _label_forward(module, label: str) -> None:
    """Wrap ``module``'s forward in a profiler range named ``label`` (forward hooks: the model is untouched)."""
    from torch.autograd.profiler import record_function

    def enter(mod, args):
        mod._profiler_range = record_function(label)
        mod._profiler_range.__enter__()

    def leave(mod, args, output):
        mod._profiler_range.__exit__(None, None, None)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave)


def _lrn_float64(x, alpha, beta, k, size=5, groups=2):
    """§3.3's formula in float64, map by map, per group: the exactness reference."""
    x = x.double()
    per_group = x.shape[1] // groups
    out = torch.empty_like(x)
    for c in range(x.shape[1]):
        start = c - c % per_group
        low, high = max(start, c - size // 2), min(start + per_group - 1, c + (size - 1) // 2)
        out[:, c] = x[:, c] / (k + alpha * (x[:, low:high + 1] ** 2).sum(1)) ** beta
    return out


def _device_seconds(function, device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        function()
    if device.type != "cuda":
        began = time.perf_counter()
        for _ in range(repeats):
            function()
        return (time.perf_counter() - began) / repeats
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def _free(device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
