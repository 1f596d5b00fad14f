"""The paper's ablations: every switch trains on the CPU demo recipe and is listed with the paper's effect."""

import pytest
import torch
import yaml
from conftest import NARROW_FC, invoke_alexnet
from typer.testing import CliRunner

from alexnet_cli.cli import app
from alexnet_cli.inspection.paper_claims import ABLATIONS


@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda a: a.overrides[0])
def test_every_ablation_trains_a_few_steps_and_is_recorded_in_the_checkpoint(ablation, prepared, tmp_path):
    overrides = [item for override in ablation.overrides for item in ("--set", override)]
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", tmp_path, "--quiet",
                            "--set", "trainer.max_steps=2", "--set", "data.batch_size=4",
                            "--set", "trainer.limit_val_batches=0", *NARROW_FC, *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["global_step"] == 2
    recipe = checkpoint["alexnet_cli"]["recipe"]
    for override in ablation.overrides:
        key, value = override.split("=")
        section, name = key.split(".")
        assert recipe[section][name] == yaml.safe_load(value)
    # The checkpoint rebuilds the network it was trained as: the same logits as a model built with the
    # recipe's own switches (LRN and pooling have no weights, so a mix-up would load without complaint).
    from alexnet_cli.models import build_model
    from alexnet_cli.models.checkpoints import load_checkpoint

    loaded = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt").model
    model = recipe["model"]
    expected = build_model(model["arch"], 4, model["dropout"], fc_width=model["fc_width"], lrn=model["lrn"],
                           overlap_pool=model["overlap_pool"], init="builder")
    expected.load_state_dict(loaded.state_dict())
    x = torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), expected.eval()(x))


def test_recipes_lists_each_ablation_with_the_papers_effect():
    result = CliRunner().invoke(app, ["recipes"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for ablation in ABLATIONS:
        assert ablation.overrides[0] in result.output and ablation.section in result.output


def test_recipes_show_applies_an_ablation_switch():
    result = CliRunner().invoke(app, ["recipes", "show", "single-gpu", "--set", "model.lrn=false"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["model"]["lrn"] is False and shown["model"]["overlap_pool"] is True
