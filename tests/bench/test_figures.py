"""The GPU check's figures from known inputs: the profile's device time by category (every kernel once, their sum
the device's busy time) and the GPU's busy fraction of a training loop."""

import pytest
from torch.autograd import DeviceType
from torch.autograd.profiler_util import FunctionEvent

from alexnet_cli.bench.profile import LRN_LABEL, cpu_ms_by_category, device_ms_by_category, kernel_ms_total
from alexnet_cli.bench.train_loop import busy_fraction


def _cpu(event_id: int, name: str, start: float, end: float, parent: FunctionEvent | None = None) -> FunctionEvent:
    event = FunctionEvent(event_id, name, thread=1, start_us=start, end_us=end, use_device="cuda")
    if parent is not None:
        event.set_cpu_parent(parent)
        parent.append_cpu_child(event)
    return event


def _kernel(event_id: int, name: str, start: float, end: float, launch: FunctionEvent | None) -> FunctionEvent:
    """A device event, linked to its launch as the profiler links them, and attached to it as kernel time."""
    kernel = FunctionEvent(event_id, name, thread=7, start_us=start, end_us=end, device_type=DeviceType.CUDA,
                           use_device="cuda", linked_correlation_id=launch.id if launch is not None else 0)
    if launch is not None:
        launch.append_kernel(name, 0, end - start)
    return kernel


def recorded_step() -> list[FunctionEvent]:
    """Two steps' events: a convolution and a labelled LRN each launching one kernel, an optimizer launching two,
    and a copy with no launch the profiler could link."""
    events = []
    for step in range(2):
        t = 10_000 * step
        conv = _cpu(100 * step + 1, "aten::convolution", t, t + 100)
        conv_launch = _cpu(100 * step + 2, "cudaLaunchKernel", t + 10, t + 20, conv)
        lrn = _cpu(100 * step + 3, LRN_LABEL, t + 100, t + 200)
        mul = _cpu(100 * step + 4, "aten::mul", t + 110, t + 150, lrn)
        lrn_launch = _cpu(100 * step + 5, "cudaLaunchKernel", t + 120, t + 130, mul)
        sgd = _cpu(100 * step + 6, "aten::_fused_sgd_", t + 200, t + 300)
        sgd_launch = _cpu(100 * step + 7, "cudaLaunchKernel", t + 210, t + 220, sgd)
        events += [conv, conv_launch, lrn, mul, lrn_launch, sgd, sgd_launch,
                   _kernel(100 * step + 50, "implicit_gemm", t + 1_000, t + 4_000, conv_launch),
                   _kernel(100 * step + 51, "vectorized_elementwise_kernel", t + 4_000, t + 6_000, lrn_launch),
                   _kernel(100 * step + 52, "fused_sgd_kernel", t + 6_000, t + 6_400, sgd_launch),
                   _kernel(100 * step + 53, "fused_sgd_kernel", t + 6_400, t + 6_600, sgd_launch),
                   _kernel(100 * step + 54, "Memcpy DtoD", t + 6_600, t + 7_100, None)]
    return events


def test_the_profile_counts_each_kernel_once_under_the_op_that_launched_it():
    events = recorded_step()
    # What the profiler also reports, and the first version of this table summed beside the kernels themselves:
    # each launch's own device time is its kernels' (5.6 ms of the 6.1 per step had a launch to link to).
    assert sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CPU) / 2e3 == 5.6
    table = device_ms_by_category(events, steps=2)
    assert table == pytest.approx({"conv forward": 3.0, "LRN": 2.0, "optimizer": 0.6, "other": 0.5})
    assert sum(table.values()) == pytest.approx(kernel_ms_total(events, steps=2)) == pytest.approx(6.1)
    assert list(table) == ["conv forward", "LRN", "optimizer", "other"]  # the largest first


def test_on_a_cpu_each_ops_own_time_is_counted_once():
    events = [event for event in recorded_step() if event.device_type == DeviceType.CPU]
    table = cpu_ms_by_category(events, steps=2)
    # Per step: the convolution's own 90 µs and its launch's 10; the LRN range's own 60, the mul's 30 and its
    # launch's 10; the update's own 90 and its launch's 10.
    assert table["conv forward"] == pytest.approx(0.1)
    assert table["LRN"] == pytest.approx(0.1) and table["optimizer"] == pytest.approx(0.1)
    assert sum(table.values()) == pytest.approx(0.3)


def test_the_gpus_busy_fraction_is_the_steps_share_of_the_span_from_the_first_start_to_the_last_end():
    spans = [(0.0, 2.0), (3.0, 5.0), (6.0, 10.0)]  # 8 ms inside steps, 2 ms of gaps
    assert busy_fraction(spans) == pytest.approx(0.8)
    assert busy_fraction([(5.0, 9.0)]) == pytest.approx(1.0)
    assert busy_fraction([(0.0, 1.0), (9.0, 10.0)]) == pytest.approx(0.2)
