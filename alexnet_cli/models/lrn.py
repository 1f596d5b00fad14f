"""Local response normalisation (§3.3), b = a / (k + α Σ a²)^β over ``size`` adjacent maps, two ways.

``reference``: shifted adds of the squares under autograd, which keeps every intermediate for the
backward pass (on a GPU the two LRN layers of the paper's net moved ~22 GB per step that way).
``closed_form``: an autograd Function that keeps only its input and recomputes the window in the
backward pass from the closed-form gradient

    ∂L/∂a_j = g_j d_j^-β − 2αβ a_j Σ_{i: j ∈ W(i)} g_i a_i d_i^(−β−1),
    d_i = k + α Σ_{j ∈ W(i)} a_j²

so that ``torch.compile`` can fuse the forward into one read of a and one write of b, and the
backward into two passes; ``triton`` (``models/lrn_triton.py``) is the same closed form as hand-written
kernels: eagerly, without a compile, the one that moves least (``choose_impl``). All compute in float32
whatever the input's dtype (bf16's 8-bit mantissa cannot hold k + α·Σa², 2 plus a term ~1e-4 of it) and
return the input's dtype; a NaN or an infinity goes through each as the formula takes it.
The window of map i is [i − size//2, i + (size−1)//2], inside its group of maps (one group per tower).
"""

import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from alexnet_cli.errors import first_line
from alexnet_cli.recipes import LrnImpl


def window_sum(values: torch.Tensor, size: int, groups: int, before: int) -> torch.Tensor:
    """Σ of ``values`` over maps [c − before, c − before + size − 1] of each map c, within its group:
    ``size`` shifted adds over a zero-padded copy (exact in the order of the reference's sum)."""
    batch, channels = values.shape[:2]
    per_group = channels // groups
    grouped = values.reshape(batch, groups, per_group, *values.shape[2:])
    padded = F.pad(grouped, (0, 0, 0, 0, before, size - 1 - before))
    total = padded[:, :, 0:per_group]
    for offset in range(1, size):
        total = total + padded[:, :, offset: offset + per_group]
    return total.reshape(values.shape)


def reference_lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int) -> torch.Tensor:
    """The formula under autograd, in float32."""
    xf = x.float()
    return (xf / (k + alpha * window_sum(xf * xf, size, groups, size // 2)).pow(beta)).to(x.dtype)


class _ClosedFormLRN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int) -> torch.Tensor:
        ctx.save_for_backward(x)  # in its own dtype: half the bytes of float32 under bf16
        ctx.constants = (size, alpha, beta, k, groups)
        xf = x.float()
        return (xf * (k + alpha * window_sum(xf * xf, size, groups, size // 2)).pow(-beta)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        size, alpha, beta, k, groups = ctx.constants
        xf, gf = x.float(), grad.float()
        denominator = k + alpha * window_sum(xf * xf, size, groups, size // 2)
        scale = denominator.pow(-beta)
        through_neighbours = gf * xf * scale / denominator
        # Map j sits in the windows of maps i ∈ [j − (size−1)//2, j + size//2]: the window mirrored.
        spread = window_sum(through_neighbours, size, groups, (size - 1) // 2)
        grad_x = gf * scale - (2.0 * alpha * beta) * xf * spread
        return grad_x.to(x.dtype), None, None, None, None, None


def closed_form_lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int) -> torch.Tensor:
    """The formula with the closed-form backward (see the module's docstring)."""
    return _ClosedFormLRN.apply(x, size, alpha, beta, k, groups)


LrnKernel = Literal["reference", "closed-form", "triton"]  # what runs: ``auto`` resolved


@dataclass(frozen=True)
class LrnChoice:
    """The implementation that runs for a request, and, where it is not what was asked, one line saying why."""

    kernel: LrnKernel
    note: str | None = None


def choose_impl(asked: LrnImpl, device: torch.device, *, channels_last: bool = False) -> LrnChoice:
    """What runs for ``model.lrn_impl=asked`` on ``device`` with maps in NCHW or channels-last.

    ``auto`` on a GPU is the exact implementation with the least counted traffic per step (``alexnet benchmark
    traffic``: reference 22.5 GB, closed form eager 22.2 GB, Triton 1.3 GB for the paper net's two layers at
    batch 128 in bf16): Triton, where it passes its check on this device (``triton_failure``), else the closed
    form. Triton's kernels walk one map's pixels, which channels-last strides C apart: there the closed form
    runs. ``auto`` on a CPU is the reference, which measured as fast or faster there and whose numbers the tests
    have long pinned. ``triton`` off a GPU (a GPU run's recipe resumed or evaluated on a CPU) is the closed form
    it implements, unless Triton's interpreter is on (``TRITON_INTERPRET=1``, the tests). On meta tensors (the
    traffic count) a named implementation is taken as it is: they run no kernels.
    """
    if device.type == "meta":
        return LrnChoice(gpu_kernel(asked, channels_last))
    on_gpu = device.type == "cuda"
    if asked in ("reference", "closed-form"):
        return LrnChoice(asked)
    if asked == "auto" and not on_gpu:
        return LrnChoice("reference")
    if not on_gpu and os.environ.get("TRITON_INTERPRET") != "1":
        return LrnChoice("closed-form", "model.lrn_impl=triton needs a CUDA GPU: the closed form (the same formula) "
                                        "runs on the CPU")
    if gpu_kernel(asked, channels_last) != "triton":
        note = None if asked == "auto" else ("model.lrn_impl=triton: its kernels read channels-last maps "
                                             "uncoalesced; the closed form runs (or set model.channels_last=false)")
        return LrnChoice("closed-form", note)
    failure = triton_failure(device)
    if failure is not None:
        return LrnChoice("closed-form", f"model.lrn_impl={asked}: Triton's LRN failed its check on {device} "
                                        f"({failure}); the closed form runs instead")
    return LrnChoice("triton")


def gpu_kernel(asked: LrnImpl, channels_last: bool) -> LrnKernel:
    """What ``asked`` runs on a GPU where Triton passes its check (what ``alexnet benchmark traffic`` counts)."""
    if asked in ("reference", "closed-form"):
        return asked
    return "closed-form" if channels_last else "triton"


_TRITON_CHECKED: dict[str, str | None] = {}  # device → why Triton failed there (None: it works), once a process


def triton_failure(device: torch.device) -> str | None:
    """Why the Triton LRN cannot run on ``device``, or None: imported, and one tiny forward and backward equal to
    the closed form's (float32 and bf16). Checked once per device and process, eagerly: ``prepare_lrn`` runs it
    before any ``torch.compile`` or CUDA graph captures the network."""
    key = str(device)
    if key not in _TRITON_CHECKED:
        _TRITON_CHECKED[key] = _check_triton(device)
    return _TRITON_CHECKED[key]


# The check's LRN: the paper's constants (models/paper.py, which imports this module) over two towers' maps.
_CHECK = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0, "groups": 2}


def _check_triton(device: torch.device) -> str | None:
    try:
        from alexnet_cli.models.lrn_triton import triton_lrn
    except Exception as exc:  # noqa: BLE001 - no Triton, or one that cannot build for this torch
        return f"cannot import it: {first_line(exc)}"
    # With gradients and without autocast whatever the caller runs under (an eval's inference mode, a
    # benchmark's no_grad): the check must not fail for the caller's reasons, its result is kept.
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
        return _compare_with_closed_form(triton_lrn, device)


def _compare_with_closed_form(triton_lrn, device: torch.device) -> str | None:
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 8, 5, 6, generator=generator) * 30).relu().to(device)
    grad = torch.randn(x.shape, generator=generator).to(device)
    try:
        for dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 2.0**-7)):
            got, want = (x.to(dtype).clone().requires_grad_() for _ in range(2))
            y = triton_lrn(got, **_CHECK)
            y.backward(grad.to(dtype))
            closed_form_lrn(want, **_CHECK).backward(grad.to(dtype))
            expected = closed_form_lrn(want.detach(), **_CHECK)
            for name, a, b in (("forward", y, expected), ("backward", got.grad, want.grad)):
                error = ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-30)).item()
                if not error <= tolerance:
                    return f"its {dtype} {name} differs from the closed form's by {error:.1e}"
    except Exception as exc:  # noqa: BLE001 - a kernel that fails to compile or launch here
        return first_line(exc)
    return None


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x``'s maps are channels-last (NHWC strides) rather than NCHW."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def kernel_function(kernel: LrnKernel):
    """The function that runs ``kernel``; Triton is imported only when it is the one."""
    if kernel == "triton":
        from alexnet_cli.models.lrn_triton import triton_lrn

        return triton_lrn
    return closed_form_lrn if kernel == "closed-form" else reference_lrn
