"""Figure 4's retrieval at any size: codes on disk in float16, resumable, searched block by block."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke_alexnet
from PIL import Image

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


def test_neighbors_finds_a_training_query_first_and_caches_the_codes(trained_run, prepared, tmp_path):
    out, _ = trained_run
    checkpoint = out / "checkpoints" / "last.ckpt"
    query = sorted((prepared / "train").glob("*/*.JPEG"))[5]
    grid = tmp_path / "grid.png"
    result = invoke_alexnet("neighbors", "--checkpoint", checkpoint, "--data", prepared, "--query", query,
                            "--k", "3", "--out", grid, "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    assert Path(f"{checkpoint}.train-fc7.f16").is_file()
    from alexnet_cli.inspection.neighbors import find_neighbours

    [found] = find_neighbours(checkpoint, prepared, [query], k=3)
    assert found.neighbours[0][0] == str(query)
    with Image.open(grid) as image:
        assert image.size == (4 + 4 * (96 + 4), 4 + 96 + 4)


def test_neighbors_of_a_read_only_checkpoint_skip_a_damaged_training_image(trained_run, prepared, tmp_path,
                                                                           monkeypatch):
    import subprocess

    out, _ = trained_run
    shared = tmp_path / "shared-models"
    shared.mkdir()
    os.link(out / "checkpoints" / "last.ckpt", shared / "model.ckpt")
    data = tmp_path / "data"
    shutil.copytree(prepared, data, symlinks=True)
    victim = sorted((data / "train").glob("*/*.JPEG"))[5]
    query = tmp_path / "query.JPEG"
    query.write_bytes(victim.read_bytes())
    victim.write_bytes(victim.read_bytes()[:300])  # damaged after preparation
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if subprocess.run(["chattr", "+i", shared], capture_output=True).returncode != 0:
        pytest.skip("chattr +i (a folder even root cannot write) is not available here")
    from alexnet_cli.inspection.neighbors import find_neighbours

    try:
        with pytest.warns(UserWarning, match="not a whole JPEG; it is left out"):
            [found] = find_neighbours(shared / "model.ckpt", data, [query], k=30, out=tmp_path / "grid.png")
    finally:
        subprocess.run(["chattr", "-i", shared], check=True)
    assert list((tmp_path / "cache" / "alexnet-cli" / "neighbors").glob("model.ckpt-*.train-fc7.f16"))
    names = [path for path, _ in found.neighbours]
    assert str(victim) not in names  # the damaged file is nobody's neighbour, and the grid was drawn
    assert len(names) == len(list((data / "train").glob("*/*.JPEG"))) - 1
    assert (tmp_path / "grid.png").is_file()


def test_an_interrupted_embedding_continues_from_the_rows_already_written(trained_run, prepared, tmp_path):
    import shutil

    from alexnet_cli.inspection.neighbors import embed_training_set
    from alexnet_cli.models.checkpoints import load_checkpoint

    out, _ = trained_run
    checkpoint = tmp_path / "copy.ckpt"
    shutil.copy(out / "checkpoints" / "last.ckpt", checkpoint)
    loaded = load_checkpoint(checkpoint)
    store, _ = embed_training_set(loaded, checkpoint, prepared, batch_size=4)
    reference = store.read(0, store.rows)
    store.write(0, np.full_like(reference, 7.0))  # an interruption after two batches: rows 0-7 kept, the rest not
    store.mark_done(8)
    resumed, _ = embed_training_set(loaded, checkpoint, prepared, batch_size=4)
    assert resumed.complete and (resumed.read(0, 8) == 7.0).all(), "finished rows are not redone"
    np.testing.assert_array_equal(resumed.read(8, resumed.rows), reference[8:])


def test_neighbors_embeds_again_when_its_cached_codes_are_not_finite(trained_run, prepared, tmp_path):
    out, _ = trained_run
    checkpoint = tmp_path / "model.ckpt"  # its own code cache, beside it
    os.link(out / "checkpoints" / "last.ckpt", checkpoint)
    query = sorted((prepared / "train").glob("*/*.JPEG"))[7]
    arguments = ["neighbors", "--checkpoint", checkpoint, "--data", prepared, "--query", query, "--k", "4",
                 "--out", tmp_path / "grid.png", "--quiet"]
    assert invoke_alexnet(*arguments).returncode == 0
    codes = Path(f"{checkpoint}.train-fc7.f16")
    healthy = codes.read_bytes()
    np.full(len(healthy) // 2, np.nan, np.float16).tofile(codes)  # every row "unreadable": nothing to search
    result = invoke_alexnet(*arguments)
    assert result.returncode == 0, result.stderr
    assert f"{codes} holds no usable code; embedding the training images again" in result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ ")]
    assert len(rows) == 4 and rows[0].endswith(" 0.00 │")  # the query itself first, then three more
    assert codes.read_bytes() == healthy


def test_neighbors_of_a_checkpoint_whose_codes_overflow_float16_is_refused_naming_it(trained_run, prepared,
                                                                                    tmp_path):
    out, _ = trained_run
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    for name, tensor in state["state_dict"].items():
        if name.startswith("model.classifier") and name.endswith("weight"):
            tensor.fill_(1e30)  # a diverging run's weights, still finite (NaN ones are refused at load)
    checkpoint = tmp_path / "diverged.ckpt"
    torch.save(state, checkpoint)
    query = sorted((prepared / "val").glob("*/*.JPEG"))[0]
    result = invoke_alexnet("neighbors", "--checkpoint", checkpoint, "--data", prepared, "--query", query,
                            "--out", tmp_path / "grid.png", "--quiet")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {checkpoint} gives {query} fc7 activations that are NaN, infinite or "
                                    "beyond float16's 65,504: a diverged checkpoint?")
    assert not Path(f"{checkpoint}.train-fc7.f16").exists()


def test_neighbours_in_a_packed_dataset_are_its_files_neighbours_named_by_shard(trained_run, prepared, packed,
                                                                                tmp_path):
    from alexnet_cli.inspection.neighbors import find_neighbours

    out, _ = trained_run
    checkpoint = out / "checkpoints" / "last.ckpt"
    queries = sorted((prepared / "train").glob("*/*.JPEG"))[3:5]
    in_files = find_neighbours(checkpoint, prepared, queries, k=3)
    for cached in Path(checkpoint).parent.glob("*-fc7.*"):  # (the twins share their codes: embed from the shards)
        cached.unlink()
    in_shards = find_neighbours(checkpoint, packed, queries, k=3, out=tmp_path / "grid.png")
    for files, shards in zip(in_files, in_shards):
        assert [d for _, d in files.neighbours] == [d for _, d in shards.neighbours]
        # the same images: <wnid>/<stem>.JPEG as the member <wnid>/<stem>.jpg of a shard
        assert [f"{Path(n).parent.name}/{Path(n).stem}.jpg" for n, _ in files.neighbours] == [
            n.split(".tar:")[1] for n, _ in shards.neighbours]
    with Image.open(tmp_path / "grid.png") as image:  # the grid reads the neighbours out of the shards
        assert image.size == (4 + 4 * (96 + 4), 4 + 2 * (96 + 4))
