"""Every LRN implementation against a float64 evaluation of §3.3's formula, forward and backward, NaN and
infinity included; Triton's kernels run in its interpreter here (tests/conftest.py sets TRITON_INTERPRET)."""

import pytest
import torch

from alexnet_cli.models import lrn as lrn_module
from alexnet_cli.models.lrn import choose_impl, closed_form_lrn, kernel_function, reference_lrn
from alexnet_cli.models.paper import LRN_ALPHA, LRN_BETA, LRN_K, LocalResponseNorm

try:
    import triton
    import triton.language as tl

    from alexnet_cli.models.lrn_triton import _rounded_for, triton_lrn
except ImportError:  # a torch build without Triton: the other implementations are still checked
    triton = None

IMPLS = {"reference": reference_lrn, "closed-form": closed_form_lrn}
if triton is not None and not torch.cuda.is_available():  # on a GPU, test_gpu_speed.py runs the compiled kernels
    IMPLS["triton"] = triton_lrn

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


def test_the_module_picks_its_implementation_by_device_and_layout_unless_told(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert choose_impl("auto", cpu) == lrn_module.LrnChoice("reference")
    monkeypatch.setitem(lrn_module._TRITON_CHECKED, "cuda:0", None)  # Triton passed its check on this "GPU"
    assert choose_impl("auto", cuda) == lrn_module.LrnChoice("triton")  # the least counted traffic
    assert choose_impl("triton", cuda).kernel == "triton"
    assert choose_impl("closed-form", cuda).kernel == "closed-form"
    # Channels-last strides a map's pixels C apart, which Triton's kernels would read uncoalesced.
    assert choose_impl("auto", cuda, channels_last=True) == lrn_module.LrnChoice("closed-form")
    assert "uncoalesced" in choose_impl("triton", cuda, channels_last=True).note
    monkeypatch.setitem(lrn_module._TRITON_CHECKED, "cuda:0", "RuntimeError: no kernel image")
    failed = choose_impl("auto", cuda)
    assert failed.kernel == "closed-form"
    assert "failed its check on cuda:0 (RuntimeError: no kernel image)" in failed.note
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # a GPU run's recipe resumed on a CPU: the same formula
    off_gpu = choose_impl("triton", cpu)
    assert off_gpu.kernel == "closed-form" and "needs a CUDA GPU" in off_gpu.note
    x = (torch.randn(2, 12, 6, 6) * 30).relu()
    modules = {impl: LocalResponseNorm(groups=2, impl=impl) for impl in ("reference", "closed-form")}
    torch.testing.assert_close(modules["closed-form"](x), modules["reference"](x), rtol=1e-6, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert modules["closed-form"](x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.skipif("triton" not in IMPLS, reason="this torch build has no Triton")
def test_with_triton_interpret_a_module_asked_for_triton_runs_the_triton_op(monkeypatch):
    """What the tests of Triton rest on: under the interpreter, ``triton`` on CPU tensors runs the kernels, not
    the closed form that stands in for them elsewhere."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x = (torch.randn(2, 10, 5, 4, generator=torch.Generator().manual_seed(7)) * 30).relu()
    assert kernel_function(choose_impl("triton", x.device).kernel) is IMPLS["triton"]
    ran = []
    with torch.profiler.profile() as profile:
        LocalResponseNorm(5, groups=2, impl="triton")(x)
    ran = {event.name for event in profile.events()}
    assert "alexnet_cli::lrn" in ran, sorted(ran)


@pytest.mark.skipif("triton" not in IMPLS, reason="this torch build has no Triton")
def test_the_triton_check_passes_here_and_fails_on_kernels_that_differ(monkeypatch):
    from alexnet_cli.models import lrn_triton

    assert lrn_module._check_triton(torch.device("cpu")) is None  # the interpreter runs the kernels
    with torch.inference_mode():  # an evaluation's mode: the check keeps its own
        assert lrn_module._check_triton(torch.device("cpu")) is None
    monkeypatch.setattr(lrn_triton, "triton_lrn", lambda x, **constants: closed_form_lrn(x, **constants) * 1.01)
    failure = lrn_module._check_triton(torch.device("cpu"))
    assert failure is not None and "forward differs from the closed form's" in failure


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


def non_finite_case(dtype: torch.dtype, device: str = "cpu"):
    """ReLU-sized maps with a NaN, a +inf and a −inf in different images and groups, and a gradient."""
    generator = torch.Generator().manual_seed(11)
    x = (torch.randn(2, 14, 3, 4, generator=generator) * 30).relu()
    x[0, 2, 1, 1], x[0, 9, 0, 2], x[1, 12, 2, 3], x[1, 4, 0, 0] = float("nan"), float("inf"), -float("inf"), 0.0
    grad = torch.randn(x.shape, generator=generator)
    return x.to(dtype).to(device), grad.to(dtype).to(device)


def check_non_finite(impl, dtype: torch.dtype, device: str = "cpu") -> None:
    """NaN in → NaN out; ±inf in → NaN there and 0 for its finite neighbours; the gradient's NaNs where the
    formula's autograd puts them; everything finite as exact as for finite inputs."""
    x, grad = non_finite_case(dtype, device)
    x64 = x.double().cpu().requires_grad_()
    want = formula_float64(x64, 5, 2)
    want.backward(grad.double().cpu())
    v = x.detach().requires_grad_()
    y = impl(v, 5, LRN_ALPHA, LRN_BETA, LRN_K, 2)
    y.backward(grad)
    y, got_grad = y.double().cpu(), v.grad.double().cpu()
    # the NaN's window (maps 0-4 of its group), and the two infinities themselves
    assert torch.equal(y.isnan(), want.isnan()) and want.isnan().sum() == 7
    assert torch.equal(y == 0, want == 0)  # the infinities' neighbours, and the zero input
    finite = want.isfinite()
    assert ((y - want).abs()[finite] <= 2.0**-7 * want.abs()[finite] + 1e-6).all()
    assert torch.equal(got_grad.isnan(), x64.grad.isnan()) and x64.grad.isnan().any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("impl", list(IMPLS))
def test_nan_and_infinity_go_through_every_implementation_as_the_formula_gives_them(impl, dtype):
    check_non_finite(IMPLS[impl], dtype)


def test_nan_and_infinity_go_through_the_compiled_closed_form():
    """Inductor's own code (C++ here, Triton on a GPU: test_gpu_speed.py) for the closed form, in bf16."""
    compiled = torch.compile(closed_form_lrn, backend="inductor", fullgraph=True, dynamic=False)
    check_non_finite(compiled, torch.bfloat16)


@pytest.mark.skipif("triton" not in IMPLS, reason="this torch build has no Triton")
def test_bf16_rounding_is_to_nearest_even_with_nans_kept_as_nans():
    """``_rounded_for`` on the bits that matter: the GPU's canonical NaN (0x7FFFFFFF), which a plain rounding bias
    carries into −0.0, the CPU's (0x7FC00000), a negative NaN, ±inf, the largest float (rounds up to inf), ties
    to even both ways and a value just above a tie. The interpreter's own conversion truncates (the last line
    shows it): the bit rounding is what makes the two agree."""
    words = [0x7FFFFFFF, 0x7FC00000, 0xFFFFFFFF, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0x3F808000, 0x3F818000,
             0x3F808001, 0x00000001]
    x = torch.tensor(words, dtype=torch.int64).to(torch.int32).view(torch.float32)
    y, plain = torch.empty(len(x), dtype=torch.bfloat16), torch.empty(len(x), dtype=torch.bfloat16)
    _rounded_kernel[(1,)](x, y, plain, len(x), BLOCK=16)
    expected = x.to(torch.bfloat16)  # torch rounds to nearest even
    assert torch.equal(y.isnan(), x.isnan()) and x.isnan().sum() == 3
    finite = ~x.isnan()
    assert torch.equal(y[finite].view(torch.int16), expected[finite].view(torch.int16))
    assert y[5] == float("inf") and y.view(torch.int16)[7] == 0x3F82 and y.view(torch.int16)[6] == 0x3F80
    assert plain.view(torch.int16)[7] == 0x3F81  # truncated: what the kernels would store without the rounding


if triton is not None:
    @triton.jit
    def _rounded_kernel(x_ptr, y_ptr, plain_ptr, n, BLOCK: tl.constexpr):
        """Each value as ``_rounded_for`` stores it in bf16, and as a plain cast does."""
        offsets = tl.arange(0, BLOCK)
        mask = offsets < n
        value = tl.load(x_ptr + offsets, mask=mask)
        tl.store(y_ptr + offsets, _rounded_for(value, y_ptr), mask=mask)
        tl.store(plain_ptr + offsets, value.to(tl.bfloat16), mask=mask)
