"""Continuing a run: which checkpoint, and what a resumed run may and may not change."""

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexnet_cli.errors import AlexnetError
from alexnet_cli.models.build import option_value
from alexnet_cli.models.checkpoint_meta import META_KEY
from alexnet_cli.models.checkpoints import checked_weights, read_file, read_meta
from alexnet_cli.parallel.layouts import layout_named
from alexnet_cli.recipes import Recipe, load_recipe, recipe_with_overrides


def resolve_resume(resume: Path) -> tuple[Path, Path | None]:
    """A checkpoint file, or a run directory meaning its newest checkpoint → (checkpoint, its run directory).
    A checkpoint outside a run directory (not in a ``checkpoints`` folder) has none: its run goes to --out."""
    resume = Path(resume)
    if resume.is_dir():
        checkpoint = latest_checkpoint(resume / "checkpoints")
        if checkpoint is None:
            raise AlexnetError(f"--resume {resume}: no checkpoint in {resume / 'checkpoints'} to resume from")
        return checkpoint.resolve(), resume
    if not resume.is_file():
        raise AlexnetError(f"--resume {resume}: no such checkpoint or run directory")
    checkpoint = resume.resolve()  # "last.ckpt" typed inside RUN/checkpoints is in the run too
    return checkpoint, checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def recipe_of_run(resume: Path, overrides: list[str] | None) -> Recipe:
    """The recipe a resume continues with when none is given: the run's recipe.yaml, or else the recipe its
    checkpoint recorded; ``--set`` overrides on top (a resume lists them as its changes)."""
    checkpoint, run_dir = resolve_resume(resume)
    if run_dir is not None and (run_dir / "recipe.yaml").is_file():
        return load_recipe(str(run_dir / "recipe.yaml"), overrides)
    stored = read_file(checkpoint, mmap=True).get(META_KEY)
    saved = read_meta(stored, checkpoint).recipe if isinstance(stored, dict) else None
    if saved is None:
        raise AlexnetError(f"--resume {resume}: no recipe.yaml beside it and none recorded in {checkpoint}; give "
                           "--recipe")
    return recipe_with_overrides(saved, overrides, source=f"{checkpoint}'s recipe")


def latest_checkpoint(directory: Path) -> Path | None:
    """The run's newest state: last.ckpt, unless the run died between writing step-N.ckpt and last.ckpt."""
    candidates = [p for p in [directory / "last.ckpt", *sorted(directory.glob("step-*.ckpt"))] if p.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: _step_of(read_file(p, mmap=True), p))


def _step_of(saved: dict, path: Path) -> int:
    step = saved.get("global_step", -1)
    if isinstance(step, bool) or not isinstance(step, int) or step < -1:
        raise AlexnetError(f"{path}: global_step {step!r} is not a step count; the checkpoint was edited or damaged "
                           "(resume from another one)")
    return step


# Recipe keys a resumed run cannot change: they shape the weights or the scheduler state.
# (The number of classes is checked through the classes themselves.)
_FIXED_ON_RESUME = ("model.arch", "model.fc_width", "optim.schedule")

# Lightning's training state, in every checkpoint 'alexnet train' writes. Without "loops" or "callbacks"
# Lightning resumes silently from step 0 or without ResumeRepair (called only when "callbacks" is there);
# without "optimizer_states" it fails with a KeyError.
_TRAINING_STATE = ("state_dict", "optimizer_states", "loops", "callbacks")


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run continues from and where it stands, read and checked once (``check_resumable``)."""

    checkpoint: Path
    step: int  # its global_step
    # DataPosition's epoch: that of the first batch not yet trained (Lightning's own counter depends on the hook
    # that saved the checkpoint)
    epoch: int
    changes: list[str]  # the recipe keys that differ from the checkpoint's recipe, as "key: old → new"


def limit_reached(point: ResumePoint, recipe: Recipe) -> str | None:
    """The recipe's ``trainer.max_steps`` or ``max_epochs`` when the checkpoint has already reached it (a resume
    would train nothing), as ``key=value``; else None."""
    max_steps, max_epochs = recipe.trainer.max_steps, recipe.trainer.max_epochs
    if 0 < max_steps <= point.step:
        return f"trainer.max_steps={max_steps}"
    if max_epochs is not None and 0 <= int(max_epochs) <= point.epoch:
        return f"trainer.max_epochs={max_epochs}"
    return None


def check_resumable(checkpoint: Path, recipe: Recipe, classes: list, fingerprint: str | None = None,
                    data: Path | None = None) -> ResumePoint:
    """Refuse what cannot change across a resume; the checkpoint's step and epoch, and the recipe keys that did
    change (epochs, lr, batch size... are allowed). ``fingerprint``: the dataset's (``data.fingerprint``), which
    must be the checkpoint's where both are known: a packed twin has its unpacked dataset's."""
    saved = read_file(checkpoint, mmap=True)  # Lightning reads the weights next
    stored = saved.get(META_KEY)
    if not isinstance(stored, dict):
        raise AlexnetError(f"{checkpoint} was not written by 'alexnet train'; it cannot be resumed")
    missing = [key for key in _TRAINING_STATE if key not in saved]
    if missing:
        raise AlexnetError(f"{checkpoint} holds no {', '.join(missing)}: saved weights-only or edited, it cannot "
                           "be resumed (resume from a checkpoints/last.ckpt as 'alexnet train' wrote it)")
    step = _step_of(saved, checkpoint)
    position = (saved.get("callbacks") or {}).get("DataPosition") or {}
    if not all(isinstance(position.get(key, 0), int) and position.get(key, 0) >= 0 for key in ("epoch", "step")):
        raise AlexnetError(f"{checkpoint}: its data position {position!r} is not an (epoch, step); the checkpoint "
                           "was edited or damaged (resume from another one)")
    meta = read_meta(stored, checkpoint)
    checked_weights(saved.get("state_dict"), checkpoint)
    if meta.arch != recipe.model.arch:
        raise AlexnetError(f"{checkpoint} holds arch {meta.arch!r}; the recipe says {recipe.model.arch!r}")
    if meta.wnids != [c.wnid for c in classes]:
        raise AlexnetError(f"{checkpoint} was trained on other classes than this dataset's")
    if (meta.dataset_fingerprint is None) != (fingerprint is None):
        older = f"{checkpoint}" if fingerprint is not None else f"{data}"
        warnings.warn(f"cannot check that {data} holds the images {checkpoint} was trained on: {older} was written "
                      "before datasets had fingerprints", stacklevel=2)
    elif fingerprint is not None and meta.dataset_fingerprint != fingerprint:
        raise AlexnetError(f"{checkpoint} was trained on another dataset than {data} (fingerprint "
                           f"{meta.dataset_fingerprint[:19]}…, {data}'s {fingerprint[:19]}…): resume on the dataset it "
                           "started on, or on its packed (or unpacked) twin")
    before, after = _named_layout(_flatten(meta.recipe or {})), _named_layout(_flatten(recipe.to_dict()))
    changed = [key for key in sorted(set(before) | set(after))
               if key not in ("name", "description") and before.get(key) != after.get(key)]
    for key in changed:
        was, now = _built(meta.arch, key, before.get(key)), _built(meta.arch, key, after.get(key))
        if key in _FIXED_ON_RESUME and was is not None and was != now:
            raise AlexnetError(f"{checkpoint} was trained with {key}={before.get(key)!r}"
                               f"{f' ({was})' if before.get(key) is None else ''}; the recipe says {after.get(key)!r}"
                               f"{f' ({now})' if after.get(key) is None else ''}, which a resumed run cannot change")
    return ResumePoint(checkpoint, max(step, 0), int(position.get("epoch", 0)),
                       [f"{key}: {before.get(key)!r} → {after.get(key)!r}" for key in changed])


def _built(arch: str, key: str, value: Any) -> Any:
    """A fixed key's value as the network is built with it: model.fc_width null is the arch's own width."""
    return option_value(arch, key.removeprefix("model."), value) if key == "model.fc_width" else value


def _named_layout(flat: dict[str, Any]) -> dict[str, Any]:
    """``trainer.strategy`` as the layout it resolves to: a run saved when the towers layouts shared one name
    (``towers``) resumed with a recipe naming ``two-gpu`` or ``hybrid`` changed nothing."""
    if isinstance(flat.get("trainer.strategy"), str):
        devices = flat.get("trainer.devices", 1)
        flat["trainer.strategy"] = layout_named(flat["trainer.strategy"],
                                                devices if isinstance(devices, int) and devices > 0 else 1).name
    return flat


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
