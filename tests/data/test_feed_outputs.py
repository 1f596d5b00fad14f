"""The feed's outputs, named once (``TrainBatch``, ``EvalBatch``): each name holds what it says."""

import numpy as np
import pytest
from PIL import Image

from alexnet_cli.data import feed as F
from alexnet_cli.data.sample_readers import FileReader
from alexnet_cli.data.sampling import Augmentation, ShardPlan

CHANNEL_MEAN = np.array([120.0, 110.0, 100.0], np.float32)
CHANNEL_STD = np.array([60.0, 55.0, 50.0], np.float32)


class Info:
    def __init__(self, iteration: int) -> None:
        self.iteration, self.epoch_idx = iteration, 0


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """Twelve small JPEGs, each a flat colour of its own."""
    root = tmp_path_factory.mktemp("jpegs")
    for k in range(12):
        Image.new("RGB", (40, 32), (20 * k, 5 * k, 255 - 20 * k)).save(root / f"{k:02d}.jpg")
    return root


def make_feed(root, *, augmentation: Augmentation | None, train: bool) -> F.BatchFeed:
    paths = np.array([f"{k:02d}.jpg".encode() for k in range(12)], dtype=bytes)
    plan = ShardPlan(12, 5, shard_id=1, num_shards=2, train=train, seed=3)
    return F.BatchFeed(reader=FileReader(f"{root}/", paths), labels=np.arange(100, 112), plan=plan,
                       augmentation=augmentation, channel_mean=CHANNEL_MEAN, channel_std=CHANNEL_STD,
                       sizes=F.SizeRule(), start_epoch=2, start_step=0, steps_per_epoch=plan.steps_per_epoch)


def augmentation() -> Augmentation:
    eigvec = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    return Augmentation(crop=24, image_size=32, mirror=True, pca_std=0.3, eigval=np.array([0.2, 0.05, 0.01]),
                        eigvec=eigvec, seed=3)


def test_the_training_feed_names_each_drawn_choice(jpegs):
    feed = make_feed(jpegs, augmentation=augmentation(), train=True)
    batch = feed(Info(0))
    drawn = feed.augmentation.draw(2, 0, 1, 5)
    assert isinstance(batch, F.TrainBatch) and len(batch) == len(F.TrainBatch._fields)
    np.testing.assert_array_equal(batch.pos_x, drawn["position"][:, 0])
    np.testing.assert_array_equal(batch.pos_y, drawn["position"][:, 1])
    np.testing.assert_array_equal(batch.mirror, drawn["mirror"])
    np.testing.assert_allclose(batch.mean, CHANNEL_MEAN - drawn["shift"], rtol=1e-6)  # the PCA shift (§4.1)
    np.testing.assert_array_equal(batch.std, np.tile(CHANNEL_STD, (5, 1)))


def test_the_training_feed_names_the_batch_its_labels_and_files(jpegs):
    feed = make_feed(jpegs, augmentation=augmentation(), train=True)
    batch = feed(Info(0))
    indices = feed.plan.batch_indices(2, 0)
    assert batch.labels.tolist() == (100 + indices).tolist()
    assert batch.batch_info[:, F.INDEX].tolist() == indices.tolist()
    assert (batch.batch_info[:, F.EPOCH] == 2).all() and (batch.batch_info[:, F.STEP] == 0).all()
    assert [bytes(j) for j in batch.jpegs] == [(jpegs / f"{k:02d}.jpg").read_bytes() for k in indices]


def test_the_evaluation_feed_gives_every_sample_the_channel_normalisation(jpegs):
    feed = make_feed(jpegs, augmentation=None, train=False)
    batch = feed(Info(1))  # shard 1 of 2 holds images 1, 3, ..., 11: its second batch is the short one
    assert isinstance(batch, F.EvalBatch) and len(batch) == len(F.EvalBatch._fields)
    assert batch.labels.tolist() == [111]
    np.testing.assert_array_equal(batch.mean, CHANNEL_MEAN[None])
    np.testing.assert_array_equal(batch.std, CHANNEL_STD[None])
    assert batch.batch_info[:, F.INDEX].tolist() == [11] and (batch.batch_info[:, F.STEP] == 1).all()
