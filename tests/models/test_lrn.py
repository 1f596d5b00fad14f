"""Both LRN implementations against a float64 evaluation of §3.3's formula, forward and backward."""

import os

import pytest
import torch

from alexnet_cli.models.lrn import closed_form_lrn, reference_lrn, resolve_impl
from alexnet_cli.models.paper import LRN_ALPHA, LRN_BETA, LRN_K, LocalResponseNorm

IMPLS = {"reference": reference_lrn, "closed-form": closed_form_lrn}
if not torch.cuda.is_available():  # on a GPU machine tests/models/test_gpu_speed.py runs the compiled kernels
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are defined: Triton on CPU tensors
    try:
        from alexnet_cli.models.lrn_triton import triton_lrn

        IMPLS["triton"] = triton_lrn
    except ImportError:  # a torch build without Triton: the other two are still checked
        pass

# (channels, groups, size, height, width): odd channel counts and sizes, both tower groupings, tf1-bench's
# window of 9, and an even window (its two sides differ, so a mirrored window in the backward shows).
SHAPES = [(7, 1, 5, 5, 3), (10, 2, 5, 4, 7), (18, 2, 9, 3, 3), (9, 1, 4, 6, 5)]


def formula_float64(a: torch.Tensor, size: int, groups: int, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K):
    """b_i = a_i / (k + α Σ_{j=max(0,i−n/2)}^{min(N−1,i+n/2)} a_j²)^β, written out map by map, per group."""
    a = a.double()
    per_group = a.shape[1] // groups
    out = []
    for c in range(a.shape[1]):
        start = c - c % per_group
        low, high = max(start, c - size // 2), min(start + per_group - 1, c + (size - 1) // 2)
        squares = sum(a[:, j] ** 2 for j in range(low, high + 1))
        out.append(a[:, c] / (k + alpha * squares) ** beta)
    return torch.stack(out, 1)


def _case(shape, memory_format, dtype, seed=0):
    channels, groups, size, height, width = shape
    generator = torch.Generator().manual_seed(seed)
    # ReLU outputs of the size conv1 gives: the window's term α·Σa² then matters against k = 2.
    x = (torch.randn(3, channels, height, width, generator=generator) * 40).relu()
    x = x.to(dtype).contiguous(memory_format=memory_format)
    grad = torch.randn(x.shape, generator=generator).to(dtype).contiguous(memory_format=memory_format)
    return x, grad, size, groups


def _expected(x, grad, size, groups):
    x64 = x.double().requires_grad_()
    y64 = formula_float64(x64, size, groups)
    y64.backward(grad.double())
    return y64.detach(), x64.grad


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "c{}g{}n{}".format(*s[:3]))
def test_float32_forward_and_backward_match_the_formula_in_float64(impl, memory_format, shape):
    x, grad, size, groups = _case(shape, memory_format, torch.float32)
    want_y, want_grad = _expected(x, grad, size, groups)
    x = x.requires_grad_()
    y = IMPLS[impl](x, size, LRN_ALPHA, LRN_BETA, LRN_K, groups)
    y.backward(grad)
    assert y.dtype == x.grad.dtype == torch.float32
    assert (y.double() - want_y).abs().max() <= 1e-6 * want_y.abs().max()
    assert (x.grad.double() - want_grad).abs().max() <= 1e-6 * want_grad.abs().max()


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", SHAPES[1:3], ids=lambda s: "c{}g{}n{}".format(*s[:3]))
def test_bf16_output_is_the_formula_rounded_once(impl, shape, memory_format):
    x, grad, size, groups = _case(shape, memory_format, torch.bfloat16, seed=1)
    want_y, _ = _expected(x, grad, size, groups)
    y = IMPLS[impl](x, size, LRN_ALPHA, LRN_BETA, LRN_K, groups)
    assert y.dtype == torch.bfloat16
    # One bf16 rounding of the exact value: at most 2⁻⁸ of it, element by element.
    assert ((y.double() - want_y).abs() <= 2.0**-8 * want_y.abs() + 1e-30).all()


@pytest.mark.parametrize("impl", list(IMPLS))
def test_a_strided_slice_is_normalised_like_its_copy(impl):
    """A view whose images are not adjacent in memory (every other image of a batch): what the kernels
    index with the input's strides must still land in the output."""
    batch = (torch.randn(6, 10, 5, 4, generator=torch.Generator().manual_seed(5)) * 30).relu()
    view = batch[::2]
    torch.testing.assert_close(IMPLS[impl](view, 5, LRN_ALPHA, LRN_BETA, LRN_K, 2),
                               IMPLS[impl](view.contiguous(), 5, LRN_ALPHA, LRN_BETA, LRN_K, 2))


def test_closed_form_keeps_only_its_input_for_backward():
    """What makes it cheap: the graph holds x, not the squares, the padded copy and the partial sums."""
    x = torch.rand(2, 8, 5, 5, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        closed_form_lrn(x * 1.0, 5, LRN_ALPHA, LRN_BETA, LRN_K, 2)
    assert len(saved) == 1 and saved[0].shape == x.shape


def test_the_module_picks_its_implementation_by_device_unless_told(monkeypatch):
    assert resolve_impl("auto", torch.device("cpu")) == "reference"
    assert resolve_impl("auto", torch.device("cuda", 0)) == "closed-form"
    assert resolve_impl("triton", torch.device("cuda", 0)) == "triton"
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # a GPU run's recipe resumed on a CPU: the same formula
    assert resolve_impl("triton", torch.device("cpu")) == "closed-form"
    x = (torch.randn(2, 12, 6, 6) * 30).relu()
    modules = {impl: LocalResponseNorm(groups=2, impl=impl) for impl in ("reference", "closed-form")}
    torch.testing.assert_close(modules["closed-form"](x), modules["reference"](x), rtol=1e-6, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert modules["closed-form"](x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.skipif("triton" not in IMPLS, reason="this torch build has no Triton")
def test_the_triton_op_is_one_node_that_torch_compile_captures_whole():
    """A custom op: fullgraph capture succeeds (no graph break), forward and backward equal the eager op."""
    x = (torch.randn(2, 10, 5, 4, generator=torch.Generator().manual_seed(3)) * 30).relu()
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    results = []
    for run in (IMPLS["triton"], torch.compile(IMPLS["triton"], backend="aot_eager", fullgraph=True)):
        v = x.clone().requires_grad_()
        run(v, 5, LRN_ALPHA, LRN_BETA, LRN_K, 2).backward(grad)
        results.append(v.grad)
    torch.testing.assert_close(results[1], results[0])
    module = LocalResponseNorm(groups=2, impl="triton")
    torch.testing.assert_close(module(x), closed_form_lrn(x, 5, LRN_ALPHA, LRN_BETA, LRN_K, 2), rtol=1e-6,
                               atol=1e-5)
