"""Packed datasets: the shards as written (bytes, conventions, DALI's reader), the same batches as the files,
few opens, damaged shards named in one line."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import warnings

import numpy as np
import pytest
import torch
from conftest import SMALL_SHARDS, invoke_alexnet, one_line_error

from alexnet_cli.data.datamodule import DaliDataModule
from alexnet_cli.data.dataset_files import list_split, read_classes
from alexnet_cli.data.packed import INDEX_FILE, KEYS_FILE
from alexnet_cli.data.prepare.pack import PackOptions, pack_dataset
from alexnet_cli.errors import AlexnetError
from alexnet_cli.recipes import DataConfig


def test_packing_keeps_every_prepared_jpegs_bytes_in_order_in_the_webdataset_convention(prepared, packed):
    classes = read_classes(prepared)
    for split in ("train", "val"):
        files = list_split(prepared, split, classes)
        index = np.load(packed / split / INDEX_FILE)
        keys = [key.decode() for key in np.load(packed / split / KEYS_FILE)]
        assert len(index) == len(files) == len(keys) and len(set(keys)) == len(keys)
        members = {}
        for shard in sorted((packed / split).glob("*.tar")):
            with tarfile.open(shard) as tar:
                for member in tar.getmembers():
                    assert (member.mtime, member.uid, member.gid, member.uname, member.mode) == (0, 0, 0, "", 0o644)
                    members[(shard.name, member.name)] = tar.extractfile(member).read()
        for number, (path, label) in enumerate(zip(files.files, files.labels)):
            shard = f"{int(index['shard'][number]):06d}.tar"
            assert "." not in keys[number]  # a webdataset key ends at its first dot
            assert members[(shard, f"{keys[number]}.jpg")] == open(path, "rb").read()
            assert members[(shard, f"{keys[number]}.cls")] == str(label).encode()
            assert index["label"][number] == label
        assert len(members) == 2 * len(files)
    assert len(list((packed / "train").glob("*.tar"))) == 2  # 64 KiB shards: the split is cut in order
    info, unpacked = (json.loads((root / "dataset.json").read_text()) for root in (packed, prepared))
    assert info["fingerprint"] == unpacked["fingerprint"] and info["counts"] == unpacked["counts"]
    assert info["packed"]["shard_bytes"] == SMALL_SHARDS
    for name in ("classes.json", "stats.npz", "report.json"):
        assert (packed / name).read_bytes() == (prepared / name).read_bytes()


def test_dalis_index_is_what_wds2idx_writes_and_dalis_webdataset_reader_reads_the_shards(packed, tmp_path):
    from nvidia.dali import fn, pipeline_def

    shards = sorted(str(p) for p in (packed / "train").glob("*.tar"))
    for number, shard in enumerate(shards):
        theirs = tmp_path / f"{number}.idx"
        subprocess.run([sys.executable, "-m", "wds2idx", shard, theirs], check=True, capture_output=True)
        assert theirs.read_text() == open(shard.replace(".tar", ".idx")).read()

    @pipeline_def(batch_size=5, num_threads=1, device_id=None)
    def read():
        jpegs, labels = fn.readers.webdataset(paths=shards, index_paths=[s.replace(".tar", ".idx") for s in shards],
                                              ext=["jpg", "cls"], missing_component_behavior="error")
        return jpegs, labels

    pipe = read()
    pipe.build()
    index = np.load(packed / "train" / INDEX_FILE)
    jpegs, labels = [], []
    while len(jpegs) < len(index):
        out_jpegs, out_labels = pipe.run()
        jpegs += [np.array(out_jpegs[k]).tobytes() for k in range(len(out_jpegs))]
        labels += [int(bytes(np.array(out_labels[k]))) for k in range(len(out_labels))]
    files = [open(p, "rb").read() for p in sorted((packed / "train").glob("*.tar"))]
    expected = [files[row["shard"]][row["offset"]:row["offset"] + row["size"]] for row in index]
    assert jpegs[:len(index)] == expected and labels[:len(index)] == index["label"].tolist()


def test_a_pack_killed_part_way_reruns_to_the_same_bytes(prepared, packed, tmp_path):
    out = tmp_path / "again"
    pack_dataset(PackOptions(prepared, out, SMALL_SHARDS))
    # As a kill after the first train shard leaves it: its marker, a half-written temporary, no index, no dataset.json
    (out / "dataset.json").unlink()
    for name in ("000001.tar", "000001.idx", INDEX_FILE, KEYS_FILE):
        (out / "train" / name).unlink()
    shutil.rmtree(out / "val")
    (out / "train" / ".000001.tar.x.tmp").write_bytes(b"half")
    (out / ".work" / "pack").mkdir(parents=True)
    index = np.load(packed / "train" / INDEX_FILE)
    first_shard = index[index["shard"] == 0]
    np.save(out / ".work" / "pack" / "train-000000.npy", first_shard)
    (out / ".work" / "pack.json").write_text(json.dumps({"format": 1, "source": str(prepared.resolve()),
                                                         "shard_bytes": SMALL_SHARDS}))
    summary = pack_dataset(PackOptions(prepared, out, SMALL_SHARDS))
    assert summary.written == {"train": len(index) - len(first_shard), "val": 12}  # shard 0 was not packed again
    written = sorted(p.relative_to(packed) for p in packed.rglob("*") if p.is_file() and ".work" not in p.parts)
    assert written == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and ".work" not in p.parts)
    for path in written:  # (the half-written temporary is gone: the same files, byte for byte)
        assert (out / path).read_bytes() == (packed / path).read_bytes(), path


def _batches(root, workers, epochs=2, kind="train"):
    module = DaliDataModule(root, DataConfig(device="cpu", batch_size=4, num_threads=1, py_workers=workers,
                                             normalize="channel"), crop=227, seed=5)
    loader = module.loader("train" if kind == "train" else "val", kind, shard=(1, 2))
    batches = [(images.clone(), labels.clone()) for _ in range(epochs) for images, labels in loader]
    loader.close()
    return batches, loader


@pytest.mark.parametrize("workers", [0, 1])
def test_packed_and_unpacked_give_the_same_batches_and_packed_opens_each_shard_once_per_reader(prepared, packed,
                                                                                                workers):
    unpacked, files_loader = _batches(prepared, workers)
    from_shards, shard_loader = _batches(packed, workers)
    assert len(unpacked) == len(from_shards) == 4  # 2 epochs of 2 batches of 4 on shard 1 of 2
    for (images, labels), (packed_images, packed_labels) in zip(unpacked, from_shards):
        assert torch.equal(images, packed_images) and torch.equal(labels, packed_labels)
    assert files_loader.files_opened == 4 * 4  # one open per image read
    shards = len(list((packed / "train").glob("*.tar")))
    assert 1 <= shard_loader.files_opened <= shards * (workers + 1) * shard_loader.pipelines_built
    # closed with the loader where this process read the shards itself (the workers' go with the workers)
    links = [f"/proc/self/fd/{fd}" for fd in os.listdir("/proc/self/fd")]
    assert not [link for link in links if os.path.exists(link) and os.readlink(link).startswith(str(packed))]


def test_a_truncated_or_missing_shard_is_refused_at_set_up_naming_it_and_its_first_lost_sample(packed, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(packed, copy)
    shard = copy / "train" / "000001.tar"
    index = np.load(copy / "train" / INDEX_FILE)
    last = len(index) - 1
    with open(shard, "r+b") as handle:
        handle.truncate(int(index["offset"][last]) + 10)
    module = DaliDataModule(copy, DataConfig(device="cpu", normalize="channel"), crop=227)
    with pytest.raises(AlexnetError, match=rf"{shard} is truncated .*sample {last} at offset {index['offset'][last]}"):
        module.split("train")
    shard.unlink()
    first = int(np.flatnonzero(index["shard"] == 1)[0])
    module = DaliDataModule(copy, DataConfig(device="cpu", normalize="channel"), crop=227)
    with pytest.raises(AlexnetError, match=rf"{shard} not found: it holds samples {first}\.\.{last}"):
        module.split("train")


@pytest.mark.parametrize("workers", [0, 1])
def test_an_altered_sample_is_named_by_shard_index_and_offset_and_a_shard_lost_while_reading_ends_in_one_line(
        packed, tmp_path, workers):
    copy = tmp_path / "copy"
    shutil.copytree(packed, copy)
    index = np.load(copy / "val" / INDEX_FILE)
    with open(copy / "val" / "000000.tar", "r+b") as handle:  # one bit of sample 3's scan data, past its header
        handle.seek(int(index["offset"][3]) + int(index["size"][3]) // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 1]))
    module = DaliDataModule(copy, DataConfig(device="cpu", batch_size=4, num_threads=1, py_workers=workers,
                                             normalize="channel"), crop=227)
    loader = module.loader("val", "val", shard=(0, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = torch.cat([batch_labels for _, batch_labels in loader])
    said = [str(w.message) for w in caught if "crc32" in str(w.message)]
    assert len(said) == 1 and "000000.tar: sample 3 (" in said[0] and f"at offset {index['offset'][3]}" in said[0]
    assert labels[3] == -1 and (labels[np.arange(len(labels)) != 3] >= 0).all()  # left out of the evaluation
    loader.close()
    (copy / "val" / "000000.tar").unlink()  # gone after set-up: the next pipeline's readers fail to open it
    loader = module.loader("val", "val", shard=(0, 1))
    with pytest.raises(AlexnetError) as refused:
        next(iter(loader))
    loader.close()
    message = str(refused.value)
    assert "\n" not in message and "000000.tar cannot be opened" in message and "sample 0 at offset 512" in message


def test_eval_lists_a_damaged_packed_sample_as_it_lists_a_damaged_file(packed, trained_run, tmp_path):
    run, _ = trained_run
    copy = tmp_path / "copy"
    shutil.copytree(packed, copy)
    index = np.load(copy / "val" / INDEX_FILE)
    with open(copy / "val" / "000000.tar", "r+b") as handle:
        handle.seek(int(index["offset"][5]) + 40)
        handle.write(b"\x00\x01\x02")
    out = tmp_path / "eval.json"
    result = invoke_alexnet("eval", "--checkpoint", run / "checkpoints" / "last.ckpt", "--data", copy, "--batch-size",
                            "4", "--json", out)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    key = np.load(copy / "val" / KEYS_FILE)[5].decode()
    assert report["images"] == len(index) - 1 and report["skipped"] == [f"{copy}/val/000000.tar:{key}.jpg"]


def test_pack_refuses_in_one_line_what_it_cannot_pack(prepared, packed, tmp_path):
    one_line_error(invoke_alexnet("pack", prepared, "--out", prepared / "inside"), "is inside the dataset it packs")
    one_line_error(invoke_alexnet("pack", packed, "--out", tmp_path / "twice"), "is packed already")
    (tmp_path / "nodata").mkdir()
    one_line_error(invoke_alexnet("pack", tmp_path / "nodata", "--out", tmp_path / "x"), "is not a prepared dataset")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    one_line_error(invoke_alexnet("pack", prepared, "--out", tmp_path / "busy"), "'notes.txt', which alexnet pack "
                   "did not write")
    one_line_error(invoke_alexnet("pack", prepared, "--out", tmp_path / "y", "--shard-size", "12Q"), "--shard-size")
    one_line_error(invoke_alexnet("pack", prepared, "--out", tmp_path / "y", "--shard-size", "1K"), "too small")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine" and not (tmp_path / "y").exists()


def test_the_fingerprint_is_prepares_and_changes_with_any_images_bytes(prepared, tmp_path):
    from alexnet_cli.data.fingerprint import fingerprint_of_files

    classes = read_classes(prepared)
    splits = {split: list_split(prepared, split, classes) for split in ("train", "val")}
    written = json.loads((prepared / "dataset.json").read_text())["fingerprint"]
    assert fingerprint_of_files(splits, classes) == written
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    victim = sorted((copy / "val").glob("*/*.JPEG"))[7]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1  # one bit: same size, same name
    victim.write_bytes(bytes(data))
    altered = {split: list_split(copy, split, classes) for split in ("train", "val")}
    assert fingerprint_of_files(altered, classes) != written
    renamed = {"train": splits["val"], "val": splits["train"]}  # the same files, counted in another split
    assert fingerprint_of_files(renamed, classes) != written


def test_prepare_imagenet_pack_prepares_straight_into_the_same_shards(official_source, packed, tmp_path):
    out = tmp_path / "straight"
    command = ["prepare-imagenet", "--source", official_source, "--out", out, "--workers", "1", "--pack",
               "--shard-size", "64K", "--quiet"]
    result = invoke_alexnet(*command)
    assert result.returncode == 0, result.stderr[-2000:]
    shards = sorted(p.relative_to(packed) for p in packed.rglob("*") if p.is_file() and p.suffix in (".tar", ".idx"))
    assert shards and all((out / p).read_bytes() == (packed / p).read_bytes() for p in shards)
    assert not (out / ".unpacked").exists()  # the unpacked staging is gone
    info = json.loads((out / "dataset.json").read_text())
    assert info["fingerprint"] == json.loads((packed / "dataset.json").read_text())["fingerprint"]
    again = invoke_alexnet(*command)
    assert again.returncode == 0 and "(already complete)" in " ".join(again.stdout.split())
    one_line_error(invoke_alexnet(*command[:-3], "--shard-size", "128K", "--quiet"), "holds a finished packed "
                   "dataset with shard_bytes=65536, not 131072")


def test_a_finished_pack_is_never_rewritten_with_other_shards(prepared, packed, tmp_path):
    out = tmp_path / "done"
    shutil.copytree(packed, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    one_line_error(invoke_alexnet("pack", prepared, "--out", out, "--shard-size", "128K"),
                   "holds a finished packed dataset", "choose a new --out")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert invoke_alexnet("pack", prepared, "--out", out, "--shard-size", "64K").returncode == 0  # the same: no-op
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and ".work" not in p.parts} == {
        p: b for p, b in before.items() if ".work" not in p.parts}
