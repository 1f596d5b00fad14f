"""The speed switches on a real GPU: the Triton LRN compiled for the card, and inductor's code for the whole
step. Skipped without CUDA; ``scripts/gpu-check.sh`` runs them (``pytest -m gpu``)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from test_lrn import SHAPES, _case, _expected, check_non_finite

from alexnet_cli.models import build_model
from alexnet_cli.models.execution import CompileOptions, apply_execution, compile_in_place
from alexnet_cli.models.lrn import closed_form_lrn, reference_lrn
from alexnet_cli.models.paper import LRN_ALPHA, LRN_BETA, LRN_K
from alexnet_cli.recipes import OptimConfig
from alexnet_cli.training.optimizer import sgd

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "c{}g{}n{}".format(*s[:3]))
def test_the_triton_lrn_on_the_gpu_matches_the_formula_in_float64(shape, memory_format):
    from alexnet_cli.models.lrn_triton import triton_lrn

    x, grad, size, groups = _case(shape, memory_format, torch.float32)
    want_y, want_grad = _expected(x, grad, size, groups)
    x = x.cuda().requires_grad_()
    y = triton_lrn(x, size, LRN_ALPHA, LRN_BETA, LRN_K, groups)
    y.backward(grad.cuda())
    assert (y.double().cpu() - want_y).abs().max() <= 1e-6 * want_y.abs().max()
    assert (x.grad.double().cpu() - want_grad).abs().max() <= 1e-6 * want_grad.abs().max()
    bf16 = triton_lrn(x.detach().bfloat16(), size, LRN_ALPHA, LRN_BETA, LRN_K, groups).double().cpu()
    exact, _ = _expected(x.detach().bfloat16().cpu(), grad, size, groups)
    assert ((bf16 - exact).abs() <= 2.0**-8 * exact.abs() + 1e-30).all()


def test_an_inductor_compiled_fp32_step_equals_an_eager_one_after_three_steps():
    """One compile (about a minute of the check's five): the closed form, channels-last and split groups."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # compare fp32 with fp32
    torch.manual_seed(0)
    eager = build_model("paper", 10, 0.0, init="kaiming", fc_width=256).cuda()
    compiled = apply_execution(copy.deepcopy(eager), lrn_impl="closed-form", channels_last=True,
                               split_groups=True)
    compile_in_place(compiled, CompileOptions())
    images = torch.randn(16, 3, 227, 227, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    labels = torch.arange(16, device="cuda") % 10
    for model in (eager, compiled):
        optimizer = sgd(model, OptimConfig(lr=0.01), 0.01)
        for _ in range(3):
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
    torch.testing.assert_close(compiled(images), eager(images), rtol=1e-4, atol=1e-4)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        assert (b - a).abs().max() <= 1e-4 * a.abs().max(), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("impl", ["reference", "closed-form", "closed-form compiled", "triton"])
def test_nan_and_infinity_go_through_every_implementation_on_the_gpu(impl, dtype):
    """As on the CPU (test_lrn.py), with the GPU's own NaN (0x7FFFFFFF, which a plain rounding bias turns into
    −0.0 in bf16) and Inductor's and Triton's GPU code."""
    from alexnet_cli.models.lrn_triton import triton_lrn

    implementations = {"reference": reference_lrn, "closed-form": closed_form_lrn, "triton": triton_lrn,
                       "closed-form compiled": torch.compile(closed_form_lrn, fullgraph=True, dynamic=False)}
    check_non_finite(implementations[impl], dtype, device="cuda")


def test_bf16_rounding_on_the_gpu_is_to_nearest_even_with_nans_kept_as_nans():
    from test_lrn import _rounded_kernel

    words = [0x7FFFFFFF, 0x7FC00000, 0xFFFFFFFF, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0x3F808000, 0x3F818000,
             0x3F808001, 0x00000001]
    x = torch.tensor(words, dtype=torch.int64).to(torch.int32).view(torch.float32).cuda()
    y, plain = (torch.empty(len(x), dtype=torch.bfloat16, device="cuda") for _ in range(2))
    _rounded_kernel[(1,)](x, y, plain, len(x), BLOCK=16)
    expected = x.cpu().to(torch.bfloat16)
    y = y.cpu()
    assert torch.equal(y.isnan(), expected.isnan()) and y.isnan().sum() == 3
    finite = ~expected.isnan()
    assert torch.equal(y[finite].view(torch.int16), expected[finite].view(torch.int16))
