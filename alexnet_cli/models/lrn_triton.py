"""The closed-form LRN (``models/lrn.py``) as Triton kernels behind a ``torch.library`` custom op.

Forward: one kernel reads x and writes y. Backward: two kernels, the first writes
t_i = g_i a_i d_i^(−β−1) (float32), the second reads the mirrored window of t and writes the input's
gradient; both recompute d from x instead of storing it. Each program handles one map of one image over a
block of pixels; the window's ``size`` neighbouring maps are read in the order the reference sums them, and
d^−β is exp2(−β log2 d): the results agree with the reference to float32 rounding (tests/models/test_lrn.py,
test_gpu_speed.py). NCHW and channels-last alike; any other layout is made contiguous first.

A custom op (not an autograd Function around a kernel launch) so that ``torch.compile`` and CUDA graphs
treat it as one opaque node instead of breaking the graph. Imported only when ``model.lrn_impl=triton``:
CPU-only torch builds may lack Triton. ``TRITON_INTERPRET=1`` (set before this import) runs the kernels on
CPU tensors, which is how the tests check them.
"""

import torch
import triton
import triton.language as tl

from alexnet_cli.models.op_bytes import register_op_bytes

BLOCK = 256  # pixels per program


@triton.jit
def _rounded_for(value, ptr):
    """float32 ``value`` in ``ptr``'s element type, rounded to nearest even. For bf16 the rounding is done on
    the bits, after which the cast only drops zeros: Triton's interpreter (the CPU tests) truncates instead
    of rounding, which the exactness test would catch as two roundings' error. A NaN is kept a NaN: adding
    the rounding bias to the GPU's canonical NaN (0x7FFFFFFF) would carry into the sign bit and give −0.0,
    which would hide a NaN from the non-finite-step guard."""
    if ptr.dtype.element_ty == tl.float32:
        return value
    elif ptr.dtype.element_ty == tl.bfloat16:
        bits = value.to(tl.uint32, bitcast=True)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        bits = tl.where(value != value, 0x7FC00000, rounded)  # a quiet NaN, whatever the NaN's payload
        return bits.to(tl.float32, bitcast=True).to(tl.bfloat16)
    else:
        return value.to(ptr.dtype.element_ty)


@triton.jit
def _denominator(x_row, c, group_start, per_group, stride_c, mask, alpha, k,
                 SIZE: tl.constexpr, BEFORE: tl.constexpr, BLOCK: tl.constexpr):
    # tl.full, not tl.zeros: a @jit helper that TRITON_INTERPRET misses when Triton was imported before it was set
    total = tl.full([BLOCK], 0.0, dtype=tl.float32)
    for j in tl.static_range(SIZE):
        neighbour = c - BEFORE + j
        inside = (neighbour >= group_start) & (neighbour < group_start + per_group)
        value = tl.load(x_row + neighbour * stride_c, mask=mask & inside, other=0.0).to(tl.float32)
        total += value * value
    return k + alpha * total


@triton.jit
def _program(x_ptr, pixels, per_group, stride_n, stride_c, stride_p, alpha, k,
             SIZE: tl.constexpr, BEFORE: tl.constexpr, BLOCK: tl.constexpr):
    """This program's map c, its pixels (offsets from the tensor's start and mask), its group's first map and
    the denominator k + α Σ a² of its pixels."""
    n, c, block = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offsets = block * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < pixels
    row = n * stride_n + offsets * stride_p
    group_start = (c // per_group) * per_group
    d = _denominator(x_ptr + row, c, group_start, per_group, stride_c, mask, alpha, k, SIZE, BEFORE, BLOCK)
    return c, row, mask, group_start, d


@triton.jit
def _forward_kernel(x_ptr, y_ptr, pixels, per_group, stride_n, stride_c, stride_p, alpha, beta, k,
                    SIZE: tl.constexpr, BEFORE: tl.constexpr, BLOCK: tl.constexpr):
    c, row, mask, group_start, d = _program(x_ptr, pixels, per_group, stride_n, stride_c, stride_p, alpha, k,
                                            SIZE, BEFORE, BLOCK)
    x = tl.load(x_ptr + row + c * stride_c, mask=mask, other=0.0).to(tl.float32)
    y = x * tl.exp2(-beta * tl.log2(d))
    tl.store(y_ptr + row + c * stride_c, _rounded_for(y, y_ptr), mask=mask)


@triton.jit
def _through_neighbours_kernel(x_ptr, g_ptr, t_ptr, pixels, per_group, stride_n, stride_c, stride_p,
                               alpha, beta, k, SIZE: tl.constexpr, BEFORE: tl.constexpr, BLOCK: tl.constexpr):
    c, row, mask, group_start, d = _program(x_ptr, pixels, per_group, stride_n, stride_c, stride_p, alpha, k,
                                            SIZE, BEFORE, BLOCK)
    x = tl.load(x_ptr + row + c * stride_c, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + row + c * stride_c, mask=mask, other=0.0).to(tl.float32)
    t = g * x * tl.exp2(-beta * tl.log2(d)) / d
    tl.store(t_ptr + row + c * stride_c, t, mask=mask)


@triton.jit
def _backward_kernel(x_ptr, g_ptr, t_ptr, dx_ptr, pixels, per_group, stride_n, stride_c, stride_p,
                               alpha, beta, k, SIZE: tl.constexpr, BEFORE: tl.constexpr, BLOCK: tl.constexpr):
    c, row, mask, group_start, d = _program(x_ptr, pixels, per_group, stride_n, stride_c, stride_p, alpha, k,
                                            SIZE, BEFORE, BLOCK)
    spread = tl.full([BLOCK], 0.0, dtype=tl.float32)
    for j in tl.static_range(SIZE):  # map c sits in the windows of [c − (SIZE−1−BEFORE), c + BEFORE]
        neighbour = c - (SIZE - 1 - BEFORE) + j
        inside = (neighbour >= group_start) & (neighbour < group_start + per_group)
        spread += tl.load(t_ptr + row + neighbour * stride_c, mask=mask & inside, other=0.0)
    x = tl.load(x_ptr + row + c * stride_c, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + row + c * stride_c, mask=mask, other=0.0).to(tl.float32)
    dx = g * tl.exp2(-beta * tl.log2(d)) - (2.0 * alpha * beta) * x * spread
    tl.store(dx_ptr + row + c * stride_c, _rounded_for(dx, dx_ptr), mask=mask)


def _geometry(x: torch.Tensor, groups: int) -> tuple:
    """(grid, pixels, per-group maps, strides of image, map and pixel) for a 4-d tensor whose pixels of one
    map are evenly strided, as NCHW and channels-last both are."""
    batch, channels, height, width = x.shape
    if x.stride(2) != width * x.stride(3):
        raise ValueError(f"LRN input strides {x.stride()} are neither NCHW nor channels-last")
    pixels = height * width
    return (batch, channels, triton.cdiv(pixels, BLOCK)), pixels, channels // groups, (x.stride(0), x.stride(1),
                                                                                       x.stride(3))


def _dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` if it is NCHW- or channels-last-contiguous, else a contiguous copy: every buffer the kernels
    write is ``empty_like(x)`` and is indexed with x's strides, which only a dense layout guarantees."""
    return x if _is_dense(x) else x.contiguous()


def _is_dense(x: torch.Tensor) -> bool:
    return x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)


@torch.library.custom_op("alexnet_cli::lrn", mutates_args=())
def lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int) -> torch.Tensor:
    x = _dense(x)
    y = torch.empty_like(x)
    grid, pixels, per_group, strides = _geometry(x, groups)
    _forward_kernel[grid](x, y, pixels, per_group, *strides, alpha, beta, k, SIZE=size, BEFORE=size // 2,
                          BLOCK=BLOCK)
    return y


@lrn.register_fake
def _(x, size, alpha, beta, k, groups):
    return torch.empty_like(_dense(x))


@torch.library.custom_op("alexnet_cli::lrn_backward", mutates_args=())
def lrn_backward(grad: torch.Tensor, x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                 groups: int) -> torch.Tensor:
    x = _dense(x)
    grad = grad if grad.stride() == x.stride() else torch.empty_like(x).copy_(grad)  # one layout for all three
    through = torch.empty_like(x, dtype=torch.float32)
    grad_x = torch.empty_like(x)
    grid, pixels, per_group, strides = _geometry(x, groups)
    constants = dict(SIZE=size, BEFORE=size // 2, BLOCK=BLOCK)
    _through_neighbours_kernel[grid](x, grad, through, pixels, per_group, *strides, alpha, beta, k, **constants)
    _backward_kernel[grid](x, grad, through, grad_x, pixels, per_group, *strides, alpha, beta, k, **constants)
    return grad_x


@lrn_backward.register_fake
def _(grad, x, size, alpha, beta, k, groups):
    return torch.empty_like(_dense(x))


def _setup_context(ctx, inputs, output) -> None:
    x, *constants = inputs
    ctx.save_for_backward(x)
    ctx.constants = constants


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return lrn_backward(grad, x, *ctx.constants), None, None, None, None, None


lrn.register_autograd(_backward, setup_context=_setup_context)


def _copy_bytes(x: torch.Tensor) -> int:
    """What ``_dense`` moves: nothing for a dense ``x``, a read and a write of it otherwise."""
    return 0 if _is_dense(x) else x.numel() * x.element_size()


@register_op_bytes("alexnet_cli::lrn")
def _forward_bytes(inputs: list, outputs: list) -> tuple[int, int]:
    """One kernel: reads x, writes y (the window's neighbouring maps come from cache)."""
    (x,), (y,) = inputs, outputs
    copy = _copy_bytes(x)
    return x.numel() * x.element_size() + copy, y.numel() * y.element_size() + copy


@register_op_bytes("alexnet_cli::lrn_backward")
def _backward_bytes(inputs: list, outputs: list) -> tuple[int, int]:
    """Two kernels: the first reads x and the gradient and writes the float32 scratch t, the second reads t, x
    and the gradient and writes the input's gradient."""
    (grad, x), (grad_x,) = inputs, outputs
    element, scratch = x.element_size(), x.numel() * 4
    copies = _copy_bytes(x) + (0 if grad.stride() == x.stride() else grad.numel() * grad.element_size())
    read = 2 * (x.numel() * element + grad.numel() * grad.element_size()) + scratch
    return read + copies, scratch + grad_x.numel() * grad_x.element_size() + copies


def triton_lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int) -> torch.Tensor:
    """The closed-form LRN as Triton kernels; same signature as ``models/lrn.py``'s implementations."""
    return lrn(x, size, alpha, beta, k, groups)
