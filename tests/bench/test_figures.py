"""The GPU check's figures from known inputs: the profile's device time by category (every kernel once, their sum
the device's busy time) and the GPU's busy fraction of a training loop."""

import pytest
from torch.autograd import DeviceType
from torch.autograd.profiler_util import FunctionEvent

from alexnet_cli.bench.profile import LRN_LABEL, cpu_ms_by_category, device_ms_by_category, kernel_ms_total
from alexnet_cli.bench.train_loop import busy_fraction


def _cpu(event_id: int, name: str, start: float, end: float, parent: FunctionEvent | None = None,
         linked: int = 0) -> FunctionEvent:
    event = FunctionEvent(event_id, name, thread=1, start_us=start, end_us=end, use_device="cuda",
                          linked_correlation_id=linked)
    if parent is not None:
        event.set_cpu_parent(parent)
        parent.append_cpu_child(event)
    return event


def _launched(op: FunctionEvent, kernel_id: int, name: str, start: float, end: float) -> list[FunctionEvent]:
    """A kernel ``op`` launched, as torch's profiler records it: the runtime's launch call (a CPU event under the
    op, linked to it), the kernel's device event (linked to the op's id) and the kernel in the op's list."""
    launch = _cpu(kernel_id, "cudaLaunchKernel", op.time_range.start + 1, op.time_range.start + 2, op,
                  linked=op.id)  # the runtime's correlation id, which the kernel's device event carries too
    kernel = FunctionEvent(kernel_id, name, thread=7, start_us=start, end_us=end, device_type=DeviceType.CUDA,
                           use_device="cuda", linked_correlation_id=op.id)
    op.append_kernel(name, 0, end - start)
    return [launch, kernel]


def recorded_step() -> list[FunctionEvent]:
    """Two steps' events: a convolution and a mul inside the labelled LRN range each launching one kernel, the
    update launching two, and a copy the profiler tied to no op. The launch calls' ids are the runtime's own,
    and collide with the ops' (as CUPTI's and the profiler's numbering do)."""
    events = []
    for step in range(2):
        t = 10_000 * step
        conv = _cpu(100 * step + 1, "aten::convolution", t, t + 100)
        lrn = _cpu(100 * step + 3, LRN_LABEL, t + 100, t + 200)
        mul = _cpu(100 * step + 4, "aten::mul", t + 110, t + 150, lrn)
        sgd = _cpu(100 * step + 6, "aten::_fused_sgd_", t + 200, t + 300)
        events += [conv, lrn, mul, sgd,
                   *_launched(conv, 100 * step + 3, "implicit_gemm", t + 1_000, t + 4_000),
                   *_launched(mul, 100 * step + 6, "vectorized_elementwise_kernel", t + 4_000, t + 6_000),
                   *_launched(sgd, 100 * step + 52, "fused_sgd_kernel", t + 6_000, t + 6_400),
                   *_launched(sgd, 100 * step + 53, "fused_sgd_kernel", t + 6_400, t + 6_600),
                   FunctionEvent(100 * step + 54, "Memcpy DtoD", thread=7, start_us=t + 6_600, end_us=t + 7_100,
                                 device_type=DeviceType.CUDA, use_device="cuda")]
    return events


def test_the_profile_counts_each_kernel_once_under_the_op_that_launched_it():
    events = recorded_step()
    # What the profiler also reports, and the first version of this table summed beside the kernels themselves:
    # each op's own device time is its kernels' (5.6 ms of the 6.1 per step were launched by an op).
    assert sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CPU) / 2e3 == 5.6
    table = device_ms_by_category(events, steps=2)
    assert table == pytest.approx({"conv forward": 3.0, "LRN": 2.0, "optimizer": 0.6, "other": 0.5})
    assert sum(table.values()) == pytest.approx(kernel_ms_total(events, steps=2)) == pytest.approx(6.1)
    assert list(table) == ["conv forward", "LRN", "optimizer", "other"]  # the largest first


def test_on_a_cpu_each_ops_own_time_is_counted_once():
    events = [event for event in recorded_step() if event.device_type == DeviceType.CPU]
    table = cpu_ms_by_category(events, steps=2)
    # Per step: the convolution's own 99 µs and its launch's 1; the LRN range's own 60, the mul's 39 and its
    # launch's 1; the update's own 98 and its two launches' 2.
    assert table["conv forward"] == pytest.approx(0.1)
    assert table["LRN"] == pytest.approx(0.1) and table["optimizer"] == pytest.approx(0.1)
    assert sum(table.values()) == pytest.approx(0.3)


def test_the_gpus_busy_fraction_is_the_steps_share_of_the_span_from_the_first_start_to_the_last_end():
    spans = [(0.0, 2.0), (3.0, 5.0), (6.0, 10.0)]  # 8 ms inside steps, 2 ms of gaps
    assert busy_fraction(spans) == pytest.approx(0.8)
    assert busy_fraction([(5.0, 9.0)]) == pytest.approx(1.0)
    assert busy_fraction([(0.0, 1.0), (9.0, 10.0)]) == pytest.approx(0.2)
