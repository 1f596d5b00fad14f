"""``alexnet predict``: the top-k classes of a few image files, with names and probabilities."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError

from alexnet_cli.data.prepare.convert import BadImage, convert_image
from alexnet_cli.errors import AlexnetError
from alexnet_cli.models.checkpoint_meta import InputFormat
from alexnet_cli.models.checkpoints import load_checkpoint


@dataclass
class Prediction:
    image: str
    classes: list[dict]  # [{"wnid", "words", "probability"}], most probable first


@dataclass
class Unusable:
    image: str
    reason: str  # the one-line error, which names the image


def preprocess(form: InputFormat, images: list[Path]) -> torch.Tensor:
    """Image files → the centre-crop batch evaluation would feed (shorter side to the resize size); the
    first image that cannot be used is an ``AlexnetError`` naming it. ``form``: a checkpoint's input format
    (``CheckpointMeta.input``)."""
    normalize = form.input_normalization().in_torch()
    return torch.stack([_centre_crop(form, Path(path), normalize) for path in images])


def _centre_crop(form: InputFormat, path: Path, normalize) -> torch.Tensor:
    crop, resize = form.crop, form.resize_size
    if path.is_dir():
        raise AlexnetError(f"{path} is a folder: give image files (a shell glob like {path}/*.JPEG will do)")
    if not path.is_file():
        raise AlexnetError(f"{path} not found")
    _check_proportions(path, resize)
    try:
        rgb = convert_image(path.read_bytes(), resize, "shorter").rgb
    except BadImage as exc:
        raise AlexnetError(f"{path}: {exc}") from None
    pixels = TF.center_crop(torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float(), [crop, crop])
    return normalize.centre(pixels)


# The shorter side goes to the resize size: a long thin image would become a huge one first.
_MAX_ASPECT = 20


def _check_proportions(path: Path, resize: int) -> None:
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return  # convert_image says what is wrong with it, naming the file
    if max(width, height) > _MAX_ASPECT * min(width, height):
        raise AlexnetError(f"{path} is {width}×{height} pixels: more than {_MAX_ASPECT} times longer than wide, "
                           f"too thin to classify from a centre crop (its shorter side would go to {resize})")


def predict(checkpoint: Path, images: list[Path], *, top: int = 5) -> tuple[list[Prediction], list[Unusable]]:
    """Centre-crop each image as evaluation does (shorter side to the resize size) and classify it. An image
    that cannot be used (unreadable, missing, too thin) is listed, not fatal, unless none can be used."""
    loaded = load_checkpoint(Path(checkpoint))
    form = loaded.meta.input
    normalize = form.input_normalization().in_torch()
    crops, usable, unusable = [], [], []
    for path in images:
        try:
            crops.append(_centre_crop(form, Path(path), normalize))
            usable.append(path)
        except AlexnetError as exc:
            unusable.append(Unusable(str(path), str(exc)))
    if not usable:
        more = f" (and the {len(unusable) - 1} other image(s) could not be used either)" if len(unusable) > 1 else ""
        raise AlexnetError(unusable[0].reason + more)
    with torch.inference_mode():
        probabilities = loaded.model(torch.stack(crops)).softmax(dim=1)
    k = min(top, probabilities.shape[1])
    values, indices = probabilities.topk(k, dim=1)
    classes = loaded.meta.classes
    return [
        Prediction(str(path), [{"wnid": classes[i].wnid, "words": classes[i].words, "probability": float(p)}
                               for p, i in zip(row_values.tolist(), row_indices.tolist())])
        for path, row_values, row_indices in zip(usable, values, indices)
    ], unusable
