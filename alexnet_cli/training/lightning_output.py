"""What Lightning prints, filtered: its internal chatter hidden, and a lost rank said in one line.

The lost-rank line is one of two places below the CLI that write to the terminal themselves (the other is
the Ctrl-C acknowledgement in ``preemption``): both happen where no return value can carry a message, in
a process that is about to be killed or inside a signal handler.
"""

import logging
import sys
import warnings


def quiet_lightning(quiet: bool) -> None:
    """Hide Lightning's internal chatter (deprecations, advertising, the accelerator list) always, and its banner
    lines with --quiet."""
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*Experiment logs directory.*")
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")  # it is: DataPosition
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")  # ours are reduced by hand or rank 0's
    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropChatter) for f in rank_zero_log.filters):
        rank_zero_log.addFilter(_DropChatter())
    if quiet:
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        logging.getLogger("lightning.fabric").setLevel(logging.WARNING)


class _DropChatter(logging.Filter):
    """Lines that say nothing about this run: Lightning 2.6 suggests installing its cloud logger on every run,
    and lists the accelerators it did not use ("GPU available: False, used: False", "TPU available: ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "litlogger" not in message and not message.startswith(("GPU available:", "TPU available:",
                                                                       "HPU available:"))


class _LostRankReporter(logging.Handler):
    """Lightning's launcher SIGKILLs rank 0 within seconds of another rank dying, often before rank 0
    reaches a collective and fails with an error of its own: say in one line why the run ends."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "terminated with code" in message:
            detail = message.split("Forcefully")[0].strip().rstrip(".")
            sys.stderr.write(f"error: another training process stopped, so this one cannot go on ({detail}); "
                             "resume with --resume RUN_DIR\n")
            sys.stderr.flush()


def report_lost_ranks() -> None:
    launcher_log = logging.getLogger("lightning.fabric.strategies.launchers.subprocess_script")
    if not any(isinstance(handler, _LostRankReporter) for handler in launcher_log.handlers):
        launcher_log.addHandler(_LostRankReporter(level=logging.INFO))
        launcher_log.setLevel(logging.INFO)  # its message is INFO; --quiet must not hide it
        launcher_log.propagate = False  # ours replaces Lightning's line
