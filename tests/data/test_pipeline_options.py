"""The pipeline's options: the recipe's data switches reach the pipeline as the recipe set them."""

import dataclasses

import numpy as np

from alexnet_cli.data.normalization import Normalization
from alexnet_cli.data.pipeline_options import PipelineOptions
from alexnet_cli.data.pipelines import _decoder
from alexnet_cli.data.workers import Workers
from alexnet_cli.recipes import DataConfig

# Every switch away from its default, so that one dropped on the way would come back as the default.
CONFIG = DataConfig(device="gpu", prefetch=5, roi_decode=False, exact_decode=True, hw_decoder_load=0.3)


def options(config: DataConfig = CONFIG, lookahead: int = 0) -> PipelineOptions:
    return PipelineOptions.from_config(config, device_id=0, crop=64, resize_size=None,
                                       normalization=Normalization(np.zeros(3), np.ones(3)), augmentation=None,
                                       workers=Workers(threads=2, readers=0), seed=0, lookahead=lookahead)


def test_every_recipe_switch_the_options_name_is_taken_from_the_recipe():
    shared = {f.name for f in dataclasses.fields(PipelineOptions)} & {f.name for f in dataclasses.fields(DataConfig)}
    assert shared == {"device", "prefetch", "roi_decode", "exact_decode", "hw_decoder_load", "num_threads",
                      "py_workers", "resize_size"}
    built = options()
    for name in shared - {"num_threads", "py_workers", "resize_size"}:  # resolved by the run, not copied
        assert getattr(built, name) == getattr(CONFIG, name), name


def test_the_queue_holds_the_consumers_lookahead_on_top_of_the_recipes_prefetch():
    assert options(lookahead=1).prefetch == CONFIG.prefetch + 1


def test_the_gpu_decoder_gets_the_recipes_exact_decode_and_hw_decoder_load():
    assert _decoder(options()) == {"device": "mixed", "jpeg_fancy_upsampling": True, "hw_decoder_load": 0.3}
