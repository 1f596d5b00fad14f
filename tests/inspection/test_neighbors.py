"""Figure 4's retrieval at any size: codes on disk in float16, resumable, searched block by block."""

import numpy as np
import pytest
import torch

from alexnet_cli.inspection.neighbors import CodeStore, DamagedCodes, nearest


def test_the_block_search_finds_the_same_neighbours_as_a_full_distance_matrix(tmp_path):
    rng = np.random.default_rng(0)
    codes = rng.random((1000, 64), dtype=np.float32)
    store = CodeStore(tmp_path / "codes", 1000, 64)
    store.write(0, codes)
    store.mark_done(1000)
    queries = rng.random((3, 64), dtype=np.float32)
    indices, distances = nearest(store, queries, k=5, block_rows=97)  # blocks that do not divide the rows
    stored = torch.as_tensor(codes.astype(np.float16).astype(np.float32))
    full = torch.cdist(torch.as_tensor(queries), stored)
    want_d, want_i = full.topk(5, dim=1, largest=False)
    assert indices.tolist() == want_i.tolist()
    np.testing.assert_allclose(distances, want_d.numpy(), rtol=1e-5)


def test_a_store_continues_from_the_rows_it_had_finished_and_restarts_for_other_inputs(tmp_path):
    store = CodeStore(tmp_path / "codes", 10, 4, {"checkpoint": 1})
    store.write(0, np.ones((6, 4), np.float32))
    store.mark_done(6)
    again = CodeStore(tmp_path / "codes", 10, 4, {"checkpoint": 1})
    assert again.done == 6 and not again.complete
    assert again.read(0, 6).tolist() == [[1.0] * 4] * 6
    other = CodeStore(tmp_path / "codes", 10, 4, {"checkpoint": 2})
    assert other.done == 0 and not other.read(0, 10).any()


def test_codes_are_stored_as_float16(tmp_path):
    store = CodeStore(tmp_path / "codes", 1000, 4096)
    assert store.path.stat().st_size == 1000 * 4096 * 2


def test_rows_that_are_not_finite_are_never_neighbours(tmp_path):
    codes = np.arange(40, dtype=np.float32).reshape(10, 4)
    codes[[0, 3]] = np.nan  # images that could not be read
    store = CodeStore(tmp_path / "codes", 10, 4)
    store.write(0, codes)
    store.mark_done(10)
    indices, distances = nearest(store, codes[[1]] * 0, k=10, block_rows=4)
    finite = np.isfinite(distances[0])
    assert finite.sum() == 8 and not {0, 3} & set(indices[0][finite].tolist())
    assert np.isposinf(distances[0][~finite]).all()  # the left-over places say "no neighbour", not NaN
    assert indices[0][0] == 1  # the nearest usable row to the origin


@pytest.mark.parametrize("index", ['{"stamp": {"rows": 10, "width": 4}, "done": "6"}',
                                   '{"stamp": {"rows": 10, "width": 4}, "done": 11}', "[1, 2]", "not json"])
def test_a_damaged_index_starts_the_store_again(tmp_path, index):
    store = CodeStore(tmp_path / "codes", 10, 4)
    store.write(0, np.ones((6, 4), np.float32))
    store.mark_done(6)
    store.index.write_text(index)
    again = CodeStore(tmp_path / "codes", 10, 4)
    assert again.done == 0 and not again.read(0, 10).any()


def test_a_store_holding_infinities_is_reported_damaged_not_searched_around(tmp_path):
    codes = np.arange(40, dtype=np.float32).reshape(10, 4)
    codes[[2, 7]] = np.inf  # embedding writes finite rows or NaN rows, never these
    store = CodeStore(tmp_path / "codes", 10, 4)
    store.write(0, codes)
    store.mark_done(10)
    with pytest.raises(DamagedCodes, match=rf"{store.path} holds infinite values"):
        nearest(store, codes[[1]], k=3, block_rows=4)
