"""``alexnet benchmark traffic``: the bytes and FLOPs of one training step, counted op by op, and the speed they
allow on a GPU by the roofline.

Why count rather than time: a GPU is not always at hand, and a step of this network is bound by memory traffic
more than by arithmetic (the LRN and the elementwise ops), which a CPU can count exactly. The step is the one
``alexnet train`` runs (forward, loss, backward, the non-finite check, the fused SGD update) on meta tensors,
which carry shapes and dtypes but no data, with every choice made as on a CUDA device:

- the LRN implementation that ``model.lrn_impl`` resolves to on a GPU where Triton passes its check;
- ``bf16-mixed`` / ``16-mixed`` autocast as CUDA applies it (``CudaAutocast``): convolutions and matrix
  products read a half-precision copy of their float32 weights made each step, their outputs stay in half
  precision, the loss runs in float32, the weights and momentum stay float32 ("master weights");
- dropout as CUDA's fused kernel (a one-byte mask), max pooling with its int64 indices.

Each op reads its tensor inputs and writes its outputs once (views and allocations move nothing); a custom op
whose kernels the counter cannot see is counted by the byte formula registered beside it (``models/op_bytes``),
never as zero. FLOPs are the matrix work (convolutions, matrix products), at the card's tensor-core rate for
the op's dtype. The roofline time of an op is the longer of its bytes at the card's bandwidth and its FLOPs at
that rate; the step's is their sum (one stream, kernels one after another): a lower bound that no real kernel
reaches, so the img/s it gives is an upper bound.
"""

import math
from dataclasses import dataclass, field, replace
from functools import partial

import torch

from alexnet_cli.bench.op_count import (
    CARDS,
    CudaAutocast,
    OpCount,
    OpCounter,
    StepCount,
    aot_boundary_bytes,
    autocast_dtype,
    count_training_step,
    lrn_region,
)
from alexnet_cli.models.build import build_network
from alexnet_cli.models.lrn import LrnKernel, closed_form_lrn, gpu_kernel
from alexnet_cli.models.paper import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, LocalResponseNorm
from alexnet_cli.recipes import Recipe
from alexnet_cli.training.plan import crop_size


def count_step(recipe: Recipe, num_classes: int, *, batch_size: int, lrn: LrnKernel) -> StepCount:
    """One training step of ``recipe``'s network at ``batch_size``, its LRN layers run by ``lrn``."""
    precision = recipe.trainer.precision_name
    with torch.device("meta"):
        model = build_network(replace(recipe.model, lrn_impl=lrn), num_classes)
    crop = crop_size(recipe)
    images = torch.empty(batch_size, 3, crop, crop, device="meta")
    if recipe.model.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.empty(batch_size, dtype=torch.int64, device="meta")
    return replace(count_training_step(model, images, labels, precision), lrn=lrn)


def compiled_lrn_step(eager: StepCount) -> StepCount:
    """``eager`` (a closed-form step) with its LRN layers compiled: each layer's ops replaced by the boundaries of
    its compiled forward and backward, the rest as counted."""
    compiled = []
    for shape, dtype, size, alpha, beta, k, groups in eager.lrn_calls:
        read, written = _compiled_lrn_bytes(torch.empty(shape, dtype=dtype, device="meta"), size, alpha, beta, k,
                                            groups)
        compiled.append(OpCount("compiled closed form (graph boundaries)", "LRN", read, written))
    kept = [op for op in eager.ops if op.category != "LRN"]
    return StepCount(kept + compiled, "closed-form", lower_bound=True, lrn_calls=eager.lrn_calls)


def _compiled_lrn_bytes(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                        groups: int) -> tuple[int, int]:
    """(read, written) by the compiled closed form's forward and backward graphs at ``x``'s boundaries."""
    return aot_boundary_bytes(partial(closed_form_lrn, size=size, alpha=alpha, beta=beta, k=k, groups=groups), x)


def lrn_layer_bytes(kernel: LrnKernel, shape: tuple[int, ...], dtype: torch.dtype, groups: int, *,
                    channels_last: bool = False, compiled: bool = False) -> int:
    """What one LRN layer's forward and backward move at ``shape`` (the paper's constants): counted op by op
    for an eager ``kernel``, its graphs' boundaries (a lower bound) when ``compiled``."""
    x = torch.empty(shape, dtype=dtype, device="meta")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if compiled:
        return sum(_compiled_lrn_bytes(x, LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K, groups))
    layer = LocalResponseNorm(LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K, groups=groups, impl=kernel)
    counter = OpCounter(lambda tensor: None)
    with lrn_region(layer, counter), counter:
        y = layer(x.requires_grad_())
        y.backward(torch.empty_like(y))
    return sum(op.bytes for op in counter.ops if op.category == "LRN")


# What ``model.compile`` leaves outside the compiled network: the loss, the check and the update.
_OUTSIDE_THE_NETWORK = ("loss", "non-finite check", "optimizer")


def compiled_network_step(recipe: Recipe, num_classes: int, eager: StepCount, batch_size: int) -> StepCount:
    """``model.compile``: the network (its autocast casts included) counted by the boundaries of its compiled
    forward and backward graphs, the loss, the check and the update as ``eager`` counted them."""
    with torch.device("meta"):
        model = build_network(replace(recipe.model, lrn_impl=eager.lrn), num_classes)
    crop = crop_size(recipe)
    images = torch.empty(batch_size, 3, crop, crop, device="meta")
    params = dict(model.named_parameters())

    def network(x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, dict(zip(params, weights)), (x,))

    with CudaAutocast(autocast_dtype(recipe.trainer.precision_name)):
        read, written = aot_boundary_bytes(network, images, *params.values())
    kept = [op for op in eager.ops if op.category in _OUTSIDE_THE_NETWORK]
    compiled = OpCount("compiled network (graph boundaries)", "compiled network", read, written)
    # The matrix work stays (cuDNN and cuBLAS kernels inside the compiled graph), at no bytes of its own.
    matrices = [replace(op, bytes_read=0, bytes_written=0) for op in eager.ops if op.flops]
    return StepCount([compiled, *matrices, *kept], eager.lrn, lower_bound=True, lrn_calls=eager.lrn_calls)


def _round(value: float) -> float:
    return float(f"{value:.4g}") if value and math.isfinite(value) else value


@dataclass
class Implementation:
    """One way of running the LRN layers, and the step it gives."""

    name: str  # reference, closed-form, triton, closed-form compiled
    lrn_bytes: int
    total_bytes: int
    total_flops: int
    roofline_ms: dict[str, float]
    roofline_img_s: dict[str, float]
    lower_bound: bool  # compiled: its graphs' boundaries only
    default: bool  # what the recipe runs on a GPU


@dataclass
class TrafficReport:
    """The recipe's step as it runs on a GPU, beside each LRN implementation it could run."""

    recipe: str
    arch: str
    batch_size: int
    precision: str
    channels_last: bool
    lrn_impl: str  # the recipe's model.lrn_impl
    runs: str  # what it resolves to on a GPU (or "compiled network")
    lower_bound: bool
    total_bytes: int
    total_flops: int
    by_category: dict[str, dict[str, int]]
    roofline_ms: dict[str, float]  # per card
    roofline_img_s: dict[str, float]
    implementations: list[Implementation] = field(default_factory=list)
    cards: dict[str, dict] = field(default_factory=lambda: {c.name: {"bandwidth_bytes_s": c.bandwidth,
                                                                     "matrix_flops_s": c.matrix_flops}
                                                            for c in CARDS})


def roofline(step: StepCount, batch_size: int) -> tuple[dict[str, float], dict[str, float]]:
    """The step's roofline milliseconds and images per second on each card."""
    seconds = {card.name: step.roofline_seconds(card) for card in CARDS}
    return ({name: _round(1e3 * s) for name, s in seconds.items()},
            {name: _round(batch_size / s) for name, s in seconds.items()})


def traffic_report(recipe: Recipe, *, batch_size: int | None = None) -> TrafficReport:
    """Count ``recipe``'s training step as a GPU runs it by default, and with each LRN implementation."""
    batch = batch_size or recipe.data.batch_size
    num_classes = recipe.model.num_classes or 1000  # ImageNet's, when the recipe leaves it to the dataset
    default_kernel = gpu_kernel(recipe.model.lrn_impl, recipe.model.channels_last)
    steps = {kernel: count_step(recipe, num_classes, batch_size=batch, lrn=kernel)
             for kernel in ("reference", "closed-form", "triton")}
    default = steps[default_kernel]
    runs = default_kernel if default.lrn_calls else "no LRN layers"
    if recipe.model.compile:
        default, runs = compiled_network_step(recipe, num_classes, default, batch), "compiled network"
    implementations = []
    if default.lrn_calls:
        variants = {**steps, "closed-form compiled": compiled_lrn_step(steps["closed-form"])}
        for name, step in variants.items():
            ms, img_s = roofline(step, batch)
            implementations.append(Implementation(
                name, step.by_category().get("LRN", {}).get("bytes", 0), step.total_bytes, step.total_flops, ms,
                img_s, step.lower_bound, default=name == default_kernel and not recipe.model.compile))
    ms, img_s = roofline(default, batch)
    return TrafficReport(recipe.name, recipe.model.arch, batch, recipe.trainer.precision_name,
                         recipe.model.channels_last, recipe.model.lrn_impl, runs, default.lower_bound,
                         default.total_bytes, default.total_flops, default.by_category(), ms, img_s,
                         implementations)
