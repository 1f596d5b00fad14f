"""A training step's time by what it is spent on, from a ``torch.profiler`` event list (the GPU check's profile).

On a GPU each kernel is one device event, linked to the CPU event that launched it (``cudaLaunchKernel`` and
the like) by its correlation id; that launch sits under the aten op, the autograd node and any labelled range
around it. Only device events are counted, each once, under the category of the first op around its launch
that names one: their sum is the device's busy time. (Summing ``self_device_time_total`` over every event, as
this check did first, counts each kernel twice: once for itself and once for the CPU op that launched it.)
On a CPU there are no device events; each op's own CPU time is counted instead.
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
    """Milliseconds per step of device time by category, every device event counted once."""
    events = list(events)
    launches = {event.id: event for event in events if event.device_type == DeviceType.CPU}
    spent: dict[str, float] = {}
    for event in events:
        if event.device_type != DeviceType.CUDA:
            continue
        launch = launches.get(event.linked_correlation_id)
        category = category_of(launch) if launch is not None else "other"
        duration_us = event.time_range.end - event.time_range.start
        spent[category] = spent.get(category, 0.0) + duration_us / steps / 1e3
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
