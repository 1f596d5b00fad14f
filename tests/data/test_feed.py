"""The pipeline's external source: a pure function of DALI's batch number, run in worker processes."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from test_pipeline import make_loader

from alexnet_cli.data import feed as F
from alexnet_cli.data.loader import hand_off
from alexnet_cli.data.sampling import ShardPlan, epoch_order


class Info:
    def __init__(self, iteration: int) -> None:
        self.iteration, self.epoch_idx = iteration, 0


def make_feed(loader, start=(0, 0)) -> F.BatchFeed:
    loader._start_at(*start)  # builds the pipeline too; the feed is what it was given
    return loader._pipe_source


def test_the_feed_is_a_pure_function_of_the_batch_number(prepared):
    loader, _ = make_loader(prepared, "train", batch_size=4, pca_std=0.1)
    feed = make_feed(loader)
    first, again = feed(Info(3)), feed(Info(3))
    for a, b in zip(first, again):
        if isinstance(a, list):
            assert all(np.array_equal(x, y) for x, y in zip(a, b))
        else:
            assert np.array_equal(a, b)


def test_a_feed_started_mid_way_gives_the_batches_of_one_started_earlier(prepared):
    loader, _ = make_loader(prepared, "train", batch_size=4, pca_std=0.1)
    steps = len(loader)
    early = make_feed(loader, (0, 0))
    late = make_feed(loader, (1, 2))  # the batch 2 of epoch 1 is early's batch steps + 2
    for n in range(4):
        a, b = early(Info(steps + 2 + n)), late(Info(n))
        assert np.array_equal(a[-1], b[-1])  # the batch info: same (epoch, step), same files
        assert np.array_equal(a[5], b[5])  # same PCA shift folded into the mean


def test_the_batch_info_names_each_batch_and_sample(prepared):
    loader, _ = make_loader(prepared, "train", batch_size=4)
    info = make_feed(loader, (2, 1))(Info(0))[-1]
    assert (info[:, F.EPOCH] == 2).all() and (info[:, F.STEP] == 1).all()
    assert info[:, F.INDEX].tolist() == loader.plan.batch_indices(2, 1).tolist()
    assert (info[:, F.PROBLEM] == F.READABLE).all()


def test_jpeg_size_reads_the_frame_header_of_real_jpegs(prepared):
    for path in sorted(prepared.glob("*/*/*.JPEG"))[:10]:
        with Image.open(path) as image:
            assert F.jpeg_size(np.fromfile(path, np.uint8)) == image.size


def test_jpeg_size_of_a_progressive_jpeg_and_of_garbage(tmp_path):
    path = tmp_path / "p.jpg"
    Image.new("RGB", (37, 21), "red").save(path, progressive=True)
    assert F.jpeg_size(np.fromfile(path, np.uint8)) == (37, 21)
    assert F.jpeg_size(np.frombuffer(b"\xff\xd8\x00\x01\x02\x03\x04\x05", np.uint8)) is None


def test_the_epoch_permutation_is_drawn_once_per_epoch_not_once_per_batch():
    plan = ShardPlan(100_000, 64, seed=5)
    epoch_order.cache_clear()
    for step in range(50):
        plan.batch_indices(3, step)
    assert epoch_order.cache_info().misses == 1


def test_one_pipeline_serves_every_epoch_of_an_uninterrupted_loader(prepared):
    loader, _ = make_loader(prepared, "train", batch_size=4)
    for _ in range(3):
        assert len(list(loader)) == len(loader)
    assert loader.pipelines_built == 1


def test_a_loader_told_its_epoch_length_keeps_one_pipeline_and_its_batches(prepared):
    full, _ = make_loader(prepared, "train", batch_size=4)
    expected = [[labels.tolist() for _, labels in full][:2] for _ in range(3)]
    short, _ = make_loader(prepared, "train", batch_size=4, steps_per_epoch=2)
    got = [[labels.tolist() for _, labels in short] for _ in range(3)]
    assert short.pipelines_built == 1 and len(short) == 2
    assert got[0] == expected[0]  # each epoch's first two batches, from its own permutation
    assert all(len(epoch) == 2 for epoch in got)


def test_a_seek_builds_a_pipeline_at_the_new_position(prepared):
    loader, _ = make_loader(prepared, "train", batch_size=4)
    next(iter(loader))
    loader.seek(3, 1)
    _, labels = next(iter(loader))
    reference, _ = make_loader(prepared, "train", batch_size=4)
    reference.seek(3, 1)
    assert loader.pipelines_built == 2
    assert labels.tolist() == next(iter(reference))[1].tolist()


def test_the_in_process_feed_gives_the_same_batches_as_worker_processes(prepared):
    workers, _ = make_loader(prepared, "train", batch_size=4, pca_std=0.1, py_workers=1)
    inline, _ = make_loader(prepared, "train", batch_size=4, pca_std=0.1, py_workers=0)
    for (a, la), (b, lb) in zip(workers, inline):
        torch.testing.assert_close(a, b)
        assert la.tolist() == lb.tolist()


def _add_tiny_jpeg(root, split):
    copy = root.parent / f"{root.name}-tiny-{split}"
    if not copy.exists():
        shutil.copytree(root, copy)
        wnid_dir = sorted((copy / split).iterdir())[0]
        Image.new("RGB", (1, 1), "white").save(wnid_dir / "aaa_tiny.JPEG")
    return copy


def test_an_image_of_the_wrong_size_is_stood_in_for_in_training_with_one_warning(prepared):
    root = _add_tiny_jpeg(prepared, "train")
    loader, files = make_loader(root, "train", batch_size=4)
    with pytest.warns(UserWarning, match=r"aaa_tiny.JPEG is 1×1 pixels, but this dataset's images are 256×256"):
        batches = [labels.clone() for _ in range(2) for _, labels in loader]
    assert all(len(b) == 4 for b in batches) and len(batches) == 2 * len(loader)
    assert [str(f) for f in files.files if "aaa_tiny" in str(f)][0] in loader.damaged


def test_an_image_of_the_wrong_size_is_left_out_of_an_evaluation_naming_it(prepared):
    root = _add_tiny_jpeg(prepared, "val")
    loader, files = make_loader(root, "val", batch_size=5)
    clean, _ = make_loader(prepared, "val", batch_size=5)
    with pytest.warns(UserWarning, match=r"aaa_tiny.JPEG is 1×1 pixels, but the crop is 227 pixels; it is left out"):
        labels = torch.cat([labels.clone() for _, labels in loader])
    tiny = next(k for k, f in enumerate(files.files) if "aaa_tiny" in str(f))
    assert labels[tiny] == F.SKIPPED and (labels == F.SKIPPED).sum() == 1
    expected = torch.cat([labels.clone() for _, labels in clean])
    assert labels[labels != F.SKIPPED].tolist() == expected.tolist()  # every other image once, in order


def test_a_cpu_output_is_refused_for_a_cuda_tensor():
    from nvidia.dali import pipeline_def, types

    @pipeline_def(batch_size=2, num_threads=1, device_id=None)
    def constant():
        return types.Constant(np.ones(3, np.float32), device="cpu")

    pipe = constant()
    pipe.build()
    (output,) = pipe.run()
    assert hand_off(output, torch.device("cpu")).tolist() == [[1.0] * 3] * 2
    with pytest.raises(RuntimeError, match="on the CPU cannot become a tensor on cuda:0"):
        hand_off(output, torch.device("cuda", 0))
