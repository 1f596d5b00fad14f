"""Reading checkpoints and weight files safely, and turning them back into models.

Every load uses ``weights_only=True``: a file that needs pickled code to load is
refused, never run. Training checkpoints carry ``checkpoint["alexnet_cli"]``:
the tool version, arch, classes, recipe and normalisation (``CheckpointMeta``).
"""

import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet_cli.data.dataset_files import ClassInfo
from alexnet_cli.errors import AlexnetError, message_line
from alexnet_cli.models.build import build_network
from alexnet_cli.models.checkpoint_meta import META_KEY, CheckpointMeta
from alexnet_cli.recipes import recipe_from_dict


@dataclass
class LoadedCheckpoint:
    model: nn.Module  # eval mode, on CPU
    meta: CheckpointMeta

    @property
    def arch(self) -> str:
        return self.meta.arch

    @property
    def wnids(self) -> list[str]:
        return self.meta.wnids


def read_file(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` and one-line errors.

    ``mmap=True`` maps the tensors instead of reading them: for a glance at the metadata
    of a checkpoint that something else loads in full afterwards.
    """
    path = Path(path)
    if path.is_dir():
        raise AlexnetError(f"{path} is a folder: give a checkpoint file (e.g. {path / 'checkpoints' / 'last.ckpt'})")
    if not path.is_file():
        raise AlexnetError(f"{path} not found")
    if path.stat().st_size == 0:
        raise AlexnetError(f"{path} is empty (0 bytes), a save that never finished: use another checkpoint")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about old pickle protocols; we report below
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        # torch says "Weights only load failed" for code and for random bytes alike; the detail tells them apart
        detail = next((line.strip() for line in str(exc).splitlines()
                       if "GLOBAL" in line or line.strip().startswith("Unsupported")), "unsafe pickle")
        if "GLOBAL" not in detail and "Unsupported global" not in detail:
            raise AlexnetError(f"{path} is not a PyTorch checkpoint (or is damaged): refused "
                               f"({detail[:160]})") from None
        raise AlexnetError(
            f"{path} needs pickled code to load, which could run anything; refused ({detail[:160]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, zipfile.BadZipFile) as exc:
        raise AlexnetError(f"{path} is not a PyTorch checkpoint (or is damaged): refused ({message_line(exc, 160)})"
                           ) from None
    if not isinstance(data, dict):
        raise AlexnetError(f"{path} holds a {type(data).__name__}, not a checkpoint or state dict")
    return data


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """A training checkpoint of this tool → its model (eval mode) and metadata."""
    data = read_file(path)
    stored = data.get(META_KEY)
    if not isinstance(stored, dict) or "arch" not in stored:
        raise AlexnetError(f"{path} was not written by 'alexnet train' (no alexnet_cli metadata); "
                           "for torchvision weights use --weights")
    meta = read_meta(stored, path)
    model = build_network(meta.model_config(), meta.num_classes)
    weights = checked_weights(data.get("state_dict"), path)
    state = {k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")}
    _load_state(model, state, path)
    return LoadedCheckpoint(model.eval(), meta)


def checked_weights(state: Any, path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's ``state_dict``, refused in one line if it is not one, or if a weight holds NaN or infinity
    (a model that answers ``nan%`` is no model): every command that loads weights asks this."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AlexnetError(f"{path}: its state_dict is not a mapping of tensors; the file was edited or damaged")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise AlexnetError(f"{path}: its weights hold NaN or infinity ({name}); it cannot be used: take an "
                               "earlier checkpoint")
    return state


def initial_model(loaded: LoadedCheckpoint) -> nn.Module:
    """The network this checkpoint's run started from: its weights are a function of the recipe's seed
    (``train.prepare_run`` seeds the generator, then builds the model), rebuilt here."""
    if loaded.meta.recipe is None:
        raise AlexnetError("this checkpoint does not record the recipe it was trained with: its start cannot be "
                           "rebuilt")
    recipe = recipe_from_dict(dict(loaded.meta.recipe))
    torch.manual_seed(recipe.seed)  # what prepare_run's seed_everything gives torch, which alone draws the weights
    return build_network(recipe.model, loaded.meta.num_classes).eval()


def read_meta(stored: dict[str, Any], path: Path) -> CheckpointMeta:
    """``CheckpointMeta.from_dict`` with the checkpoint's path in its errors."""
    try:
        return CheckpointMeta.from_dict(stored)
    except AlexnetError as exc:
        raise AlexnetError(f"{path}: {exc}") from None


def load_model(path: Path | str) -> nn.Module:
    """Load a training checkpoint into an eval-mode model (weights only; no code runs)."""
    return load_checkpoint(Path(path)).model


def load_torchvision_weights(path: Path, classes: list[ClassInfo]) -> LoadedCheckpoint:
    """A torchvision ``alexnet`` state dict (e.g. the published alexnet-owt weights) as the ``owt`` arch,
    with torchvision's normalisation and 224 crops."""
    state = read_file(path)
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    checked_weights(state, path)
    weight = state.get("classifier.6.weight")
    if weight is None:
        raise AlexnetError(f"{path} is not a torchvision AlexNet state dict (no classifier.6.weight)")
    meta = CheckpointMeta.of_torchvision(weight.shape[0], classes)
    model = build_network(meta.model_config(), meta.num_classes)
    _load_state(model, state, path)
    return LoadedCheckpoint(model.eval(), meta)


def _load_state(model: nn.Module, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise AlexnetError(f"{path} does not match its arch: {message_line(exc)}") from None
