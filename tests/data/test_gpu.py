"""The GPU path: where each tensor lives, which the CPU tests cannot see. Skipped without CUDA;
``scripts/gpu-check.sh`` runs them (``pytest -m gpu``) and reports the ``GPU-CHECK`` lines they print.
"""

import numpy as np
import pytest
import torch
from test_pipeline import make_loader

from alexnet_cli.data.loader import hand_off
from alexnet_cli.data.normalization import Normalization
from alexnet_cli.data.stats import load_stats

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# Pixel tolerances in 0–255 units. nvJPEG's fast chroma upsampling differs from libjpeg-turbo's at colour
# edges: on an H100 (2026-11-26) mean 0.4–0.5, max ≤77 levels. With exact_decode it upsamples the same
# way: mean 0.001, max 2 (IDCT rounding).
FAST = {"mean": 1.0, "max": 128.0}
EXACT = {"mean": 0.01, "max": 4.0}


def compare(kind, gpu_batch, cpu_batch, tolerance) -> None:
    (gpu_images, gpu_labels), (cpu_images, cpu_labels) = gpu_batch, cpu_batch
    assert gpu_images.device.type == "cuda" and gpu_labels.device.type == "cuda"
    assert gpu_images.dtype == torch.float32 and gpu_labels.dtype == torch.int64
    assert gpu_images.shape == cpu_images.shape and gpu_labels.shape == cpu_labels.shape
    assert gpu_labels.cpu().tolist() == cpu_labels.tolist()
    difference = (gpu_images.cpu() - cpu_images).abs()
    print(f"GPU-CHECK {kind}: shape {tuple(gpu_images.shape)} {gpu_images.dtype} on {gpu_images.device}, labels "
          f"equal; |GPU − CPU| mean {difference.mean():.3f}, max {difference.max():.1f} (0–255 units)")
    assert difference.mean() < tolerance["mean"] and difference.max() < tolerance["max"]


@pytest.mark.parametrize("exact", [False, True], ids=["fast", "exact"])
@pytest.mark.parametrize("kind", ["train", "val", "ten_crop"])
def test_a_gpu_batch_is_on_the_gpu_and_matches_the_cpu_pipeline(prepared, kind, exact):
    gpu, _ = make_loader(prepared, kind, batch_size=8, pca_std=0.1, device="gpu", exact_decode=exact)  # raw pixels
    cpu, _ = make_loader(prepared, kind, batch_size=8, pca_std=0.1, device="cpu")
    compare(f"{kind}, {'exact' if exact else 'fast'} decode", next(iter(gpu)), next(iter(cpu)),
            EXACT if exact else FAST)


def test_the_mean_image_is_subtracted_on_the_gpu_like_on_the_cpu(prepared):
    stats = load_stats(prepared)
    norm = Normalization(stats.channel_mean, stats.channel_std, stats.mean_image)
    gpu, _ = make_loader(prepared, "train", batch_size=8, normalization=norm, pca_std=0.1, device="gpu",
                         exact_decode=True)
    cpu, _ = make_loader(prepared, "train", batch_size=8, normalization=norm, pca_std=0.1, device="cpu")
    compare("train, mean image, exact decode", next(iter(gpu)), next(iter(cpu)), EXACT)


def test_stream_ordered_batches_stay_intact_while_the_gpu_is_busy(prepared):
    """DALI's outputs come ordered on the training stream, not host-synchronous: with the GPU kept busy by
    other work queued first, every batch of an epoch (prefetch and buffer reuse included) still equals the CPU
    pipeline's."""
    gpu, _ = make_loader(prepared, "train", batch_size=8, pca_std=0.1, device="gpu", exact_decode=True)
    cpu, _ = make_loader(prepared, "train", batch_size=8, pca_std=0.1, device="cpu")
    busy = torch.randn(4096, 4096, device="cuda")
    for step, (gpu_batch, cpu_batch) in enumerate(zip(gpu, cpu)):
        for _ in range(20):  # ~milliseconds of queued work ahead of the batch's first use
            busy = busy @ busy / 64
        compare(f"train, stream-ordered batch {step}", gpu_batch, cpu_batch, EXACT)
    assert gpu.host_wait_seconds > 0


def test_on_a_training_stream_of_its_own_batches_are_ordered_and_the_host_never_waits(prepared):
    """training/cuda_stream.py's hand-off, asked as Lightning asks: batch i+1 is fetched before batch i is used.
    Before each fetch a ~0.5 s kernel is queued on the training stream; batch i is then copied on that stream and
    let go (DALI may reuse its buffers). ``run()`` must return while the kernel still runs (no host
    synchronisation), and every copy must equal the CPU pipeline's batch: a buffer reused before the stream read
    it would show another batch's pixels."""
    gpu, _ = make_loader(prepared, "train", batch_size=8, pca_std=0.1, device="gpu", exact_decode=True)
    cpu, _ = make_loader(prepared, "train", batch_size=8, pca_std=0.1, device="cpu")
    copies, host_waited = [], []
    with torch.cuda.stream(torch.cuda.Stream()):
        batches = iter(gpu)
        current = next(batches)  # the pipeline's start-up
        for _ in range(len(gpu) - 1):
            torch.cuda._sleep(1_000_000_000)  # ~0.5 s of one spinning kernel, queued ahead of the next batch
            sleeping = torch.cuda.Event()
            sleeping.record()
            ahead = next(batches)  # DALI binds it to this stream
            host_waited.append(sleeping.query())  # True only if run() sat out the kernel
            copies.append((current[0].clone(), current[1].clone()))  # batch i used after i+1 was fetched
            current = ahead
        copies.append((current[0].clone(), current[1].clone()))
    torch.cuda.synchronize()
    assert len(copies) == len(gpu) >= 3 and not any(host_waited), host_waited
    for step, (copy, want) in enumerate(zip(copies, cpu)):
        compare(f"train, own stream, batch {step}", copy, want, EXACT)


def test_a_gpu_output_is_refused_for_a_cpu_tensor():
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=2, num_threads=1, device_id=0)
    def constant():
        return types.Constant(np.ones(3, np.float32), device="gpu")

    pipe = constant()
    pipe.build()
    (output,) = pipe.run()
    assert hand_off(output, torch.device("cuda", 0)).device.type == "cuda"
    with pytest.raises(RuntimeError, match="on the GPU cannot become a tensor on cpu"):
        hand_off(output, torch.device("cpu"))
    del fn


def test_lrn_under_bf16_autocast_on_the_gpu_equals_float32_rounded():
    from alexnet_cli.models.paper import LocalResponseNorm

    x = (torch.randn(4, 96, 27, 27, device="cuda") * 8).relu().bfloat16()
    lrn = LocalResponseNorm(groups=2)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = lrn(x)
    torch.testing.assert_close(got, lrn(x.float()).bfloat16(), rtol=0, atol=0)


def test_a_nonfinite_step_leaves_weights_and_momentum_unchanged_on_the_gpu():
    from alexnet_cli.training.optimizer import zero_momentum_buffers

    weight = torch.nn.Parameter(torch.ones(5, device="cuda"))
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9, weight_decay=5e-4, fused=True)
    zero_momentum_buffers(optimizer)
    weight.grad = torch.full_like(weight, float("nan"))
    optimizer.found_inf = torch.ones((), device="cuda")
    optimizer.step()
    assert torch.equal(weight.detach(), torch.ones(5, device="cuda"))
    assert torch.equal(optimizer.state[weight]["momentum_buffer"], torch.zeros(5, device="cuda"))


def test_fit_runs_on_a_stream_of_its_own_ordered_after_what_came_before_and_gives_the_default_back():
    from types import SimpleNamespace

    from alexnet_cli.training.cuda_stream import TrainingStream

    callback, module = TrainingStream(), SimpleNamespace(device=torch.device("cuda", 0))
    default = torch.cuda.current_stream()
    weights = torch.zeros(1000, device="cuda")
    torch.cuda._sleep(1_000_000_000)  # ~0.5 s, then the "weights" arrive on the default stream
    weights.fill_(1.0)
    callback.on_fit_start(None, module)
    assert torch.cuda.current_stream() != default and torch.cuda.current_stream().cuda_stream != 0
    seen = weights.clone()  # on the training stream: must wait for the fill queued before fit started
    callback.on_fit_end(None, module)
    assert torch.cuda.current_stream() == default
    torch.cuda.synchronize()
    assert bool((seen == 1.0).all())
