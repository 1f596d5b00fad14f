"""Local response normalisation (§3.3), b = a / (k + α Σ a²)^β over ``size`` adjacent maps, two ways.

``reference``: shifted adds of the squares under autograd, which keeps every intermediate for the
backward pass (on a GPU the two LRN layers of the paper's net moved ~22 GB per step that way).
``closed_form``: an autograd Function that keeps only its input and recomputes the window in the
backward pass from the closed-form gradient

    ∂L/∂a_j = g_j d_j^-β − 2αβ a_j Σ_{i: j ∈ W(i)} g_i a_i d_i^(−β−1),
    d_i = k + α Σ_{j ∈ W(i)} a_j²

so that ``torch.compile`` can fuse the forward into one read of a and one write of b, and the
backward into two passes; ``triton`` (``models/lrn_triton.py``) is the same closed form as hand-written
kernels, for where the compiled one is not fast enough. Both compute in float32 whatever the input's dtype (bf16's 8-bit
mantissa cannot hold k + α·Σa², 2 plus a term ~1e-4 of it) and return the input's dtype.
The window of map i is [i − size//2, i + (size−1)//2], inside its group of maps (one group per tower).
"""

import os
from typing import Literal

import torch
import torch.nn.functional as F

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


def resolve_impl(impl: LrnImpl, device: torch.device) -> Literal["reference", "closed-form", "triton"]:
    """``auto``: the closed form on a GPU, where memory traffic is the LRN's cost; the reference on a CPU,
    where it measured as fast or faster (docs/benchmarks.md) and the tests have long pinned its numbers.
    ``triton`` off a GPU (a GPU run's recipe resumed or evaluated on a CPU) is the closed form it implements,
    unless Triton's interpreter is on (``TRITON_INTERPRET=1``, the tests)."""
    if impl == "auto":
        return "closed-form" if device.type == "cuda" else "reference"
    if impl == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return "closed-form"
    return impl


def lrn_function(impl: LrnImpl, device: torch.device):
    """The implementation ``impl`` names, for tensors on ``device``. Triton is imported only when asked for."""
    chosen = resolve_impl(impl, device)
    if chosen == "triton":
        from alexnet_cli.models.lrn_triton import triton_lrn

        return triton_lrn
    return closed_form_lrn if chosen == "closed-form" else reference_lrn
