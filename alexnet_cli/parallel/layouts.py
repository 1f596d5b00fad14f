"""Every layout by its name: the one set of names that recipes (``trainer.strategy``), ``benchmark comms``
and the trainer use. Adding a layout is a module defining its ``Layout`` (and, if Lightning lacks it, its
strategy), one entry here, a recipe naming it and, to be measured by ``benchmark comms``, its step in
``bench/comms.measured_step``."""

from lightning.pytorch.strategies import StrategyRegistry

from alexnet_cli.errors import AlexnetError
from alexnet_cli.parallel.layout import Layout
from alexnet_cli.parallel.towers import TowerLayout
from alexnet_cli.parallel.weird_trick import WeirdTrickLayout

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("auto", one_process=True),  # one device (Lightning's DDP when given several)
    Layout("ddp", benchmark_devices=2),  # the whole network on every device, gradients averaged
    TowerLayout("two-gpu", pairs=(1, 1), benchmark_devices=2),  # the paper's split (§3.2): one pair of towers
    TowerLayout("hybrid", pairs=(2, None), benchmark_devices=4),  # a pair of towers per 2 devices, DDP across pairs
    WeirdTrickLayout("weird-trick", benchmark_devices=2),  # arXiv:1404.5997: conv data-, FC model-parallel
)}

# What recipes and checkpoints said before the layouts had names of their own: the paper's split on two
# devices, towers in pairs with DDP across them on more.
_TOWERS = "towers"


def layout_named(strategy: str | None, devices: int) -> Layout:
    """The layout a recipe's ``trainer.strategy`` names on ``devices`` devices. Another of Lightning's own
    strategies (``ddp_spawn``, ``fsdp``, ...) passes through to Lightning, data-parallel over every device; any
    other name is refused here, as Lightning would refuse it once the run had started."""
    if strategy is not None and not isinstance(strategy, str):
        raise AlexnetError(f"trainer.strategy={strategy!r}: give a layout's name ({', '.join(LAYOUTS)})")
    name = strategy or "auto"
    if name == _TOWERS:
        name = "two-gpu" if devices == 2 else "hybrid"
    if name in LAYOUTS:
        return LAYOUTS[name]
    if name in StrategyRegistry.available_strategies():
        return Layout(name)
    close = next((known for known in LAYOUTS if known == name.lower()), None)
    hint = f" (did you mean {close}?)" if close else ""
    raise AlexnetError(f"trainer.strategy={name!r} is not a layout{hint}: use {', '.join(LAYOUTS)}, or one of "
                       "Lightning's strategies (ddp_spawn, fsdp, deepspeed, ...)")


def benchmarked_layouts() -> dict[str, int]:
    """The layouts ``benchmark comms`` measures, with the devices it measures each on."""
    return {name: layout.benchmark_devices for name, layout in LAYOUTS.items() if layout.benchmark_devices}
