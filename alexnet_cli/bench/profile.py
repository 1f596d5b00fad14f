"""A training step's time by what it is spent on, from a ``torch.profiler`` event list (the GPU check's profile).

On a GPU each kernel is one device event; the profiler links it to the op that launched it (its
``linked_correlation_id`` is that op's id) and lists it among that op's ``kernels``. The table counts each
kernel once, under the category of the first event around its op that names one (the LRN's labelled range,
the op itself, its autograd node); device events linked to no op count as "other", so the categories add up
to every kernel's time, the device's busy time. (Summing ``self_device_time_total`` over every event, as this
check did first, counts each kernel twice: once for itself and once for the op that launched it.) On a CPU
there are no device events; each op's own CPU time is counted instead.
"""

from collections.abc import Iterable

from torch.autograd import DeviceType

# A label the check puts around each LRN layer's forward (``record_function``); the LRN's backward shows under
# its autograd node's name or the Triton op's.
LRN_LABEL = "alexnet::LRN"
_LRN_MARKERS = (LRN_LABEL, "_ClosedFormLRN", "alexnet_cli::lrn")
_CATEGORIES = [("conv backward", ("convolution_backward",)), ("conv forward", ("convolution",)),
               ("optimizer", ("sgd",)), ("matmul (FC)", ("addmm", "::mm", "linear")), ("pooling", ("max_pool",)),
               ("loss", ("cross_entropy", "log_softmax", "nll_loss")),
               ("elementwise", ("relu", "threshold", "mul", "add", "div", "copy", "to_copy", "dropout", "fill",
                                "pow", "pad", "slice", "cat", "norm", "isfinite"))]


def category_of(event) -> str:
    """LRN if any event around ``event`` is the LRN's, else the first category an enclosing op's name gives."""
    node = event
    while node is not None:
        if any(marker in node.name for marker in _LRN_MARKERS):
            return "LRN"
        node = node.cpu_parent
    node = event
    while node is not None:
        name = node.name.lower()
        found = next((label for label, words in _CATEGORIES if any(word in name for word in words)), None)
        if found is not None:
            return found
        node = node.cpu_parent
    return "other"


def device_ms_by_category(events: Iterable, steps: int) -> dict[str, float]:
    """Milliseconds per step of device time by category, every kernel counted once."""
    events = list(events)
    spent: dict[str, float] = {}
    for event in events:
        launched_us = sum(kernel.duration for kernel in event.kernels) if event.device_type == DeviceType.CPU else 0
        if launched_us:
            category = category_of(event)
            spent[category] = spent.get(category, 0.0) + launched_us / steps / 1e3
    unlinked = kernel_ms_total(events, steps) - sum(spent.values())
    if unlinked > 1e-9:  # a copy or kernel the profiler tied to no op
        spent["other"] = spent.get("other", 0.0) + unlinked
    return dict(sorted(spent.items(), key=lambda item: -item[1]))


def cpu_ms_by_category(events: Iterable, steps: int) -> dict[str, float]:
    """Milliseconds per step of CPU time by category, each op's own time (without its children's) once."""
    spent: dict[str, float] = {}
    for event in events:
        if event.device_type == DeviceType.CPU and event.self_cpu_time_total > 0:
            category = category_of(event)
            spent[category] = spent.get(category, 0.0) + event.self_cpu_time_total / steps / 1e3
    return dict(sorted(spent.items(), key=lambda item: -item[1]))


def kernel_ms_total(events: Iterable, steps: int) -> float:
    """Every device event's duration, per step: what ``device_ms_by_category`` must add up to."""
    return sum(event.time_range.end - event.time_range.start for event in events
               if event.device_type == DeviceType.CUDA) / steps / 1e3
