"""The GPU check's measurements in one process, each step beside its baseline in the same run (issue 22).

    python scripts/gpu_check.py OUT_DIR [--photos PREPARED] [--budget SECONDS] [--cpu-smoke]

Steps, most important first; a failed step is recorded and the next one runs; once ``--budget`` seconds
have passed the remaining steps are skipped, and said to be (``--steps`` runs a subset: the rest, later):
  environment   torch, cuDNN, DALI, the card
  train-loop    the single-gpu recipe end to end on a 12,800-entry set of real JPEGs (symlinks to PHOTOS),
                against synthetic batches: img/s, GPU busy fraction, host time blocked in DALI's run(), syncs
  profile       torch.profiler over a few steps: device time per step by category (LRN included, forward
                and backward), and per conv layer
  model         the paper net step by step (bench.speed.PAPER_MATRIX: today's code first), and owt
  lrn           both LRN layers' shapes at batch 128, NCHW and channels-last: µs and GB/s forward+backward,
                reference, closed form eager, compiled and as Triton kernels; bf16 error against float64
  train-loop-before  train-loop with the reference LRN: the code before issue 22, end to end
  dali          the training pipeline alone at hw_decoder_load 0 / 0.65 / 1 (and prefetch 4), NVML at 10 Hz
  train-eval    alexnet train's own loop for a few steps, then the ten-crop eval's img/s
  train-loop-switches  train-loop again with compile, channels_last and split groups on
  compare       every figure against the newest docs/gpu/*-gpu-check.json of the same card: drops over 10 %
Writes OUT_DIR/gpu-check.json and OUT_DIR/gpu-check.md. ``--cpu-smoke`` runs every step that needs no CUDA
on tiny sizes on the CPU (the test suite runs it), so that the check never runs for the first time on a GPU.
"""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

LRN_SHAPES = {"norm1": (128, 96, 55, 55), "norm2": (128, 256, 27, 27)}  # after conv1 and conv2, batch 128
ENTRIES = 12_800  # 100 batches of 128: an epoch long enough for steady state (a 5-batch one read 1.025 syncs)


class Check:
    def __init__(self, out: Path, smoke: bool, budget: float, photos: Path | None) -> None:
        self.out, self.smoke, self.budget, self.photos = out, smoke, budget, photos
        self.device = "cpu" if smoke else "gpu"
        self.torch_device = torch.device("cpu" if smoke else "cuda")
        self.started = time.perf_counter()
        self.results: dict = {"smoke": smoke, "steps": [], "figures": {}}
        self.work = Path(tempfile.mkdtemp(prefix="gpu-check-"))

    def step(self, name: str, function) -> None:
        began = time.perf_counter()
        if began - self.started > self.budget:
            self.results["steps"].append({"step": name, "status": "skipped (time budget spent)", "seconds": 0})
            return
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            self.results[name] = function()
            status = "ok"
        except Exception as exc:  # a failed step is reported; the next one runs
            traceback.print_exc()
            status = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        seconds = round(time.perf_counter() - began, 1)
        self.results["steps"].append({"step": name, "status": status, "seconds": seconds})
        print(f"   {status}, {seconds} s", file=sys.stderr, flush=True)
        self.save()

    def save(self) -> None:
        (self.out / "gpu-check.json").write_text(json.dumps(self.results, indent=1, default=str))

    def figure(self, key: str, value: float, higher_is_better: bool = True) -> None:
        """A number the next run is compared against."""
        self.results["figures"][key] = {"value": value, "higher_is_better": higher_is_better}

    # --- steps -----------------------------------------------------------------------------------------
    def environment(self) -> dict:
        import lightning
        import nvidia.dali

        info = {"torch": torch.__version__, "lightning": lightning.__version__, "dali": nvidia.dali.__version__,
                "cudnn": torch.backends.cudnn.version(), "cpu_count": os.cpu_count()}
        if torch.cuda.is_available():
            info["card"] = torch.cuda.get_device_name(0)
        return info

    def lrn(self) -> dict:
        from alexnet_cli.models.lrn import closed_form_lrn, reference_lrn
        from alexnet_cli.models.paper import LRN_ALPHA, LRN_BETA, LRN_K

        shapes = {k: (2, 8, 9, 9) for k in LRN_SHAPES} if self.smoke else LRN_SHAPES
        backend = "aot_eager" if self.smoke else "inductor"
        impls = {"reference": reference_lrn, "closed-form": closed_form_lrn}
        try:
            from alexnet_cli.models.lrn_triton import triton_lrn

            impls["triton"] = triton_lrn
        except ImportError as exc:  # no Triton in this torch build: the others still run
            print(f"no Triton: {exc}", file=sys.stderr)
        rows = []
        for (layer, shape), layout in itertools.product(shapes.items(), ("nchw", "nhwc")):
            memory_format = torch.channels_last if layout == "nhwc" else torch.contiguous_format
            x = (torch.randn(shape, device=self.torch_device) * 30).relu().to(torch.bfloat16)
            x = x.contiguous(memory_format=memory_format)
            grad = torch.randn(shape, device=self.torch_device, dtype=torch.bfloat16)
            grad = grad.contiguous(memory_format=memory_format)
            exact = _lrn_float64(x[:2], LRN_ALPHA, LRN_BETA, LRN_K)
            # one compile per shape and layout, static: the kernel training runs, not a dynamic-shape one
            compiled = torch.compile(closed_form_lrn, backend=backend, fullgraph=True, dynamic=False)
            for name, impl in {**impls, "closed-form compiled": compiled}.items():
                def once(impl=impl, x=x, grad=grad) -> None:
                    v = x.detach().requires_grad_()
                    impl(v, 5, LRN_ALPHA, LRN_BETA, LRN_K, 2).backward(grad)

                seconds = _device_seconds(once, self.torch_device, warmup=1 if self.smoke else 3,
                                          repeats=1 if self.smoke else 20)
                y = impl(x[:2], 5, LRN_ALPHA, LRN_BETA, LRN_K, 2).double()
                relative = ((y - exact).abs() / exact.abs().clamp(min=1e-30)).max().item()
                # bytes a fused kernel pair must move: x and y forward; x, grad and dx backward (bf16)
                moved = 5 * x.numel() * x.element_size()
                rows.append({"layer": layer, "layout": layout, "impl": name, "us": seconds * 1e6,
                             "gb_s": moved / seconds / 1e9, "bf16_max_rel_error": relative})
        best = {}
        for row in rows:
            key = f"{row['impl']}, {row['layout']}"
            best[key] = best.get(key, 0.0) + row["us"]
        for impl, us in best.items():
            self.figure(f"lrn both layers µs ({impl})", us, higher_is_better=False)
        return {"rows": rows, "both_layers_us": best, "goal_us": 1000}

    def model(self) -> dict:
        from alexnet_cli.bench.speed import PAPER_MATRIX, ModelVariant, benchmark_model

        timing = ({"batch_size": 2, "warmup": 0, "batches": 1, "fc_width": 16} if self.smoke
                  else {"batch_size": 128, "warmup": 3, "batches": 10})
        backend = "aot_eager" if self.smoke else "inductor"
        rows = []
        # The smoke run takes each code path once: the baseline, both compiled rows, the lower bound, owt.
        # (Triton's row runs in the interpreter on a CPU: tests/models/test_lrn.py checks those kernels there.)
        matrix = [PAPER_MATRIX[i] for i in (0, 4, 5, 7)] if self.smoke else PAPER_MATRIX
        runs = [("paper", v) for v in matrix] + [("owt", ModelVariant("bf16-mixed"))]
        runs += [] if self.smoke else [("owt", ModelVariant("bf16-mixed", channels_last=True))]
        for arch, variant in runs:
            try:
                result = benchmark_model(arch, device=self.device, variant=variant, compile_backend=backend,
                                         **timing)
                rows.append(asdict(result))
                self.figure(f"model {arch} {variant.name} img/s", result.train_img_s)
            except Exception as exc:  # one variant failing (e.g. CUDA graphs) must not hide the others
                rows.append({"arch": arch, "variant": variant.name, "error": f"{type(exc).__name__}: {exc}"[:300]})
            _free(self.torch_device)
        return {"rows": rows, "baseline": PAPER_MATRIX[0].name}

    def dataset(self) -> Path:
        """A prepared set of ENTRIES training entries (symlinks, round-robin over PHOTOS' training images)."""
        root = self.work / "entries"
        if root.is_dir():
            return root
        photos = self.photos or self._demo()
        entries = 64 if self.smoke else ENTRIES
        sources = _classes_in_turn(sorted((photos / "train").glob("*/*.JPEG")))
        classes = json.loads((photos / "classes.json").read_text())
        root.mkdir(parents=True)
        for name in ("classes.json", "dataset.json", "stats.npz"):
            if (photos / name).exists():
                (root / name).write_bytes((photos / name).read_bytes())
        # Classes in turn, so that every class has images in both splits (the layout refuses one without).
        for split, count in (("train", max(len(classes), entries)), ("val", max(len(classes), entries // 20))):
            for index in range(count):
                source = sources[index % len(sources)]
                target = root / split / source.parent.name / f"{index:06d}-{source.name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(source.resolve())
        return root

    def _demo(self) -> Path:
        from alexnet_cli.data.prepare.demo import DemoSpec, write_demo_source
        from alexnet_cli.data.prepare.run import PrepareOptions, prepare_imagenet

        spec = DemoSpec(classes=4, train_per_class=8, val_per_class=2, seed=1) if self.smoke else DemoSpec()
        source = write_demo_source(self.work / "demo-source", spec)
        prepare_imagenet(PrepareOptions(source, self.work / "demo", workers=os.cpu_count() or 1))
        return self.work / "demo"

    def _recipe(self, *extra: str):
        from alexnet_cli.recipes import load_recipe

        if self.smoke:
            return load_recipe("cpu-demo", ["data.batch_size=4", "model.fc_width=16", *extra])
        return load_recipe("single-gpu", [*extra])

    def train_loop(self, *switches: str, label: str = "train-loop", synthetic: bool = True) -> dict:
        from alexnet_cli.bench.train_loop import benchmark_train

        steps, warmup = (2, 1) if self.smoke else (40, 10)
        result = benchmark_train(self._recipe(*switches), self.dataset(), steps=steps, warmup=warmup,
                                 compare_synthetic=synthetic, count_syncs=not self.smoke)
        self.figure(f"{label} Lightning img/s (real JPEGs)", result.lightning_img_s)
        if result.real_vs_synthetic is not None:
            self.figure(f"{label} real ÷ synthetic", result.real_vs_synthetic)
        if result.gpu_busy_frac is not None:
            self.figure(f"{label} GPU busy fraction", result.gpu_busy_frac)
        return {**asdict(result), "switches": list(switches)}

    def train_loop_before(self) -> dict:
        """The same loop with the reference LRN: the code as it ran before issue 22, end to end."""
        return self.train_loop("model.lrn_impl=reference", label="train-loop-before", synthetic=False)

    def train_loop_switches(self) -> dict:
        """The same loop with every speed switch on: what the recipe's defaults would give if changed (no
        synthetic side: each side compiles once)."""
        switches = ["model.compile=true", "model.channels_last=true", "model.split_groups=true"]
        if self.smoke:
            switches.append("model.compile_backend=aot_eager")
        return self.train_loop(*switches, label="train-loop-switches", synthetic=False)

    def profile(self) -> dict:
        from torch.profiler import ProfilerActivity, profile

        from alexnet_cli.bench.speed import PAPER_MATRIX, autocast
        from alexnet_cli.models import build_model
        from alexnet_cli.models.execution import apply_execution
        from alexnet_cli.models.paper import LocalResponseNorm
        from alexnet_cli.recipes import OptimConfig
        from alexnet_cli.training.optimizer import sgd

        variant = PAPER_MATRIX[3]  # the fastest eager row: what compile starts from
        batch = 2 if self.smoke else 128
        model = build_model("paper", 1000, fc_width=16 if self.smoke else None)
        apply_execution(model, lrn_impl=variant.lrn_impl, split_groups=variant.split_groups,
                        channels_last=variant.channels_last)
        model = model.to(self.torch_device)
        optimizer = sgd(model, OptimConfig(), 0.01)
        images = torch.randn(batch, 3, 227, 227, device=self.torch_device)
        labels = torch.randint(0, 1000, (batch,), device=self.torch_device)
        precision = autocast(variant.precision, self.torch_device)

        def step() -> None:
            with precision():
                loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for _ in range(1 if self.smoke else 5):
            step()
        for norm in (m for m in model.modules() if isinstance(m, LocalResponseNorm)):
            _label_forward(norm, LRN_LABEL)  # its backward shows under its autograd node's or op's name
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if not self.smoke else [])
        steps = 1 if self.smoke else 5
        with profile(activities=activities, record_shapes=True) as prof:
            for _ in range(steps):
                step()
            if not self.smoke:
                torch.cuda.synchronize()
        return _profile_table(prof, steps, on_gpu=not self.smoke)

    def dali(self) -> dict:
        from alexnet_cli.data.datamodule import DaliDataModule
        from alexnet_cli.training.setup import crop_size

        settings = [(0.65, 2)] if self.smoke else [(0.0, 2), (0.65, 2), (1.0, 2), (0.65, 4)]  # (load, prefetch)
        batches = 2 if self.smoke else 40
        rows = []
        for load, prefetch in settings:
            recipe = self._recipe(f"data.hw_decoder_load={load}", f"data.prefetch={prefetch}")
            module = DaliDataModule(self.dataset(), recipe.data, crop=crop_size(recipe), seed=0)
            loader = module.loader("train", "train", shard=(0, 1))
            sampler = NvmlSampler() if not self.smoke else None
            iterator = iter(loader)
            next(iterator)  # the pipeline's start-up
            if sampler:
                sampler.start()
            began = time.perf_counter()
            for _ in range(batches):
                images, _ = next(iterator)
            if not self.smoke:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - began
            row = {"hw_decoder_load": load, "prefetch": prefetch, "img_s": batches * recipe.data.batch_size / seconds,
                   "host_blocked_ms_per_batch": 1e3 * loader.host_wait_seconds / (batches + 1)}
            if sampler:
                row.update(sampler.stop())
            loader.close()
            rows.append(row)
            self.figure(f"dali img/s at hw_decoder_load {load}, prefetch {prefetch}", row["img_s"])
        return {"rows": rows}

    def train_eval(self) -> dict:
        from alexnet_cli.inspection.evaluate import evaluate
        from alexnet_cli.training.run import run

        steps = 2 if self.smoke else 30
        overrides = [f"trainer.max_steps={steps}", "trainer.max_epochs=1", "checkpoint.every_minutes=null",
                     "trainer.limit_val_batches=2", "trainer.log_every_n_steps=1"]
        if self.smoke:
            overrides += ["data.batch_size=4", "model.fc_width=16"]
        recipe = self._recipe(*overrides) if not self.smoke else self._recipe(*overrides[:-2])
        trained = run(recipe, self.dataset(), out=self.work / "run", quiet=True)
        evaluated = evaluate(self.dataset(), checkpoint=trained.last_checkpoint, ten_crop=True,
                             batch_size=4 if self.smoke else 128, device=self.device, num_threads=4)
        self.figure("eval ten-crop img/s", evaluated.images_per_second)
        return {"train_img_s": trained.images_per_second, "data_wait": trained.data_wait_fraction,
                "steps": trained.global_step, "eval_images": evaluated.images,
                "eval_img_s": evaluated.images_per_second}

    def compare(self) -> dict:
        card = self.results.get("environment", {}).get("card", "CPU")
        earlier = [path for path in sorted((ROOT / "docs" / "gpu").glob("*-gpu-check.json"))
                   if json.loads(path.read_text()).get("environment", {}).get("card", "CPU") == card]
        if not earlier:
            return {"against": None, "card": card, "regressions": []}
        before = json.loads(earlier[-1].read_text()).get("figures", {})
        rows, regressions = [], []
        for key, now in self.results["figures"].items():
            if key not in before:
                continue
            old, new = before[key]["value"], now["value"]
            change = (new - old) / old if old else 0.0
            worse = change < -0.10 if now["higher_is_better"] else change > 0.10
            rows.append({"figure": key, "before": old, "now": new, "change": change, "regression": worse})
            if worse:
                regressions.append(key)
        return {"against": earlier[-1].name, "rows": rows, "regressions": regressions}


class NvmlSampler:
    """GPU and JPEG-engine utilisation sampled at 10 Hz while DALI runs: NVML on a thread of this process, or
    nvidia-smi at 100 ms where no NVML binding (pynvml) is installed."""

    QUERY = ["nvidia-smi", "--query-gpu=utilization.gpu,utilization.jpeg", "--format=csv,noheader,nounits",
             "-lms", "100"]

    def __init__(self, hz: float = 10.0) -> None:
        self.period, self.samples, self._stop = 1.0 / hz, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._smi: subprocess.Popen | None = None
        self.source = "nvml"

    def start(self) -> None:
        try:
            import pynvml  # noqa: F401
        except ImportError:
            self.source = "nvidia-smi"
            try:
                self._smi = subprocess.Popen(self.QUERY, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                             text=True)
            except OSError as exc:  # neither: img/s at load 0 vs 1 still tells the engines' share
                self.source = f"nothing ({exc})"
            return
        self._thread.start()

    def _run(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        while not self._stop.is_set():
            sample = {"sm": pynvml.nvmlDeviceGetUtilizationRates(handle).gpu}
            try:
                sample["jpeg"] = pynvml.nvmlDeviceGetJpgUtilization(handle)[0]
            except Exception:
                sample["jpeg"] = None
            self.samples.append(sample)
            time.sleep(self.period)

    def stop(self) -> dict:
        if self.source.startswith("nothing"):
            pass
        elif self._smi is not None:
            self._smi.terminate()
            output, _ = self._smi.communicate(timeout=5)
            for line in output.splitlines():
                fields = [field.strip() for field in line.split(",")]
                if len(fields) == 2 and fields[0].isdigit():
                    self.samples.append({"sm": int(fields[0]),
                                         "jpeg": int(fields[1]) if fields[1].isdigit() else None})
        else:
            self._stop.set()
            self._thread.join(timeout=2)
        if not self.samples:
            return {"utilisation": f"no samples from {self.source}"}
        jpeg = [s["jpeg"] for s in self.samples if s["jpeg"] is not None]
        return {"utilisation_source": self.source, "samples": len(self.samples),
                "sm_util_mean": statistics.mean(s["sm"] for s in self.samples),
                "jpeg_util_mean": statistics.mean(jpeg) if jpeg else None}


def _classes_in_turn(files: list[Path]) -> list[Path]:
    """One file of each class, then the second of each, ...: any prefix as long as the class count covers all."""
    by_class: dict[str, list[Path]] = {}
    for path in files:
        by_class.setdefault(path.parent.name, []).append(path)
    columns = itertools.zip_longest(*by_class.values())
    return [path for column in columns for path in column if path is not None]


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


# Device time by what the op is: a kernel counts for the op that launched it, and for the LRN if any op around
# it is the LRN's (its labelled forward, the closed form's autograd node, the Triton op and its backward).
LRN_LABEL = "alexnet::LRN"
LRN_MARKERS = (LRN_LABEL, "_ClosedFormLRN", "alexnet_cli::lrn")
CATEGORIES = [("conv backward", ("convolution_backward",)), ("conv forward", ("convolution",)),
              ("optimizer", ("sgd",)), ("matmul (FC)", ("addmm", "::mm", "linear")), ("pooling", ("max_pool",)),
              ("loss", ("cross_entropy", "log_softmax", "nll_loss")),
              ("elementwise", ("relu", "threshold", "mul", "add", "div", "copy", "to_copy", "dropout", "fill",
                               "pow", "pad", "slice", "cat"))]


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


def _category(event) -> str:
    node = event
    while node is not None:
        if any(marker in node.name for marker in LRN_MARKERS):
            return "LRN"
        node = node.cpu_parent
    name = event.name.lower()
    return next((label for label, words in CATEGORIES if any(w in name for w in words)), "other")


def _profile_table(prof, steps: int, on_gpu: bool) -> dict:
    """Self device time per step by category, and per conv layer (its input shapes name it)."""
    attribute = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    by_category: dict[str, float] = {}
    for event in prof.events():
        spent = getattr(event, attribute) / steps / 1e3
        if spent > 0:
            category = _category(event)
            by_category[category] = by_category.get(category, 0.0) + spent
    layers = {}
    for event in prof.key_averages(group_by_input_shape=True):
        if event.key in ("aten::convolution", "aten::convolution_backward") and event.input_shapes:
            shapes = [s for s in event.input_shapes if s]
            label = f"{event.key.split('::')[1]} {shapes[0]} × {shapes[1] if len(shapes) > 1 else ''}"
            layers[label] = layers.get(label, 0.0) + getattr(event, "device_time_total" if on_gpu
                                                              else "cpu_time_total") / steps / 1e3
    kernels = {"dgrad": 0.0, "wgrad": 0.0}
    if on_gpu:
        for event in prof.key_averages():
            for kind in kernels:
                if kind in event.key.lower():
                    kernels[kind] += event.self_device_time_total / steps / 1e3
    return {"ms_per_step_by_category": dict(sorted(by_category.items(), key=lambda kv: -kv[1])),
            "conv_ms_per_step_by_layer": layers, "cudnn_kernel_ms_per_step": kernels if on_gpu else None,
            "clock": "device" if on_gpu else "cpu"}


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown(results: dict) -> str:
    env = results.get("environment", {})
    lines = [f"# GPU check{' (CPU smoke run)' if results['smoke'] else ''}", "",
             f"Environment: {env.get('card', 'CPU')}, torch {env.get('torch')}, cuDNN {env.get('cudnn')}, "
             f"DALI {env.get('dali')}, Lightning {env.get('lightning')}", "",
             "| step | status | seconds |", "|---|---|---:|"]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']} |" for s in results["steps"]]
    if "lrn" in results:
        lines += ["", "## LRN, both layers' shapes, batch 128, bf16, forward + backward (goal: both ≤ 1,000 µs)", "",
                  "| layer | layout | impl | µs | GB/s | bf16 max rel. error |", "|---|---|---|---:|---:|---:|"]
        lines += [f"| {r['layer']} | {r['layout']} | {r['impl']} | {r['us']:,.0f} | {r['gb_s']:,.0f} | "
                  f"{r['bf16_max_rel_error']:.2e} |" for r in results["lrn"]["rows"]]
        lines += [f"- both layers, {impl}: {us:,.0f} µs" for impl, us in results["lrn"]["both_layers_us"].items()]
    if "model" in results:
        lines += ["", "## Model, synthetic batches (each row adds one switch; the first is the code before them)",
                  "", "| arch | variant | train img/s | train ms | forward img/s | compile s |",
                  "|---|---|---:|---:|---:|---:|"]
        for r in results["model"]["rows"]:
            if "error" in r:
                lines.append(f"| {r['arch']} | {r['variant']} | {r['error']} | | | |")
            else:
                compiled = "" if r["compile_seconds"] is None else f"{r['compile_seconds']:.0f}"
                lines.append(f"| {r['arch']} | {r['variant']} | {r['train_img_s']:,.0f} | {r['train_ms']:.2f} | "
                             f"{r['forward_img_s']:,.0f} | {compiled} |")
    for name in ("train-loop", "train-loop-before", "train-loop-switches"):
        if name not in results:
            continue
        r = results[name]
        lines += ["", f"## single-gpu end to end, real JPEGs{' ' + str(r['switches']) if r['switches'] else ''}", "",
                  f"- Lightning {r['lightning_img_s']:,.0f} img/s (goal 20,000), plain loop {r['plain_img_s']:,.0f}"
                  + (f", synthetic {r['synthetic_img_s']:,.0f} (real ÷ synthetic {r['real_vs_synthetic']:.2f}, "
                     "goal 0.95)" if r["synthetic_img_s"] else "")
                  + f"; GPU busy {_share(r['gpu_busy_frac'])} (goal 95 %); host blocked in run() "
                  f"{_number(r['host_blocked_ms_per_step'])} ms/step; data wait {r['data_wait_frac']:.1%}; host "
                  f"syncs per step {_number(r['lightning_syncs_per_step'])}"]
    if "profile" in results:
        p = results["profile"]
        lines += ["", f"## Profile ({p['clock']} time per step, ms)", "", "| category | ms |", "|---|---:|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in p["ms_per_step_by_category"].items()]
        lines += ["", "| conv op and shapes | ms |", "|---|---:|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in p["conv_ms_per_step_by_layer"].items()]
        if p["cudnn_kernel_ms_per_step"]:
            lines += ["", f"cuDNN kernels: {p['cudnn_kernel_ms_per_step']}"]
    if "dali" in results:
        lines += ["", "## DALI alone", ""] + [f"- {r}" for r in results["dali"]["rows"]]
    if "train-eval" in results:
        lines += ["", f"## alexnet train and ten-crop eval: {results['train-eval']}"]
    if "compare" in results:
        c = results["compare"]
        lines += ["", f"## Against {c['against']}: regressions {c['regressions'] or 'none'}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--photos", type=Path, help="a prepared dataset of real photos (default: the demo's)")
    parser.add_argument("--budget", type=float, default=270.0, help="seconds after which the rest is skipped")
    parser.add_argument("--cpu-smoke", action="store_true", help="every step on the CPU at tiny sizes")
    parser.add_argument("--steps", help="a comma-separated subset, in this order (a second call finishes what "
                        "the first one's budget skipped)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --cpu-smoke")
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # the Triton LRN's kernels on CPU tensors
    check = Check(args.out, args.cpu_smoke, args.budget, args.photos)
    steps = {"environment": check.environment, "train-loop": check.train_loop, "profile": check.profile,
             "model": check.model, "lrn": check.lrn, "train-loop-before": check.train_loop_before,
             "dali": check.dali, "train-eval": check.train_eval, "train-loop-switches": check.train_loop_switches,
             "compare": check.compare}
    chosen = args.steps.split(",") if args.steps else list(steps)
    unknown = [name for name in chosen if name not in steps]
    if unknown:
        sys.exit(f"--steps: unknown {', '.join(unknown)}; choose from {', '.join(steps)}")
    for name in chosen:
        check.step(name, steps[name])
    (args.out / "gpu-check.md").write_text(markdown(check.results))
    failed = [s["step"] for s in check.results["steps"] if s["status"].startswith("failed")]
    print(f"gpu check: {len(check.results['steps']) - len(failed)} steps ok or skipped, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else ""), file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
