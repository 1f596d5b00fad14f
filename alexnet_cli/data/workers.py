"""How many DALI threads and file-reading processes one rank gets: the recipe's numbers, or for ``auto`` a
share of the cores this process may run on, divided between the ranks of this machine."""

import os
from dataclasses import dataclass

from alexnet_cli.recipes import DataConfig

MAX_READERS = 4  # a reader does a batch of 128 in ~5 ms (docs/benchmarks.md): 4 feed ~100,000 img/s


@dataclass(frozen=True)
class Workers:
    threads: int  # DALI's threads: CPU decoding (nvJPEG's host stage on a GPU) and CPU augmentation
    readers: int  # DALI's Python worker processes reading the files (0: the training thread reads them)


def usable_cores() -> int:
    """The cores this process may run on (its affinity: a job scheduler's share, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def workers_for(config: DataConfig, ranks_here: int, cores: int | None = None) -> Workers:
    """``data.num_threads`` and ``data.py_workers`` for one of ``ranks_here`` ranks sharing ``cores``.

    ``auto``: each rank gets cores ÷ ranks; past two, one is left to the training thread, a quarter of the rest
    read files (1 to 4 readers: reading is cheap beside decoding) and DALI's threads take the others. On two
    cores or fewer the training thread reads the files itself: a reader process costs more than it saves there
    (docs/benchmarks.md).
    """
    share = max(1, (cores or usable_cores()) // max(1, ranks_here))
    spare = share - 1 if share > 2 else share
    readers = config.py_workers
    if readers == "auto":
        readers = 0 if share <= 2 else min(MAX_READERS, max(1, spare // 4))
    threads = config.num_threads
    if threads == "auto":
        threads = max(1, spare - readers)
    return Workers(threads, readers)
