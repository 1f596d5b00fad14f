"""The DALI pipelines on real JPEGs: crops, flips, PCA, mean subtraction, sharding, resumption."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from conftest import invoke_alexnet
from PIL import Image

from alexnet_cli.data.datamodule import DaliDataModule
from alexnet_cli.data.dataset_files import list_split, read_classes
from alexnet_cli.data.loader import DaliLoader
from alexnet_cli.data.normalization import Normalization
from alexnet_cli.data.pipeline_options import PipelineOptions
from alexnet_cli.data.sampling import Augmentation, ShardPlan
from alexnet_cli.data.stats import load_stats
from alexnet_cli.data.workers import Workers
from alexnet_cli.recipes import DataConfig

RAW = Normalization(np.zeros(3), np.ones(3))  # outputs are plain 0–255 pixels
CROP = 227


def pixels(path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1).float()


def make_loader(root, kind, *, batch_size=4, shard=(0, 1), normalization=RAW, pca_std=0.0, mirror=True,
                seed=0, split=None, device="cpu", py_workers=1, steps_per_epoch=None, exact_decode=False):
    classes = read_classes(root)
    files = list_split(root, split or ("train" if kind == "train" else "val"), classes)
    plan = ShardPlan(len(files), batch_size, shard[0], shard[1], train=kind == "train", seed=seed)
    stats = load_stats(root)
    augmentation = None
    if kind == "train":
        augmentation = Augmentation(crop=CROP, image_size=256, mirror=mirror, pca_std=pca_std, eigval=stats.eigval,
                                    eigvec=stats.eigvec, seed=seed)
    options = PipelineOptions.from_config(DataConfig(device=device, prefetch=2, exact_decode=exact_decode),
                                          device_id=0 if device == "gpu" else None, crop=CROP, resize_size=None,
                                          normalization=normalization, augmentation=augmentation,
                                          workers=Workers(threads=2, readers=py_workers), seed=seed, lookahead=0)
    return DaliLoader(kind, files, plan, options, steps_per_epoch=steps_per_epoch), files


def close_to(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().mean().item()


def test_datamodule_yields_batches_of_the_right_shape_labels_and_count(prepared):
    module = DaliDataModule(prepared, DataConfig(device="cpu", batch_size=5, num_threads=2), crop=CROP)
    train = module.train_dataloader()
    batches = list(train)
    assert len(batches) == len(train) == len(module.split("train")) // 5
    images, labels = batches[0]
    assert images.shape == (5, 3, CROP, CROP) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= set(range(module.num_classes))
    val = list(module.val_dataloader())
    assert sum(len(labels) for _, labels in val) == len(module.split("val"))


def test_labels_follow_the_sorted_class_folders(prepared):
    loader, files = make_loader(prepared, "val", batch_size=100)
    _, labels = next(iter(loader))
    classes = read_classes(prepared)
    expected = [classes.index(next(c for c in classes if c.wnid == Path(f).parent.name)) for f in files.files]
    assert labels.tolist() == expected == sorted(expected)


def test_centre_crop_equals_torchvision_center_crop(prepared):
    loader, files = make_loader(prepared, "val", batch_size=100)
    images, _ = next(iter(loader))
    for image, path in zip(images, files.files):
        reference = pixels(path)
        expected = TF.center_crop(reference, [CROP, CROP])
        off_by_one = reference[:, 15 : 15 + CROP, 15 : 15 + CROP]
        assert close_to(image, expected) < 1.0  # decoders may differ by rounding only
        assert close_to(image, expected) < close_to(image, off_by_one)


@pytest.mark.parametrize("side", [258, 259])
def test_centre_crop_rounds_half_to_even_like_torchvision_on_odd_and_even_slack(prepared, tmp_path, side):
    import shutil

    root = tmp_path / "resized"
    shutil.copytree(prepared, root)
    for path in (root / "val").glob("*/*.JPEG"):  # 258: half-slack 15.5 → 16 (floor would give 15)
        with Image.open(path) as image:
            image.convert("RGB").resize((side, side)).save(path, quality=95)
    loader, files = make_loader(root, "val", batch_size=100)
    images, _ = next(iter(loader))
    for image, path in zip(images, files.files):
        reference = pixels(path)
        expected = TF.center_crop(reference, [CROP, CROP])
        start = (side - CROP) // 2  # floor
        floored = reference[:, start : start + CROP, start : start + CROP]
        assert close_to(image, expected) < 1.0
        if side == 258:
            assert close_to(image, expected) < close_to(image, floored)


def test_ten_crops_equal_torchvision_ten_crop_in_its_order(prepared):
    loader, files = make_loader(prepared, "ten_crop", batch_size=100)
    images, _ = next(iter(loader))
    assert images.shape == (len(files), 10, 3, CROP, CROP)
    for crops, path in zip(images, files.files):
        expected = TF.ten_crop(pixels(path), [CROP, CROP])
        for got, want in zip(crops, expected):
            assert close_to(got, want) < 1.0
        # TenCrop mirrors the image, then crops: its mirrored top-left is the top-right, mirrored.
        for mirrored, plain in ((5, 1), (6, 0), (7, 3), (8, 2)):
            torch.testing.assert_close(crops[mirrored], crops[plain].flip(-1))


def test_training_crops_sit_at_the_drawn_offsets_and_flips_are_mirrors(prepared):
    loader, files = make_loader(prepared, "train", batch_size=8, mirror=True)
    images, _ = next(iter(loader))
    indices = loader.plan.batch_indices(0, 0)
    drawn = loader.augmentation.draw(0, 0, 0, len(indices))
    assert 0 < drawn["mirror"].sum() < len(indices), "want both flipped and plain images in the batch"
    for image, index, (x, y), flip in zip(images, indices, drawn["offsets"], drawn["mirror"]):
        expected = pixels(files.files[index])[:, y : y + CROP, x : x + CROP]
        if flip:
            expected = expected.flip(-1)
        assert close_to(image, expected) < 1.5


def test_pca_colour_shift_adds_the_eigen_combination_to_every_pixel(prepared):
    stats = load_stats(prepared)
    norm = Normalization(stats.channel_mean, stats.channel_std)
    plain, _ = make_loader(prepared, "train", batch_size=8, normalization=norm, pca_std=0.0)
    shifted, _ = make_loader(prepared, "train", batch_size=8, normalization=norm, pca_std=0.1)
    a, _ = next(iter(plain))
    b, _ = next(iter(shifted))
    alpha = shifted.augmentation.draw(0, 0, 0, 8)["alpha"]  # the draw's random numbers, not its arithmetic
    # §4.1, written out here: to each pixel add Σᵢ pᵢ αᵢ λᵢ, pᵢ the i-th eigenvector (a column), on the 0–1 scale
    shift = np.stack([sum(stats.eigvec[:, i] * a[i] * stats.eigval[i] for i in range(3)) for a in alpha]) * 255
    difference = (b - a) * torch.as_tensor(stats.channel_std, dtype=torch.float32)[None, :, None, None]
    expected = torch.as_tensor(shift, dtype=torch.float32)[:, :, None, None].expand_as(difference)
    torch.testing.assert_close(difference, expected, atol=2e-3, rtol=1e-3)


def test_pca_shift_statistics_match_the_eigen_decomposition():
    eigval = np.array([0.2, 0.02, 0.004])
    eigvec = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    augmentation = Augmentation(crop=CROP, image_size=256, mirror=True, pca_std=0.1, eigval=eigval, eigvec=eigvec)
    shifts = np.concatenate([augmentation.draw(0, step, 0, 1000)["shift"] for step in range(20)]) / 255.0
    expected = eigvec @ np.diag((0.1 * eigval) ** 2) @ eigvec.T
    np.testing.assert_allclose(np.cov(shifts.T), expected, atol=2e-5)
    np.testing.assert_allclose(shifts.mean(0), 0, atol=2e-3)


def test_mean_image_subtraction_uses_the_same_crop_and_mirror(prepared):
    stats = load_stats(prepared)
    with_mean = Normalization(stats.channel_mean, stats.channel_std, stats.mean_image)
    raw, _ = make_loader(prepared, "train", batch_size=8)
    centred, _ = make_loader(prepared, "train", batch_size=8, normalization=with_mean)
    a, _ = next(iter(raw))
    b, _ = next(iter(centred))
    mean = torch.as_tensor(stats.mean_image).permute(2, 0, 1)
    drawn = raw.augmentation.draw(0, 0, 0, 8)
    for k, ((x, y), flip) in enumerate(zip(drawn["offsets"], drawn["mirror"])):
        crop = mean[:, y : y + CROP, x : x + CROP]
        torch.testing.assert_close(a[k] - b[k], crop.flip(-1) if flip else crop, atol=1e-3, rtol=0)


def test_mean_image_in_ten_crop_follows_torchvision_order(prepared):
    stats = load_stats(prepared)
    raw, _ = make_loader(prepared, "ten_crop", batch_size=2)
    centred, _ = make_loader(prepared, "ten_crop", batch_size=2,
                             normalization=Normalization(stats.channel_mean, stats.channel_std, stats.mean_image))
    a, _ = next(iter(raw))
    b, _ = next(iter(centred))
    expected = torch.stack(TF.ten_crop(torch.as_tensor(stats.mean_image).permute(2, 0, 1), [CROP, CROP]))
    torch.testing.assert_close(a[0] - b[0], expected, atol=1e-3, rtol=0)


@pytest.mark.parametrize(("images", "shards", "batch"), [(12, 2, 5), (13, 3, 4), (5, 4, 2), (3, 4, 8), (100, 7, 9)])
def test_evaluation_shards_count_every_image_exactly_once(images, shards, batch):
    seen = []
    for shard in range(shards):
        plan = ShardPlan(images, batch, shard, shards, train=False)
        for step in range(plan.steps_per_epoch):
            seen += plan.batch_indices(0, step).tolist()
    assert sorted(seen) == list(range(images))


@pytest.mark.parametrize(("images", "shards", "batch"), [(13, 2, 3), (100, 3, 8), (17, 4, 2)])
def test_training_shards_are_disjoint_with_equal_full_steps(images, shards, batch):
    plans = [ShardPlan(images, batch, shard, shards, train=True, seed=3) for shard in range(shards)]
    assert len({p.steps_per_epoch for p in plans}) == 1
    batches = [np.concatenate([p.batch_indices(1, s) for s in range(p.steps_per_epoch)]) for p in plans]
    assert all(len(b) == plans[0].steps_per_epoch * batch for b in batches)
    everything = np.concatenate(batches)
    assert len(set(everything.tolist())) == len(everything)


def test_each_epoch_is_a_new_permutation_reproducible_from_the_seed():
    plan = ShardPlan(50, 10, seed=7)
    again = ShardPlan(50, 10, seed=7)
    epoch0 = np.concatenate([plan.batch_indices(0, s) for s in range(5)])
    epoch1 = np.concatenate([plan.batch_indices(1, s) for s in range(5)])
    assert not np.array_equal(epoch0, epoch1)
    assert sorted(epoch0) == sorted(epoch1) == list(range(50))
    assert np.array_equal(epoch1, np.concatenate([again.batch_indices(1, s) for s in range(5)]))


def test_two_ranks_of_the_val_loader_together_see_every_image_once(prepared):
    total = []
    for shard in range(2):
        loader, files = make_loader(prepared, "val", batch_size=5, shard=(shard, 2))
        total += [label for _, labels in loader for label in labels.tolist()]
    assert sorted(total) == sorted(files.labels)


def test_a_loader_restarted_at_a_saved_position_continues_with_the_same_batches(prepared):
    uninterrupted, _ = make_loader(prepared, "train", batch_size=4, pca_std=0.1)
    reference = [images.clone() for _ in range(2) for images, _ in uninterrupted]  # buffers are reused
    first, _ = make_loader(prepared, "train", batch_size=4, pca_std=0.1)
    iterator = iter(first)
    head = [next(iterator)[0].clone() for _ in range(2)]
    resumed, _ = make_loader(prepared, "train", batch_size=4, pca_std=0.1)
    resumed.seek(first.epoch, first.step)  # what DataPosition saves
    tail = [images.clone() for images, _ in resumed] + [images.clone() for images, _ in resumed]
    got = head + tail
    assert len(got) == len(reference)
    for a, b in zip(got, reference):
        torch.testing.assert_close(a, b)


def test_a_batch_kept_stays_intact_while_later_batches_arrive(prepared):
    kept_loader, _ = make_loader(prepared, "train", batch_size=2, pca_std=0.1)
    kept = [images for _ in range(2) for images, _ in kept_loader]  # no copies: DALI's own buffers
    copied_loader, _ = make_loader(prepared, "train", batch_size=2, pca_std=0.1)
    copies = [images.clone() for _ in range(2) for images, _ in copied_loader]
    assert len(kept) >= 10
    for a, b in zip(kept, copies):
        torch.testing.assert_close(a, b)


def test_an_epoch_cut_short_does_not_leak_stale_batches_into_the_next(prepared):
    fresh, _ = make_loader(prepared, "train", batch_size=4)
    list(fresh)  # epoch 0
    expected = [labels for _, labels in fresh]  # epoch 1
    cut, _ = make_loader(prepared, "train", batch_size=4)
    for step, _ in enumerate(cut):
        if step == 1:
            break
    got = [labels for _, labels in cut]
    assert [batch.tolist() for batch in got] == [batch.tolist() for batch in expected]


def test_a_file_damaged_after_preparation_does_not_stop_the_epoch(prepared, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    victim = sorted((copy / "train").glob("*/*.JPEG"))[3]
    victim.write_bytes(victim.read_bytes()[:500])  # truncated
    loader, files = make_loader(copy, "train", batch_size=4)
    with pytest.warns(UserWarning, match="not a whole JPEG"):
        batches = [labels.clone() for _, labels in loader]
    assert len(batches) == len(loader) and all(len(b) == 4 for b in batches)


def test_a_dataset_without_dataset_json_is_resized_in_the_pipeline_and_says_so(prepared, tmp_path):
    import shutil

    from alexnet_cli.data.datamodule import DaliDataModule
    from alexnet_cli.recipes import DataConfig

    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    (copy / "dataset.json").unlink()
    with pytest.warns(UserWarning, match="dataset.json not found: the stored image size is unknown"):
        module = DaliDataModule(copy, DataConfig(device="cpu", batch_size=4), crop=227)
    assert module.resize_size == 256


def _with_stats(prepared, tmp_path, **changes):
    """A copy of ``prepared`` (images linked, not copied) whose stats.npz has ``changes``."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("classes.json", "dataset.json"):
        (copy / name).write_bytes((prepared / name).read_bytes())
    for split in ("train", "val"):
        (copy / split).symlink_to(prepared / split)
    stats = load_stats(prepared)
    for field, value in changes.items():
        setattr(stats, field, value)
    stats.save(copy / "stats.npz")
    return copy


@pytest.mark.parametrize(("field", "change", "words"), [
    ("channel_std", lambda s: np.array([58.0, 0.0, 57.0]), "channel_std holds 0, which pixel data cannot give"),
    ("channel_mean", lambda s: np.array([120.0, 1000.0, 110.0]), "channel_mean holds 1000"),
    ("channel_mean", lambda s: np.zeros(4), "channel_mean has shape 4, not 3"),
    ("mean_image", lambda s: s.mean_image[:250, :250], r"mean_image has shape 250×250×3, not 256×256×3 \(dataset.json"),
    ("eigval", lambda s: np.array([0.2, np.nan, 0.01]), "eigval holds values that are not finite numbers"),
    ("eigval", lambda s: np.array([0.2, 0.02, -0.5]), "eigval holds -0.5"),
    ("eigval", lambda s: s.eigval * 255**2, "eigval holds .*, which pixel data cannot give"),
    ("eigvec", lambda s: s.eigvec * 0.5, "eigvec's columns have lengths"),
])
def test_implausible_statistics_are_refused_naming_stats_npz_and_the_field(prepared, tmp_path, field, change, words):
    from alexnet_cli.errors import AlexnetError

    copy = _with_stats(prepared, tmp_path, **{field: change(load_stats(prepared))})
    with pytest.raises(AlexnetError, match=rf"{copy / 'stats.npz'}: {words}"):
        DaliDataModule(copy, DataConfig(device="cpu", batch_size=4, normalize="image"), crop=227)


def test_train_with_a_zero_std_in_stats_npz_stops_before_training_in_one_line(prepared, tmp_path):
    copy = _with_stats(prepared, tmp_path, channel_std=np.zeros(3))
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", copy, "--out", tmp_path / "run", "--dry-run",
                            "--set", "data.batch_size=4")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {copy / 'stats.npz'}: channel_std holds 0, which pixel data cannot " \
                                    "give (it must be above 0 and at most 127.5); prepare the dataset again"
    assert not (tmp_path / "run").exists()
