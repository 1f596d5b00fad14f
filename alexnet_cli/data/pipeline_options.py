"""Everything one loader's DALI pipeline is built with, as one frozen value.

The recipe's ``data`` switches keep ``DataConfig``'s names and its defaults, which live there alone; the rest
is what the datamodule resolves for one loader: the GPU it runs on, the crop and resize, the normalisation,
the training draws, the threads and readers (``workers``), the look-ahead of its consumer.
"""

from dataclasses import dataclass

from alexnet_cli.data.normalization import Normalization
from alexnet_cli.data.sampling import Augmentation
from alexnet_cli.data.workers import Workers
from alexnet_cli.devices import DeviceName
from alexnet_cli.recipes import DataConfig


@dataclass(frozen=True)
class PipelineOptions:
    device: DeviceName  # where DALI decodes and augments: the decoder is "mixed" (nvJPEG) on "gpu"
    device_id: int | None  # the GPU the pipeline runs on; None on a CPU-only machine
    crop: int
    resize_size: int | None  # None: the dataset is stored at the resize size, the pipeline does not resize
    normalization: Normalization
    augmentation: Augmentation | None  # training's draws; None for evaluation
    num_threads: int  # DALI's threads: CPU decoding (nvJPEG's host stage on a GPU) and CPU augmentation
    py_workers: int  # processes reading the files (0: the training thread reads them)
    prefetch: int  # DALI's queue depth: the recipe's, plus the batches the consumer asks for ahead
    seed: int
    roi_decode: bool  # decode only the training crop when the images are stored at the resize size
    exact_decode: bool  # GPU: upsample chroma like the CPU decoder (see ``pipelines._decoder``)
    hw_decoder_load: float  # GPU: the share of each batch for the hardware JPEG engines

    @classmethod
    def from_config(cls, config: DataConfig, *, device_id: int | None, crop: int, resize_size: int | None,
                    normalization: Normalization, augmentation: Augmentation | None, workers: Workers, seed: int,
                    lookahead: int) -> "PipelineOptions":
        """The recipe's ``data`` section with what the run resolves. ``lookahead``: batches the consumer asks
        for before it is done with the current one, which DALI's queue holds on top of ``data.prefetch``."""
        return cls(device=config.device, device_id=device_id, crop=crop, resize_size=resize_size,
                   normalization=normalization, augmentation=augmentation, num_threads=workers.threads,
                   py_workers=workers.readers, prefetch=config.prefetch + lookahead, seed=seed,
                   roi_decode=config.roi_decode, exact_decode=config.exact_decode,
                   hw_decoder_load=config.hw_decoder_load)
