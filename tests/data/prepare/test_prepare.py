"""prepare-imagenet on tiny datasets in the official ILSVRC2012 format."""

import gzip
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, invoke_alexnet
from PIL import Image

from alexnet_cli.data.dataset_files import list_split, read_classes
from alexnet_cli.data.prepare import official
from alexnet_cli.data.prepare.demo import DemoSpec, _tar_bytes, demo_wnid, write_demo_source
from alexnet_cli.data.prepare.run import PrepareOptions, prepare_imagenet
from alexnet_cli.data.prepare.sources import choose_classes
from alexnet_cli.data.stats import DatasetStats
from alexnet_cli.errors import AlexnetError


def test_val_labels_follow_devkit_ids_not_sorted_order(official_source, prepared):
    devkit = official.read_devkit(official_source / official.DEVKIT_TAR)
    ids_in_sorted_order = [i for i, _ in sorted(devkit.id_to_wnid.items(), key=lambda kv: kv[1])]
    assert ids_in_sorted_order != sorted(ids_in_sorted_order), "fixture must shuffle IDs against WNIDs"
    with tarfile.open(official_source / official.VAL_TAR) as tar:
        for number, info in enumerate(sorted(tar.getmembers(), key=lambda m: m.name), start=1):
            wnid = devkit.id_to_wnid[devkit.val_ids[number - 1]]
            assert (prepared / "val" / wnid / info.name).is_file(), info.name
    # the shape each val image shows matches its class's name
    classes = read_classes(prepared)
    assert [c.wnid for c in classes] == sorted(c.wnid for c in classes)
    assert all(c.words.startswith("demo ") for c in classes)


def test_every_output_is_a_baseline_rgb_256_jpeg(prepared):
    for split in ("train", "val"):
        for path in (prepared / split).glob("*/*.JPEG"):
            with Image.open(path) as image:
                assert image.format == "JPEG" and image.mode == "RGB" and image.size == (256, 256), path
                assert "progressive" not in image.info


def test_hazards_are_converted_or_reported(prepared):
    report = json.loads((prepared / "report.json").read_text())
    assert report["fixes"] == {"cmyk": 1, "grey": 1, "png": 1}
    assert len(report["skipped"]) == 1
    assert "truncated" in report["skipped"][0]["reason"]
    assert report["skipped"][0]["file"].endswith("_1.JPEG")
    counts = {split: len(list((prepared / split).glob("*/*.JPEG"))) for split in ("train", "val")}
    assert report["counts"] == counts == {"train": TINY.classes * TINY.train_per_class - 1,
                                          "val": TINY.classes * TINY.val_per_class}


def test_statistics_equal_numpy_over_the_stored_training_images(prepared):
    stats = DatasetStats.load(prepared / "stats.npz")
    images = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float64)
                       for p in sorted((prepared / "train").glob("*/*.JPEG"))])
    # the statistics are of the pixels before JPEG encoding, so allow for compression noise
    np.testing.assert_allclose(stats.channel_mean, images.reshape(-1, 3).mean(0), atol=0.5)
    np.testing.assert_allclose(stats.channel_std, images.reshape(-1, 3).std(0), rtol=0.02)
    np.testing.assert_allclose(stats.mean_image, images.mean(0), atol=3.0)
    covariance = np.cov((images.reshape(-1, 3) / 255).T)
    eigval = np.linalg.eigvalsh(covariance)[::-1]
    np.testing.assert_allclose(stats.eigval, eigval, rtol=0.05)
    reconstructed = stats.eigvec @ np.diag(stats.eigval) @ stats.eigvec.T
    np.testing.assert_allclose(reconstructed, covariance, atol=2e-3)


def test_rerun_of_a_finished_dataset_is_a_quick_no_op(official_source, prepared):
    before = {p: p.stat().st_mtime_ns for p in prepared.rglob("*") if p.is_file() and p.name != "lock"}
    summary = prepare_imagenet(PrepareOptions(official_source, prepared, workers=1))
    assert summary.already_done
    assert {p: p.stat().st_mtime_ns for p in prepared.rglob("*") if p.is_file() and p.name != "lock"} == before


def test_a_finished_dataset_keeps_no_partial_statistics(prepared):
    assert (prepared / "stats.npz").is_file()
    assert not (prepared / ".work" / "stats").exists() and not (prepared / ".work" / "tmp").exists()


def test_rerun_with_other_options_is_refused(official_source, prepared):
    with pytest.raises(AlexnetError, match="size=256"):
        prepare_imagenet(PrepareOptions(official_source, prepared, workers=1, size=128))


def test_subset_keeps_k_classes_m_images_and_their_val_images(official_source, tmp_path):
    summary = prepare_imagenet(PrepareOptions(official_source, tmp_path, workers=2, classes=2, per_class=3,
                                              mode="shorter", size=64))
    classes = read_classes(tmp_path)
    assert len(classes) == 2 and summary.counts["val"] == 2 * TINY.val_per_class
    train = list_split(tmp_path, "train", classes)
    assert len(train) <= 6
    with Image.open(train.files[0]) as image:
        assert min(image.size) == 64


def test_imagefolder_sources_are_accepted(prepared, tmp_path):
    out = tmp_path / "again"
    summary = prepare_imagenet(PrepareOptions(prepared, out, workers=1, size=128))
    assert summary.counts == json.loads((prepared / "report.json").read_text())["counts"]
    assert [c.wnid for c in read_classes(out)] == [c.wnid for c in read_classes(prepared)]


def _tar_with(path: Path, members: list[tarfile.TarInfo], data: bytes = b"x") -> None:
    with tarfile.open(path, "w") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


@pytest.mark.parametrize("evil", ["../escape.JPEG", "/abs/path.JPEG", "link"])
def test_malicious_val_tars_are_refused_and_nothing_is_written_outside_out(official_source, tmp_path, evil):
    source = tmp_path / "source"
    source.mkdir()
    for name in (official.TRAIN_TAR, official.DEVKIT_TAR):
        (source / name).symlink_to(official_source / name)
    info = tarfile.TarInfo(evil)
    if evil == "link":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    else:
        info.size = 1
    _tar_with(source / official.VAL_TAR, [info])
    out = tmp_path / "out"
    with pytest.raises(AlexnetError, match="refusing|symlink"):
        prepare_imagenet(PrepareOptions(source, out, workers=1))
    assert not (tmp_path / "escape.JPEG").exists() and not Path("/abs/path.JPEG").exists()
    assert not (out / "val").exists()


def test_missing_official_file_is_named(official_source, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / official.TRAIN_TAR).symlink_to(official_source / official.TRAIN_TAR)
    (source / official.VAL_TAR).symlink_to(official_source / official.VAL_TAR)
    with pytest.raises(AlexnetError, match=official.DEVKIT_TAR):
        prepare_imagenet(PrepareOptions(source, tmp_path / "out", workers=1))


def _tree_digest(root: Path) -> dict[str, str]:
    keep = ("train/", "val/", "classes.json", "report.json", "stats.npz", "dataset.json")
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and str(p.relative_to(root)).startswith(keep)}


def test_a_prepare_killed_mid_run_resumes_to_an_identical_result(tmp_path):
    source = write_demo_source(tmp_path / "source", DemoSpec(classes=8, train_per_class=30, val_per_class=4,
                                                              seed=2))
    reference = tmp_path / "reference"
    prepare_imagenet(PrepareOptions(source, reference, workers=1))
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "alexnet_cli", "prepare-imagenet", "--source", str(source),
               "--out", str(killed), "--workers", "1", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any((killed / ".work" / "done").glob("train-*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "dataset.json").exists(), "the run finished before it could be killed"
    finished = {marker: _identity(marker) for marker in (killed / ".work" / "done").glob("*.json")}
    folders = {folder: _identity(folder) for folder in (killed / "train" / marker.stem.removeprefix("train-")
                                                        for marker in finished if marker.stem.startswith("train-"))}
    prepare_imagenet(PrepareOptions(source, killed, workers=1))
    # A finished unit is not done again: its marker and its class folder are the ones the killed run wrote.
    assert {marker: _identity(marker) for marker in finished} == finished
    assert {folder: _identity(folder) for folder in folders} == folders
    assert len(list((killed / ".work" / "done").glob("*.json"))) > len(finished)  # the rest was done now
    got, expected = _tree_digest(killed), _tree_digest(reference)
    assert got.keys() == expected.keys()
    assert {k: v for k, v in got.items() if k != "report.json"} == {k: v for k, v in expected.items()
                                                                      if k != "report.json"}



def _identity(path: Path) -> tuple[int, int]:
    """(inode, mtime): a file or folder written again, even with the same bytes, has another."""
    info = path.stat()
    return info.st_ino, info.st_mtime_ns

def test_verify_md5_names_the_file_that_is_not_the_official_one(official_source, tmp_path):
    with pytest.raises(AlexnetError, match=f"{official.TRAIN_TAR}: MD5 .* is not the official"):
        prepare_imagenet(PrepareOptions(official_source, tmp_path / "out", workers=1, verify_md5=True))


def test_an_out_holding_files_prepare_did_not_write_is_refused_and_kept(official_source, prepared, tmp_path):
    out = tmp_path / "out"
    wnid = next(p.name for p in (prepared / "train").iterdir())
    mine = out / "train" / wnid / "my_photo.JPEG"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"not prepare's")
    with pytest.raises(AlexnetError, match=f"--out {out} already holds 'train'.*did not write"):
        prepare_imagenet(PrepareOptions(official_source, out, workers=1))
    assert mine.read_bytes() == b"not prepare's"
    assert sorted(p.name for p in out.iterdir()) == ["train"]  # nothing of its own left behind either
    a_file = tmp_path / "a-file"
    a_file.write_text("keep")
    with pytest.raises(AlexnetError, match="is a file"):
        prepare_imagenet(PrepareOptions(official_source, a_file, workers=1))


def test_the_demo_rewrites_its_own_source_whenever_it_runs_again(tmp_path, monkeypatch):
    spec = DemoSpec(classes=2, train_per_class=2, val_per_class=1, seed=4, hazards=False)
    monkeypatch.setattr(time, "asctime", lambda *_: "Mon Jan  1 10:00:00 2001")  # the clock savemat reads
    source = write_demo_source(tmp_path / "source", spec)
    monkeypatch.setattr(time, "asctime", lambda *_: "Tue Jan  2 10:00:01 2001")
    write_demo_source(source, spec)  # its own files, byte for byte: replaced, not refused


def test_the_demo_recognises_the_source_an_earlier_version_wrote_with_a_dated_devkit(tmp_path):
    spec = DemoSpec(classes=2, train_per_class=2, val_per_class=1, seed=4, hazards=False)
    source = write_demo_source(tmp_path / "source", spec)
    devkit = source / official.DEVKIT_TAR
    members = _members_gz(devkit)
    dated = [(name, b"MATLAB 5.0 MAT-file Platform: posix, Created on: Mon Jan  1 10:00:00 2001".ljust(116) + data[116:]
              if name.endswith("meta.mat") else data) for name, data in members]
    devkit.write_bytes(gzip.compress(_tar_bytes(dated), mtime=0))  # as the demo wrote it before its header was fixed
    write_demo_source(source, spec)
    assert _members_gz(devkit) == members


def _members_gz(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(path.read_bytes()))) as tar:
        return [(info.name, tar.extractfile(info).read()) for info in tar]


def test_a_link_planted_in_prepares_scratch_folder_is_refused_not_written_through(official_source, tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / ".work" / "tmp").mkdir(parents=True)
    for index in range(TINY.classes):
        (out / ".work" / "tmp" / f"train-{demo_wnid(index)}").symlink_to(elsewhere)
    with pytest.raises(AlexnetError, match=r"cannot remove .*/\.work/tmp/train-n9\d+: .*remove it by hand"):
        prepare_imagenet(PrepareOptions(official_source, out, workers=1))
    assert list(elsewhere.iterdir()) == []


def test_a_source_inside_out_as_demo_writes_it_is_prepared(tmp_path):
    out = tmp_path / "demo"
    source = write_demo_source(out / "source", DemoSpec(classes=2, train_per_class=3, val_per_class=1, seed=4,
                                                        hazards=False))
    summary = prepare_imagenet(PrepareOptions(source, out, workers=1))
    assert summary.counts["train"] == 6 and (out / "source").is_dir()


def test_demo_checks_out_before_writing_its_source_and_never_follows_a_link_out_of_it(tmp_path):
    real = tmp_path / "real" / "source" / official.VAL_TAR  # someone's own source, where the demo writes its own
    real.parent.mkdir(parents=True)
    real.write_bytes(b"the real validation tar")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "other.txt").write_text("mine")
    elsewhere, linked = tmp_path / "elsewhere", tmp_path / "linked"
    elsewhere.mkdir()
    linked.mkdir()
    (linked / "source").symlink_to(elsewhere)
    for out, named in ((real.parent.parent, str(real)), (busy, "'other.txt'"), (linked, str(linked / "source"))):
        result = invoke_alexnet("prepare-imagenet", "--demo", "--out", out, "--quiet")
        message = result.stderr.strip()
        assert result.returncode == 2 and message.count("\n") == 0 and named in message, message
    assert real.read_bytes() == b"the real validation tar" and list(real.parent.iterdir()) == [real]
    assert sorted(p.name for p in busy.iterdir()) == ["other.txt"]  # refused before the demo wrote busy/source
    assert list(elsewhere.iterdir()) == []


def _copy_source_with(official_source: Path, folder: Path, name: str, members: list[tuple[str, bytes]]) -> Path:
    """The official source with one of its tars rewritten to hold ``members``."""
    folder.mkdir()
    for other in (official.TRAIN_TAR, official.VAL_TAR, official.DEVKIT_TAR):
        if other != name:
            (folder / other).symlink_to(official_source / other)
    with tarfile.open(folder / name, "w") as tar:
        for member_name, data in members:
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return folder


def _members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(info.name, tar.extractfile(info).read()) for info in tar]


def test_a_train_tar_cut_at_a_member_boundary_is_refused_naming_the_missing_classes(official_source, tmp_path):
    members = _members(official_source / official.TRAIN_TAR)
    cut = _copy_source_with(official_source, tmp_path / "cut", official.TRAIN_TAR, members[:2])
    missing = sorted(name.removesuffix(".tar") for name, _ in members[2:])
    with pytest.raises(AlexnetError, match=f"holds class tars for 2 of the devkit's 4 classes; missing 2: "
                                           f"{missing[0]}, {missing[1]}"):
        prepare_imagenet(PrepareOptions(cut, tmp_path / "out", workers=1))
    # a --classes subset is drawn from the devkit: it prepares when its classes are all there...
    present = {name.removesuffix(".tar") for name, _ in members[:2]}
    seed = next(s for s in range(100) if set(choose_classes(sorted(present | set(missing)), 2, s)) == present)
    summary = prepare_imagenet(PrepareOptions(cut, tmp_path / "subset", workers=1, classes=2, seed=seed))
    assert summary.classes == 2 and summary.counts["val"] == 2 * TINY.val_per_class
    # ...and is refused when one of them is not (any 3 of the 4 include a missing one)
    with pytest.raises(AlexnetError, match="for [12] of 3 chosen classes; missing [12]: "):
        prepare_imagenet(PrepareOptions(cut, tmp_path / "subset3", workers=1, classes=3))


def test_a_truncated_val_tar_is_refused_naming_the_first_missing_image(official_source, tmp_path):
    members = sorted(_members(official_source / official.VAL_TAR))
    cut = _copy_source_with(official_source, tmp_path / "cut", official.VAL_TAR, members[: len(members) // 2])
    first_missing = members[len(members) // 2][0]
    with pytest.raises(AlexnetError, match=f"holds {len(members) // 2} of the {len(members)} validation images.*"
                                           f"{first_missing} is missing"):
        prepare_imagenet(PrepareOptions(cut, tmp_path / "out", workers=1))


def test_a_class_tar_cut_inside_a_member_is_refused_naming_it(official_source, tmp_path):
    members = _members(official_source / official.TRAIN_TAR)
    name, inner = members[1]
    inner_members = _members_of_bytes(inner)
    cut_at = 512 + len(inner_members[0][1]) // 2  # inside the first image (after its 512-byte header)
    members[1] = (name, inner[:cut_at])
    cut = _copy_source_with(official_source, tmp_path / "cut", official.TRAIN_TAR, members)
    with pytest.raises(AlexnetError, match=f"{name} is cut short inside '{inner_members[0][0]}'"):
        prepare_imagenet(PrepareOptions(cut, tmp_path / "out", workers=1))


def _members_of_bytes(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(info.name, tar.extractfile(info).read()) for info in tar]


def test_a_first_attempt_that_fails_leaves_nothing_and_a_corrected_rerun_with_other_options_starts(official_source,
                                                                                                   tmp_path):
    out = tmp_path / "out"
    with pytest.raises(AlexnetError, match="is not a folder"):
        prepare_imagenet(PrepareOptions(tmp_path / "no-such-source", out, workers=1))
    assert not out.exists()
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / official.TRAIN_TAR).symlink_to(official_source / official.TRAIN_TAR)  # no val tar, no devkit
    with pytest.raises(AlexnetError):
        prepare_imagenet(PrepareOptions(partial, out, workers=1))
    assert not out.exists()
    summary = prepare_imagenet(PrepareOptions(official_source, out, workers=1, per_class=2))
    fresh = prepare_imagenet(PrepareOptions(official_source, tmp_path / "fresh", workers=1, per_class=2))
    assert not summary.already_done and summary.counts == fresh.counts and summary.counts["train"] <= 2 * TINY.classes


def test_an_imagefolder_val_class_missing_from_train_is_refused_naming_it(prepared, tmp_path):
    source = tmp_path / "folders"
    for split in ("train", "val"):
        (source / split).mkdir(parents=True)
        for class_dir in sorted((prepared / split).iterdir()):
            (source / split / class_dir.name).symlink_to(class_dir)
    classes = sorted(p.name for p in (prepared / "train").iterdir())
    (source / "train" / classes[1]).unlink()  # two val classes without training images
    (source / "train" / classes[3]).unlink()
    result = invoke_alexnet("prepare-imagenet", "--source", source, "--out", tmp_path / "out", "--workers", "1")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {source / 'val' / classes[1]} has no training folder {source / 'train' / classes[1]} (2 such val "
        f"class(es): {classes[1]}, {classes[3]}): the network could never predict it; add its training images or "
        "move it out of val/")
    assert not (tmp_path / "out").exists()


def test_the_disk_check_writes_sizes_in_units_that_fit_them(official_source, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2048, 2048))  # a full disk
    with pytest.raises(AlexnetError) as refused:
        prepare_imagenet(PrepareOptions(official_source, tmp_path / "out", workers=1))
    assert re.search(r"has 2\.0 kB free but the prepared images need about \d+\.\d (kB|MB);", str(refused.value))


def test_sizes_are_written_in_the_unit_that_fits():
    from alexnet_cli.terminal import byte_size

    assert [byte_size(n) for n in (0, 999, 1000, 2_345_678, 3.2e9, 1.5e12, 2e15)] == [
        "0 B", "999 B", "1.0 kB", "2.3 MB", "3.2 GB", "1.5 TB", "2.0 PB"]


def _prepare_in_a_process(source: Path, out: Path, limit: int, size: int) -> subprocess.CompletedProcess:
    """prepare-imagenet with two workers in a fresh process under one resource limit (soft and hard)."""
    import resource

    return subprocess.run([sys.executable, "-m", "alexnet_cli", "prepare-imagenet", "--source", str(source),
                           "--out", str(out), "--workers", "2", "--quiet"], capture_output=True, text=True,
                          preexec_fn=lambda: resource.setrlimit(limit, (size, size)), timeout=120)


def test_a_full_disk_while_preparing_is_one_line_naming_out(official_source, tmp_path):
    import resource

    out = tmp_path / "out"  # a 4 kB file size limit: a worker's JPEG write fails as on a full disk, naming no file
    result = _prepare_in_a_process(official_source, out, resource.RLIMIT_FSIZE, 4096)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: could not write under {out}: the disk is full"), result.stderr


def test_too_small_an_open_files_limit_is_one_line_before_any_work(official_source, tmp_path):
    import resource

    result = _prepare_in_a_process(official_source, tmp_path / "out", resource.RLIMIT_NOFILE, 16)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr  # it hung with the pool
    assert "the open-files limit (ulimit -n) is 16, too few for 2 worker(s): raise it to" in result.stderr
    assert not (tmp_path / "out" / "train").exists()


def test_a_greyscale_dataset_prepares_and_its_rank_one_colour_statistics_load(tmp_path):
    """Every pixel grey: the RGB covariance has rank one, and its two zero eigenvalues come out of eigh as
    tiny numbers of either sign; training must still load the statistics (data/stats.check_stats)."""
    from alexnet_cli.data.stats import load_stats

    source = tmp_path / "grey"
    generator = np.random.default_rng(3)
    for split, count in (("train", 3), ("val", 1)):
        for wnid in ("n01440764", "n01443537"):
            folder = source / split / wnid
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = generator.integers(0, 256, (80, 96), dtype=np.uint8)
                Image.fromarray(pixels, "L").save(folder / f"{wnid}_{index}.JPEG", quality=95)
    out = tmp_path / "prepared"
    prepare_imagenet(PrepareOptions(source, out, workers=1, size=64))
    stats = load_stats(out)
    assert stats.eigval[0] > 0.01 and np.abs(stats.eigval[1:]).max() < 1e-9
    assert np.allclose(np.abs(stats.eigvec[:, 0]), 3 ** -0.5)  # the grey axis
