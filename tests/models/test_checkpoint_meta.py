"""CheckpointMeta: every format of ``checkpoint["alexnet_cli"]`` written so far still loads; what a run writes
rebuilds its network."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet_cli.data.dataset_files import ClassInfo
from alexnet_cli.data.normalization import Normalization
from alexnet_cli.data.stats import IMAGENET_MEAN, IMAGENET_STD
from alexnet_cli.errors import AlexnetError
from alexnet_cli.models import variants
from alexnet_cli.models.checkpoint_meta import FORMAT, CheckpointMeta
from alexnet_cli.models.checkpoints import initial_model, load_checkpoint
from alexnet_cli.models.paper import LocalResponseNorm, PaperAlexNet
from alexnet_cli.recipes import load_recipe

FORMATS = Path(__file__).parent / "meta_formats"  # each format's record, as the tool of its time wrote it

# The network each fixture's checkpoint held, built without models/build.py: the builder is under test.
NETWORKS = {
    "v1": lambda: variants.keras_v2(3, dropout=0.2),  # format 1: on the paper's mean image
    "v2": lambda: PaperAlexNet(3, lrn=False, overlap_pool=False, fc_width=16),  # format 2: the ablations
    "v3": lambda: variants.owt(3, dropout=0.25, fc_width=32),  # format 3: 240 crops on an adaptive pool
}


def _stored(name: str) -> dict:
    return json.loads((FORMATS / f"{name}.json").read_text())


def _save(tmp_path: Path, network: torch.nn.Module, stored: dict) -> Path:
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in network.state_dict().items()}, "alexnet_cli": stored},
               path)
    return path


def _plain(value):
    """A stored record with its tensors and arrays as lists, comparable with ==."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.tolist() if isinstance(value, (torch.Tensor, np.ndarray)) else value


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_a_checkpoint_of_every_format_written_so_far_loads_with_its_network_and_input(name, tmp_path):
    stored, network = _stored(name), NETWORKS[name]()
    loaded = load_checkpoint(_save(tmp_path, network, stored))
    assert loaded.arch == stored["arch"] and loaded.wnids == [c["wnid"] for c in stored["classes"]]
    assert [c.words for c in loaded.meta.classes] == [c["words"] for c in stored["classes"]]
    assert (loaded.meta.input.crop, loaded.meta.input.resize_size) == (stored["crop"], stored["resize_size"])
    normalization = loaded.meta.input.input_normalization()
    assert normalization.channel_std.tolist() == stored["normalization"]["channel_std"]
    mean_image = stored["normalization"].get("mean_image")
    assert (normalization.mean_image is None) == (mean_image is None)
    assert mean_image is None or normalization.mean_image.tolist() == mean_image
    assert loaded.meta.arch_options == {"fc_width": stored["fc_width"], "lrn": stored.get("lrn", True),
                                        "overlap_pool": stored.get("overlap_pool", True)}
    expected = network.state_dict()
    assert loaded.model.state_dict().keys() == expected.keys()
    assert all(torch.equal(value, expected[key]) for key, value in loaded.model.state_dict().items())
    lrn_layers = [type(m).__name__ for m in loaded.model.modules() if isinstance(m, LocalResponseNorm)]
    assert lrn_layers == [type(m).__name__ for m in network.modules() if isinstance(m, LocalResponseNorm)]


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_the_start_of_every_formats_run_is_rebuilt_from_its_recorded_recipe(name, tmp_path):
    stored, network = _stored(name), NETWORKS[name]()
    start = initial_model(load_checkpoint(_save(tmp_path, network, stored)))
    assert {k: v.shape for k, v in start.state_dict().items()} == {k: v.shape for k, v in network.state_dict().items()}
    assert not all(torch.equal(v, network.state_dict()[k]) for k, v in start.state_dict().items())


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_a_record_of_any_format_is_written_back_in_the_current_one_with_the_same_content(name):
    stored = _stored(name)
    meta = CheckpointMeta.from_dict(stored)
    written = meta.to_dict()
    assert written["format"] == FORMAT
    assert _plain(CheckpointMeta.from_dict(written).to_dict()) == _plain(written)
    kept = {key: value for key, value in stored.items() if key != "format"}
    assert {key: _plain(written[key]) for key in kept} == _plain(kept)


def test_a_record_of_a_newer_format_is_refused_naming_the_file_and_the_upgrade(tmp_path):
    stored = {**_stored("v3"), "format": FORMAT + 1}
    path = _save(tmp_path, torch.nn.Linear(1, 1), stored)
    with pytest.raises(AlexnetError, match=f"{path}: its metadata is of format {FORMAT + 1}.*upgrade alexnet-cli"):
        load_checkpoint(path)


def test_what_a_run_writes_rebuilds_the_recipes_network_and_keeps_its_input():
    recipe = load_recipe("cpu-demo", ["model.fc_width=24", "model.lrn=false", "model.dropout=0.3",
                                      "data.resize_size=288"])
    classes = [ClassInfo(0, "n01440764", "tench"), ClassInfo(1, "n01443537", "goldfish")]
    normalization = Normalization(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]), np.full((4, 5, 3), 7.0))
    meta = CheckpointMeta.of_run(recipe.model, recipe.to_dict(), num_classes=2, classes=classes, crop=227,
                                 resize_size=recipe.data.resize_size, normalization=normalization, version="9.9")
    read = CheckpointMeta.from_dict(meta.to_dict())
    config = read.model_config()
    assert (config.arch, config.num_classes, config.dropout, config.init) == ("paper", 2, 0.3, "builder")
    assert (config.fc_width, config.lrn, config.overlap_pool) == (24, False, True)
    assert (read.input.crop, read.input.resize_size, read.version) == (227, 288, "9.9")
    assert read.input.normalization.mean_image.shape == (4, 5, 3) and read.to_dict()["normalization"]["mode"] == "image"
    assert read.wnids == ["n01440764", "n01443537"] and read.recipe == recipe.to_dict()


def test_torchvision_weights_get_the_owt_record_with_torchvisions_input():
    meta = CheckpointMeta.of_torchvision(2, [ClassInfo(0, "n01440764", "tench"), ClassInfo(1, "n01443537", "")])
    assert (meta.arch, meta.num_classes, meta.input.crop, meta.input.resize_size) == ("owt", 2, 224, 256)
    assert meta.input.normalization.channel_mean.tolist() == IMAGENET_MEAN.tolist()
    assert meta.input.normalization.channel_std.tolist() == IMAGENET_STD.tolist()
    assert meta.to_dict()["source"] == "torchvision weights" and meta.recipe is None


def test_a_hand_written_record_without_normalisation_loads_and_refuses_only_when_fed():
    meta = CheckpointMeta.from_dict({"arch": "keras-v2", "num_classes": 1, "crop": 224,
                                     "classes": [{"index": 0, "wnid": "n01440764"}]})
    assert meta.input.resize_size == 256 and meta.arch_options == {"fc_width": None, "lrn": True, "overlap_pool": True}
    with pytest.raises(AlexnetError, match="records no input normalisation"):
        meta.input.input_normalization()


def _tampered(trained_run, tmp_path: Path, change) -> Path:
    """The session's run's checkpoint with ``change`` applied to what it holds."""
    out, _ = trained_run
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    change(state)
    path = tmp_path / "tampered.ckpt"
    torch.save(state, path)
    return path


def _meta(key, value):
    return lambda state: state["alexnet_cli"].__setitem__(key, value)


@pytest.mark.parametrize(("change", "refusal"), [
    (_meta("format", 0), "its metadata's format 0 is not a format number (1 to 3)"),
    (_meta("format", -2), "its metadata's format -2 is not a format number (1 to 3)"),
    (_meta("format", True), "its metadata's format True is not a format number (1 to 3)"),
    (_meta("format", "3"), "its metadata's format '3' is not a format number (1 to 3)"),
    (_meta("format", 3.0), "its metadata's format 3.0 is not a format number (1 to 3)"),
    (_meta("format", 4), "its metadata is of format 4, newer than this version reads (3): upgrade alexnet-cli"),
    (_meta("arch", 7), "its metadata's arch 7 is not a string"),
    (_meta("arch", "alexnet9"), "its metadata's arch 'alexnet9' is not one this version knows"),
    (_meta("num_classes", "4"), "its metadata's num_classes '4' is not an integer"),
    (lambda s: s["alexnet_cli"]["classes"].pop(), "its metadata lists 3 classes for num_classes 4"),
    (lambda s: s["alexnet_cli"]["classes"][2].update(wnid=s["alexnet_cli"]["classes"][0]["wnid"]),
     "more than once"),
    (lambda s: s["alexnet_cli"]["classes"][1].update(index=5), "its metadata's class 1"),
    (_meta("crop", 100000), "its metadata's crop 100000 is out of range: it must be between 1 and 256"),
    (_meta("crop", "227"), "its metadata's crop '227' is not an integer"),
    (_meta("crop", 200), "its metadata's crop 200 does not fit arch 'paper', which takes 227×227 inputs"),
    (_meta("resize_size", -5), "its metadata's resize_size -5 is out of range"),
    (_meta("dropout", 1.5), "its metadata's dropout 1.5 is not a probability in [0, 1)"),
    (_meta("fc_width", "wide"), "its metadata's fc_width 'wide' is not an integer"),
    (_meta("lrn", "yes"), "its metadata's lrn 'yes' is not true or false"),
    (_meta("normalization", "imagenet"), "its metadata's normalization str is not a mapping"),
    (lambda s: s["alexnet_cli"]["normalization"].update(channel_std=[0.0, 1.0, 1.0]), "must be above 0"),
    (lambda s: s["alexnet_cli"]["normalization"].update(channel_mean=[1.0, 2.0]), "is not three finite numbers"),
    (_meta("recipe", 5), "its metadata's recipe 5 is not a mapping"),
    (_meta("version", 2), "its metadata's version 2 is not a string"),
    (lambda s: s.__setitem__("state_dict", [1, 2]), "its state_dict is not a mapping of tensors"),
    (lambda s: next(iter(s["state_dict"].values())).fill_(float("nan")), "its weights hold NaN or infinity"),
])
def test_every_metadata_field_and_the_weights_are_checked_where_they_are_read(trained_run, tmp_path, change,
                                                                             refusal):
    path = _tampered(trained_run, tmp_path, change)
    with pytest.raises(AlexnetError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and refusal in message and "\n" not in message, message


def test_every_command_that_loads_weights_refuses_non_finite_ones_in_one_line(trained_run, prepared, tmp_path):
    from conftest import THREE_STEP_RUN, invoke_alexnet, one_line_error

    def poison(state):
        state["state_dict"]["model.classifier.fc8.weight"][0, 0] = float("inf")

    path = _tampered(trained_run, tmp_path, poison)
    image = next(prepared.glob("val/*/*.JPEG"))
    one_line_error(invoke_alexnet("predict", "--checkpoint", path, image), "its weights hold NaN or infinity "
                   "(model.classifier.fc8.weight)")
    one_line_error(invoke_alexnet("eval", "--checkpoint", path, "--data", prepared), "its weights hold NaN")
    one_line_error(invoke_alexnet("viz-filters", "--checkpoint", path, "--out", tmp_path / "f.png"),
                   "its weights hold NaN")
    one_line_error(invoke_alexnet("neighbors", "--checkpoint", path, "--data", prepared, "--query", image, "--out",
                                  tmp_path / "grid.png", "--quiet"), "its weights hold NaN")
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    path.rename(run_dir / "checkpoints" / "last.ckpt")
    one_line_error(invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--resume", run_dir,
                                  *THREE_STEP_RUN, "--set", "trainer.max_epochs=2"), "its weights hold NaN")
    assert not (tmp_path / "f.png").exists()
