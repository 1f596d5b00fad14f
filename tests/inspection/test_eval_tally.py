"""Eval's Tally: what a batch adds, what a skipped file does not, and the sum over processes."""

import numpy as np
import pytest
import torch
import torch.distributed as dist

from alexnet_cli.data.feed import SKIPPED
from alexnet_cli.inspection.evaluate import Tally


def _batch(tally: Tally, indices: list[int], labels: list[int], topk: list[list[int]]) -> int:
    return tally.add(np.array(indices), torch.tensor(labels), torch.tensor(topk))


def test_add_counts_top1_top5_and_each_classs_hits_and_images():
    tally = Tally.empty(4)
    scored = _batch(tally, [0, 1, 2, 3], [2, 0, 3, 3], [[2, 1], [1, 0], [0, 1], [3, 2]])
    assert scored == 4 and (tally.top1, tally.top5, tally.seen) == (2, 3, 4)
    assert tally.class_hits.tolist() == [0, 0, 1, 1] and tally.class_seen.tolist() == [1, 0, 1, 2]
    assert tally.predictions == [(0, 2, [2, 1]), (1, 0, [1, 0]), (2, 3, [0, 1]), (3, 3, [3, 2])]


def test_batches_add_up():
    tally = Tally.empty(3)
    _batch(tally, [0, 1], [1, 1], [[1, 0], [0, 2]])
    _batch(tally, [2], [2], [[2, 1]])
    assert (tally.top1, tally.top5, tally.seen) == (2, 2, 3) and tally.class_seen.tolist() == [0, 2, 1]


def test_a_file_that_could_not_be_used_is_listed_never_scored():
    tally = Tally.empty(3)
    scored = _batch(tally, [5, 6, 7], [1, SKIPPED, 2], [[1, 0], [1, 0], [0, 2]])
    assert scored == 2 and tally.skipped == [6] and tally.seen == 2 and (tally.top1, tally.top5) == (1, 2)
    assert [index for index, _, _ in tally.predictions] == [5, 7]


@pytest.fixture
def one_process_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_all_reduce_keeps_each_count_in_its_place_drops_predictions_and_sorts_skipped(one_process_group):
    tally = Tally.empty(3)
    _batch(tally, [9, 4, 7, 2], [0, SKIPPED, 2, SKIPPED], [[0, 1], [0, 1], [1, 2], [0, 1]])
    hits, seen = tally.class_hits.clone(), tally.class_seen.clone()
    tally.all_reduce(torch.device("cpu"))
    assert tally.skipped == [2, 4] and tally.predictions == []
    assert (tally.top1, tally.top5) == (1, 2) and torch.equal(tally.class_hits, hits)
    assert torch.equal(tally.class_seen, seen)
    assert Tally(**vars(tally)).seen == 2  # what comes back from run_in_processes
