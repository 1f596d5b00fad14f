"""One training step counted op by op on meta tensors: the bytes each op reads and writes and the FLOPs of its
matrix work, with CUDA's autocast and kernels emulated (``alexnet benchmark traffic``, bench/traffic.py, says why
and reports it). ``count_training_step`` counts any network; ``aot_boundary_bytes`` bounds a compiled one."""

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from functorch.compile import aot_function, make_boxed_func, min_cut_rematerialization_partition
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import conv_flop_count, flop_registry

from alexnet_cli.errors import AlexnetError
from alexnet_cli.models.lrn import LrnKernel
from alexnet_cli.models.op_bytes import op_bytes_formula
from alexnet_cli.models.paper import LocalResponseNorm

aten = torch.ops.aten


@dataclass(frozen=True)
class Card:
    """What bounds a step on a GPU: its memory bandwidth and its dense tensor-core rates."""

    name: str
    bandwidth: float  # bytes/s
    matrix_flops: dict[str, float]  # FLOP/s by the dtype the matrix op reads

    def seconds(self, bytes_moved: int, flops: int, dtype: str | None) -> float:
        compute = flops / self.matrix_flops[dtype] if flops else 0.0
        return max(bytes_moved / self.bandwidth, compute)


# NVIDIA's data sheets, SXM parts, dense (no sparsity). float32 convolutions run on TF32 tensor cores (cuDNN's
# default in PyTorch, torch.backends.cudnn.allow_tf32); float32 matrix products on the CUDA cores (PyTorch's
# default, torch.backends.cuda.matmul.allow_tf32 = False).
_HOPPER_RATES = {"bfloat16": 989e12, "float16": 989e12, "tf32": 494.7e12, "float32": 66.9e12}
CARDS = (Card("H100", 3.35e12, _HOPPER_RATES), Card("H200", 4.8e12, _HOPPER_RATES))

# Categories in the order the table lists them (convolutions get one row per layer and pass, in between).
CATEGORIES = ("LRN", "pooling", "linear", "elementwise", "casts", "loss", "non-finite check", "optimizer")


@dataclass
class OpCount:
    """One op of the step (or one pass of a convolution's backward)."""

    op: str
    category: str
    bytes_read: int
    bytes_written: int
    flops: int = 0
    matrix_dtype: str | None = None  # what the FLOPs run as (bfloat16, tf32, ...)

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written


@dataclass
class StepCount:
    """Every op of one training step, and what they add up to."""

    ops: list[OpCount]
    lrn: LrnKernel | None = None  # what ran the LRN layers, where the count was made for a choice of it
    lower_bound: bool = False  # a compiled part is counted by its graphs' boundaries only
    lrn_calls: list[tuple] = field(default_factory=list)  # each LRN layer's (shape, dtype, size, α, β, k, groups)

    @property
    def total_bytes(self) -> int:
        return sum(op.bytes for op in self.ops)

    @property
    def total_flops(self) -> int:
        return sum(op.flops for op in self.ops)

    def by_category(self) -> dict[str, dict[str, int]]:
        totals: dict[str, dict[str, int]] = {}
        for op in self.ops:
            row = totals.setdefault(op.category, {"bytes": 0, "flops": 0})
            row["bytes"] += op.bytes
            row["flops"] += op.flops
        order = {name: index for index, name in enumerate(CATEGORIES)}
        return dict(sorted(totals.items(), key=lambda item: (order.get(item[0], -1), _layer_order(item[0]))))

    def roofline_seconds(self, card: Card) -> float:
        return sum(card.seconds(op.bytes, op.flops, op.matrix_dtype) for op in self.ops)


def _layer_order(category: str) -> tuple:
    """conv1 forward, conv1 data-grad, conv1 weight-grad, conv2 forward, ...: by layer, then by pass."""
    layer, _, kind = category.partition(" ")
    passes = ("forward", "data-grad", "weight-grad")
    return (layer, passes.index(kind) if kind in passes else len(passes))


# --- emulating CUDA's autocast and kernels on meta tensors ---------------------------------------------------------

# CUDA autocast's lists (aten/src/ATen/autocast_mode.cpp) for the functions this project's networks call.
_LOWER_PRECISION = {F.conv1d, F.conv2d, F.conv3d, F.linear, torch.conv2d, torch.addmm, torch.mm, torch.matmul,
                    torch.bmm, torch.baddbmm}
_FLOAT32 = {F.cross_entropy, F.log_softmax, F.softmax, F.nll_loss}


class CudaAutocast(TorchFunctionMode):
    """``torch.autocast("cuda", dtype)`` for meta tensors, above autograd as the real one is (its casts are
    recorded and their backward casts the gradients back), with CUDA's fused dropout kernel."""

    def __init__(self, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.dtype = dtype
        self.cast_of: dict[int, torch.Tensor] = {}  # a parameter's copy, made once a step as autocast caches it

    def _cast(self, value, dtype: torch.dtype):
        if not (isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype):
            return value
        if isinstance(value, nn.Parameter):
            if id(value) not in self.cast_of:
                self.cast_of[id(value)] = value.to(dtype)
            return self.cast_of[id(value)]
        return value.to(dtype)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.dropout and kwargs.get("training", args[2] if len(args) > 2 else True):
            p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
            if 0 < p < 1:  # CUDA's kernel: one pass writing the output and a bool mask (at::native_dropout)
                return torch.native_dropout(args[0], p, True)[0]
        if self.dtype is not None and func in _LOWER_PRECISION:
            args = tuple(self._cast(a, self.dtype) for a in args)
            kwargs = {k: self._cast(v, self.dtype) for k, v in kwargs.items()}
        elif self.dtype is not None and func in _FLOAT32:
            args = tuple(self._cast(a, torch.float32) if i == 0 else a for i, a in enumerate(args))
        return func(*args, **kwargs)


# Ops that move no data: views, allocations, and bookkeeping.
_NO_TRAFFIC = {aten.empty.memory_format, aten.empty_like.default, aten.empty_strided.default,
               aten.new_empty.default, aten.new_empty_strided.default, aten.detach.default, aten.alias.default,
               aten._unsafe_view.default, aten.lift_fresh.default, aten.lift_fresh_copy.default}
# Arguments a kernel takes only for their shape: max pooling's backward reads the indices, not the input.
_SHAPE_ONLY = {aten.max_pool2d_with_indices_backward.default: {1}}
_POOLING = {aten.max_pool2d_with_indices.default, aten.max_pool2d_with_indices_backward.default,
            aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default,
            aten._adaptive_avg_pool2d_backward.default, aten.avg_pool2d.default, aten.avg_pool2d_backward.default}
_LOSS = {aten._log_softmax.default, aten._log_softmax_backward_data.default, aten.nll_loss_forward.default,
         aten.nll_loss_backward.default}
_MATRIX = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}


def _size(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_size(v) for v in value)
    return 0


def _tensors(values) -> list[torch.Tensor]:
    found = []
    for value in values:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(_tensors(value))
    return found


def _matrix_dtype(tensor: torch.Tensor, convolution: bool) -> str:
    if tensor.dtype == torch.float32:
        return "tf32" if convolution else "float32"
    return str(tensor.dtype).removeprefix("torch.")


class OpCounter(TorchDispatchMode):
    """Records each aten op's bytes and FLOPs, named by what it belongs to: the LRN layers (the region their
    forward and backward hooks mark), each convolution (by the weight it reads), pooling, the loss, casts."""

    def __init__(self, layer_of: Callable[[torch.Tensor], str | None]) -> None:
        super().__init__()
        self.layer_of = layer_of
        self.region: str | None = None  # set while the LRN layers run (forward and backward)
        self.ops: list[OpCount] = []
        self.lrn_calls: list[tuple] = []

    def record(self, op: str, category: str, read: int, written: int, flops: int = 0,
               dtype: str | None = None) -> None:
        self.ops.append(OpCount(op, category, read, written, flops, dtype))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outputs = _tensors(out if isinstance(out, (list, tuple)) else [out])
        inputs = _tensors([*args, *kwargs.values()])
        if func in _NO_TRAFFIC or func.is_view or not (inputs or outputs):
            return out
        name = str(func.overloadpacket).removeprefix("aten.")
        formula = op_bytes_formula(func._schema.name)
        if func._schema.name.split("::")[0] != "aten":
            if formula is None:
                raise AlexnetError(f"benchmark traffic: custom op {func._schema.name} registers no byte formula "
                                   "(models/op_bytes.py): it cannot be counted")
            read, written = formula(inputs, outputs)
            self.record(name, self.region or "custom ops", read, written)
        elif self.region is not None:
            self._record_plain(func, name, self.region, args, kwargs, outputs)
        elif func is aten.convolution.default:
            layer = self.layer_of(args[1]) or "conv"
            flops = conv_flop_count(list(args[0].shape), list(args[1].shape), list(out.shape))
            self.record(name, f"{layer} forward", _size(inputs), _size(outputs), flops,
                        _matrix_dtype(args[1], convolution=True))
        elif func is aten.convolution_backward.default:
            self._convolution_backward(args, out)
        else:
            self._record_plain(func, name, self._category(func, inputs, outputs), args, kwargs, outputs)
        return out

    def _record_plain(self, func, name: str, category: str, args, kwargs, outputs) -> None:
        shape_only = _SHAPE_ONLY.get(func, set())
        read = sum(_size(a) for i, a in enumerate(args) if i not in shape_only) + _size(list(kwargs.values()))
        flops, dtype = 0, None
        if func in _MATRIX:
            flops = flop_registry[func.overloadpacket](*args, out_val=outputs[0])
            dtype = _matrix_dtype(args[-1], convolution=False)
        self.record(name, category, read, _size(outputs), flops, dtype)

    @staticmethod
    def _category(func, inputs: list, outputs: list) -> str:
        if func in _POOLING:
            return "pooling"
        if func in _LOSS:
            return "loss"
        if func in _MATRIX:
            return "linear"
        if func is aten._to_copy.default and inputs[0].dtype != outputs[0].dtype:
            return "casts"
        return "elementwise"

    def _convolution_backward(self, args, out) -> None:
        """cuDNN's backward is separate kernels: the data gradient reads the output's gradient and the weight,
        the weight gradient reads it and the input (and the bias gradient sums the output's gradient)."""
        grad_out, x, weight = args[0], args[1], args[2]
        grad_x, grad_weight, grad_bias = out
        layer = self.layer_of(weight) or "conv"
        flops = conv_flop_count(list(x.shape), list(weight.shape), list(grad_out.shape))
        dtype = _matrix_dtype(weight, convolution=True)
        if grad_x is not None:
            self.record("convolution_backward (data)", f"{layer} data-grad", _size(grad_out) + _size(weight),
                        _size(grad_x), flops, dtype)
        if grad_weight is not None:
            self.record("convolution_backward (weight)", f"{layer} weight-grad", _size(grad_out) + _size(x),
                        _size(grad_weight), flops, dtype)
        if grad_bias is not None:
            self.record("convolution_backward (bias)", f"{layer} weight-grad", _size(grad_out), _size(grad_bias))


@contextlib.contextmanager
def lrn_region(model: nn.Module, counter: OpCounter) -> Iterator[None]:
    """Mark the LRN layers' forward and backward for the counter (module hooks: the network is untouched)."""

    def forward(module: LocalResponseNorm, args) -> None:
        counter.region = "LRN"
        counter.lrn_calls.append((tuple(args[0].shape), args[0].dtype, module.size, module.alpha, module.beta,
                                  module.k, module.groups))

    def enter(*_) -> None:
        counter.region = "LRN"

    def leave(*_) -> None:
        counter.region = None

    handles = []
    for module in model.modules():
        if isinstance(module, LocalResponseNorm):
            handles += [module.register_forward_pre_hook(forward), module.register_forward_hook(leave),
                        module.register_full_backward_pre_hook(enter), module.register_full_backward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# --- the step ------------------------------------------------------------------------------------------------------

_AUTOCAST = {"bf16-mixed": torch.bfloat16, "bf16": torch.bfloat16, "16-mixed": torch.float16, "16": torch.float16,
             "32-true": None, "32": None}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The half-precision type a Lightning precision name autocasts to (None: float32 throughout)."""
    if precision not in _AUTOCAST:
        raise AlexnetError(f"benchmark traffic: trainer.precision={precision} is not counted; use 32-true, "
                           "bf16-mixed or 16-mixed")
    return _AUTOCAST[precision]


def count_training_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, precision: str) -> StepCount:
    """Forward, cross-entropy, backward and update of ``model`` (on meta tensors) at Lightning's ``precision``."""
    dtype = autocast_dtype(precision)
    layer_names = {id(p): name.rsplit(".", 2)[-2] if "." in name else name for name, p in model.named_parameters()}
    autocast = CudaAutocast(dtype)
    casts = {}  # a cast copy's id → its parameter's layer

    def layer_of(tensor: torch.Tensor) -> str | None:
        while tensor is not None:
            if id(tensor) in layer_names:
                return layer_names[id(tensor)]
            if id(tensor) in casts:
                return casts[id(tensor)]
            tensor = tensor._base
        return None

    counter = OpCounter(layer_of)
    params = [p for p in model.parameters() if p.requires_grad]
    with lrn_region(model, counter), counter:
        with autocast:
            for parameter in params:  # the step's weight copies, made as autocast makes them, by the layer
                if dtype is not None and parameter.dim() > 1:
                    casts[id(autocast._cast(parameter, dtype))] = layer_names[id(parameter)]
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        _count_update(counter, params, [p.grad for p in params], precision)
    return StepCount(counter.ops, lrn_calls=counter.lrn_calls)


def _count_update(counter: OpCounter, params: list, grads: list, precision: str) -> None:
    """After the backward, as ``AlexNetModule.on_before_optimizer_step`` and the fused SGD do it."""
    counter.region = "non-finite check"  # the gradient's norm: is any gradient NaN or infinite?
    torch.isfinite(torch.nn.utils.get_total_norm(grads))
    counter.region = None
    if precision in ("16-mixed", "16"):  # the gradient scaler unscales every gradient in place
        counter.record("_amp_foreach_non_finite_check_and_unscale_", "optimizer", _size(grads), _size(grads))
    # torch._fused_sgd_ (no meta kernel): one pass per tensor reading weight, gradient and momentum, writing
    # weight and momentum, all float32.
    counter.record("_fused_sgd_", "optimizer", 3 * _size(params), 2 * _size(params))


# --- compiled parts: what AOTAutograd's graphs take and give ---------------------------------------------------------


def aot_boundary_bytes(function: Callable, *inputs: torch.Tensor) -> tuple[int, int]:
    """(read, written) by the forward and backward graphs AOTAutograd makes of ``function``: their inputs read,
    their outputs (results and saved tensors) written, the saved tensors read again by the backward. Whatever a
    compiler fuses, a compiled kernel moves at least this: the label says "lower bound"."""
    moved = {"read": 0, "written": 0}

    def boundary(graph: torch.fx.GraphModule, example_inputs) -> Callable:
        placeholders = [node for node in graph.graph.nodes if node.op == "placeholder"]
        outputs = next(node for node in graph.graph.nodes if node.op == "output").args[0]
        moved["read"] += sum(_size(node.meta.get("val")) for node in placeholders)
        moved["written"] += sum(_size(node.meta.get("val")) for node in outputs
                                if isinstance(node, torch.fx.Node) and node.op != "placeholder")
        return make_boxed_func(graph.forward)

    compiled = aot_function(function, fw_compiler=boundary, bw_compiler=boundary,
                            partition_fn=min_cut_rematerialization_partition)
    leaves = [x.detach().requires_grad_(x.is_floating_point()) for x in inputs]
    result = compiled(*leaves)
    result.backward(torch.empty_like(result))
    return moved["read"], moved["written"]
