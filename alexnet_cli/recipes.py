"""Recipes: YAML files with the sections ``model``, ``data``, ``optim`` and ``trainer``.

A recipe is data (``yaml.safe_load``), validated into typed dataclasses; every
unknown key or wrong type is an ``AlexnetError`` naming the key. ``--set
section.key=value`` overrides are parsed as YAML scalars and validated the same way.
"""

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from alexnet_cli.errors import AlexnetError, message_line

# How the network runs (models/execution.py); named here, where recipes are read, and used by the models and the
# benchmarks alike.
LrnImpl = Literal["auto", "reference", "closed-form", "triton"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
CompileBackend = Literal["inductor", "aot_eager", "eager"]
# How a network's weights start (each scheme described in models/init.py, which applies them): named here, where
# recipes are read.
InitScheme = Literal["paper", "kaiming", "glorot", "xavier", "tf1-seed", "builder"]


@dataclass
class ModelConfig:
    arch: str = "paper"
    num_classes: int | None = None  # None: as many as the dataset's classes.json lists
    dropout: float | None = None  # None: the arch's own default
    init: InitScheme | None = None  # None: the arch's own (ArchSpec.default_init)
    # The three arch options below apply to the archs whose ArchSpec.options name them (models/build.py); any
    # other arch refuses a non-default value, naming the archs that take it.
    fc_width: int | None = None  # hidden FC width; None: the arch's own
    lrn: bool = True  # §3.3 ablation: false drops local response normalisation
    overlap_pool: bool = True  # §3.4 ablation: false pools 2×2/2 instead of 3×3/2
    # How the network runs (models/execution.py): same numbers and state_dict, other speed.
    lrn_impl: LrnImpl = "auto"  # auto: Triton on a GPU (least traffic; the closed form if it fails its check), the
    # reference on a CPU (models/lrn.choose_impl)
    split_groups: bool = False  # conv2/4/5's two towers as two convolutions instead of one grouped one
    channels_last: bool = False  # NHWC weights and maps, the layout tensor cores read
    compile: bool = False  # torch.compile the network in place (checkpoint keys unchanged)
    compile_mode: CompileMode = "default"  # reduce-overhead: CUDA graphs
    compile_backend: CompileBackend = "inductor"  # aot_eager: capture only (tests)


@dataclass
class DataConfig:
    device: Literal["cpu", "gpu"] = "gpu"  # where DALI decodes and augments
    batch_size: int = 128  # per device
    # DALI's threads per rank (CPU decoding and augmentation) and processes reading the files (0: the training
    # thread reads them); auto: a share of the cores this process may use, per rank (data/workers.py)
    num_threads: int | Literal["auto"] = "auto"
    py_workers: int | Literal["auto"] = "auto"
    crop_size: int | None = None  # None: the arch's input size
    resize_size: int = 256  # shorter side before cropping (§2)
    normalize: Literal["image", "channel"] = "channel"
    pca_std: float = 0.1  # σ of the PCA colour augmentation's α (§4.1); 0 turns it off
    mirror: bool = True  # random horizontal flips (§4.1)
    prefetch: int = 2  # DALI prefetch queue depth
    roi_decode: bool = True  # images stored at resize_size: decode only the training crop
    hw_decoder_load: float = 0.65  # GPU: share of each batch for the hardware JPEG decoder (A100/H100/H200 have one)
    exact_decode: bool = False  # GPU: upsample chroma like the CPU decoder (bit-equal pixels, ~3× slower)


@dataclass
class OptimConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_biases: bool = True  # decay biases too (cuda-convnet, which trained the paper's net, did not)
    nesterov: bool = False
    schedule: Literal["plateau", "cosine", "step", "constant"] = "plateau"
    plateau_patience: int = 0  # ÷10 after more than this many epochs without a new best val error (0: the first)
    step_size: int = 30  # epochs between ÷10 for schedule=step
    gamma: float = 0.1  # the paper's ÷10
    min_lr: float = 1e-5  # the paper reduced three times: 0.01 → 1e-5
    reference_batch: int | None = None  # linear scaling: lr × global batch / reference_batch
    log_grad_norm: bool = False  # log train/grad_norm, the gradient's 2-norm before each step


@dataclass
class CheckpointConfig:
    # last.ckpt every N epochs (null: only when training ends); also mid-epoch, every N steps or M minutes:
    every_n_epochs: int | None = 1
    best: bool = True  # best.ckpt: the best val/top1 so far, rewritten at each new best
    every_n_train_steps: int | None = None
    every_minutes: float | None = None
    keep_last: int = 0  # step-N.ckpt copies kept besides last.ckpt and best.ckpt (0: none)


@dataclass(frozen=True)
class TrainerConfig:
    """``lightning.Trainer``'s arguments: those the tool reads, typed, as the recipe wrote them (checked by
    ``_check_ranges``); the others in ``passed_on``, untouched. Lightning gets only the keys the recipe wrote
    (``written``), so that its own defaults apply to the rest as they always did; the defaults below are what
    the tool assumes of a key left out (``devices``: one, where Lightning's own "auto" takes every GPU)."""

    accelerator: str = "auto"
    devices: int | str | list[int] = 1  # a count, -1 or "auto" (every GPU), or a list of GPU ids
    num_nodes: int = 1
    strategy: str | None = None  # a layout (parallel/layouts.py); None: "auto"
    precision: str | int = "32-true"
    max_epochs: int | None = None
    max_steps: int = -1  # -1: no limit
    log_every_n_steps: int = 50  # also how often the tool's callbacks read device values (one sync)
    logger: str | None = "csv"  # csv, tensorboard or wandb (beside csv)
    limit_val_batches: int | float = 1.0  # 0: no validation
    benchmark: bool | None = None  # cudnn.benchmark
    # The tool's, not Lightning's: how long a rank waits in a collective for a peer that stopped answering (a
    # SIGSTOPped node, a hung NFS mount) before the run ends; Lightning's own default is 30 minutes. It must exceed
    # the longest legitimate wait: rank 0's fsynced 455 MB save, a first compiled step, an uneven validation.
    collective_timeout_s: float = 600.0
    passed_on: dict[str, Any] = field(default_factory=dict)  # every other lightning.Trainer argument
    written: tuple[str, ...] = ()  # the keys the recipe gave, in its order

    @property
    def precision_name(self) -> str:
        return str(self.precision)

    def to_dict(self) -> dict[str, Any]:
        """The section as the recipe wrote it (what recipe.yaml and a checkpoint's recipe hold)."""
        return {key: self.passed_on[key] if key in self.passed_on else getattr(self, key) for key in self.written}

    def lightning_arguments(self) -> dict[str, Any]:
        """What goes to ``lightning.Trainer`` as written: every key but the tool's own (``logger``'s name, the
        collective timeout, which goes to the strategy)."""
        return {key: value for key, value in self.to_dict().items() if key not in ("logger", *TOOL_TRAINER_KEYS)}


# The keys TrainerConfig types: the ones the tool reads.
_TYPED_TRAINER_KEYS = tuple(f.name for f in dataclasses.fields(TrainerConfig) if f.name not in ("passed_on", "written"))


@dataclass
class Recipe:
    name: str = "custom"
    description: str = ""
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as YAML writes it: each section's keys, the trainer's as the recipe wrote them."""
        return {f.name: self.trainer.to_dict() if f.name == "trainer" else
                dataclasses.asdict(value) if dataclasses.is_dataclass(value := getattr(self, f.name)) else value
                for f in dataclasses.fields(self)}


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
# What float() reads as infinite or NaN: YAML 1.1 reads "inf" and "nan" as strings (".inf" is its own
# spelling); they are taken as the numbers, then refused as not finite with the key's allowed range.
_NON_FINITE = re.compile(r"[-+]?(inf|infinity|nan)", re.IGNORECASE)

_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "checkpoint": CheckpointConfig}
_TOP_LEVEL = {"name": str, "description": str, "seed": int}


def recipes_dir() -> Path:
    """The shipped recipes: package data in a wheel, the repo's ``recipes/`` in a checkout."""
    packaged = Path(str(resources.files("alexnet_cli"))) / "recipe_files"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "recipes"


def available_recipes() -> dict[str, Path]:
    return {path.stem: path for path in sorted(recipes_dir().glob("*.yaml"))}


def resolve_recipe_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise AlexnetError(f"recipe file {path} does not exist")
        return path
    known = available_recipes()
    if name_or_path not in known:
        raise AlexnetError(f"unknown recipe {name_or_path!r}: available are {', '.join(known)} (or a path to a .yaml)")
    return known[name_or_path]


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """Load a recipe by name or path, apply ``section.key=value`` overrides, validate it."""
    path = resolve_recipe_path(name_or_path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except _DuplicateKey as exc:
        raise AlexnetError(f"recipe {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise AlexnetError(f"recipe {path} is not valid YAML: {message_line(exc)}") from None
    except UnicodeDecodeError:  # a binary file, or text in another encoding
        raise AlexnetError(f"recipe {path} is not UTF-8 text: give a YAML recipe") from None
    if not isinstance(raw, dict):
        raise AlexnetError(f"recipe {path} must be a mapping of sections, not {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    return recipe_with_overrides(raw, overrides, source=str(path))


def recipe_with_overrides(raw: dict[str, Any], overrides: list[str] | None, source: str) -> Recipe:
    """A recipe from its raw sections (a file's, or one a checkpoint saved) with ``section.key=value`` overrides."""
    raw = copy.deepcopy(raw)
    overridden = {}
    for override in overrides or []:
        overridden[_apply_override(raw, override)] = override
    return recipe_from_dict(raw, source=source, overridden=overridden)


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``, except that a key given twice in one mapping is refused: PyYAML keeps the
    last silently, so a recipe could say ``lr: 0.01`` and train with the ``lr`` ten lines below."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        merges = [key_node for key_node, _ in node.value if key_node.tag == "tag:yaml.org,2002:merge"]
        if len(merges) > 1:  # PyYAML would keep the last; "<<: [*a, *b]" says which comes first
            raise _DuplicateKey(f"line {merges[1].start_mark.line + 1}: '<<' is given twice in one mapping (first "
                                f"on line {merges[0].start_mark.line + 1}); merge both in one: <<: [*a, *b]")
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *base": keys given beside a merge override it, as YAML means
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                hashed = key in seen
            except TypeError:
                continue  # an unhashable key: SafeLoader's own error names it
            if hashed:  # on another line, or on the same one ({lr: 1, lr: 2})
                first = f"first on line {seen[key]}" if seen[key] != line else "both on this line"
                raise _DuplicateKey(f"line {line}: key {key!r} is given twice ({first}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """``<<: [*a, *b]``: YAML lets the first mapping's value win where both give a key; one that gives it
        another value is refused, since which one a reader expects is anyone's guess."""
        for key_node, value_node in node.value:
            if key_node.tag != "tag:yaml.org,2002:merge" or not isinstance(value_node, yaml.SequenceNode):
                continue
            given: dict[Any, tuple] = {}
            for merged in value_node.value:
                if not isinstance(merged, yaml.MappingNode):
                    continue  # SafeLoader's own error names it
                for inner_key, inner_value in merged.value:
                    key, value = _node_text(inner_key), _node_text(inner_value)
                    if key in given and given[key] != value:
                        raise _DuplicateKey(f"line {key_node.start_mark.line + 1}: the mappings merged here give "
                                            f"{key[1]!r} two values; give it once")
                    given.setdefault(key, value)
        super().flatten_mapping(node)


def _node_text(node: yaml.Node) -> tuple:
    """A YAML node as its tags and scalars, nested: two nodes that read alike compare equal, before construction
    (whose cache may still hold an anchored mapping half-built)."""
    if isinstance(node, yaml.ScalarNode):
        return node.tag, node.value
    if isinstance(node, yaml.SequenceNode):
        return node.tag, tuple(_node_text(item) for item in node.value)
    return node.tag, tuple(sorted((_node_text(k), _node_text(v)) for k, v in node.value))


def recipe_from_dict(raw: dict[str, Any], source: str = "recipe", overridden: dict[str, str] | None = None) -> Recipe:
    """``overridden``: dotted key → the ``--set`` that gave its value, which errors then name."""
    overridden = overridden or {}

    def where(dotted: str) -> str:
        return f"--set {overridden[dotted]}" if dotted in overridden else f"{source}: {dotted}"

    recipe = Recipe()
    for key, value in raw.items():
        if key in _TOP_LEVEL:
            setattr(recipe, key, _coerce(value, _TOP_LEVEL[key], where(key)))
        elif key in _SECTIONS:
            setattr(recipe, key, _section(_SECTIONS[key], value, key, where))
        elif key == "trainer":
            recipe.trainer = _trainer_section(value, where)
        else:
            allowed = ", ".join([*_TOP_LEVEL, *_SECTIONS, "trainer"])
            raise AlexnetError(f"{where(key)}: unknown key (allowed: {allowed})")
    _check_ranges(recipe, where)
    return recipe


# The values each numeric key can take: (test, what to say). Types are checked by _coerce first.
_RANGES: dict[str, tuple[Any, str]] = {
    "model.num_classes": (lambda v: v is None or v >= 2, "at least 2 (or null: the dataset's)"),
    "model.dropout": (lambda v: v is None or 0 <= v < 1, "in [0, 1)"),
    "model.fc_width": (lambda v: v is None or v >= 1, "at least 1"),
    "data.batch_size": (lambda v: v >= 1, "at least 1"),
    "data.num_threads": (lambda v: v == "auto" or v >= 1, "at least 1 (or auto)"),
    "data.py_workers": (lambda v: v == "auto" or v >= 0, "0 or more (or auto)"),
    "data.crop_size": (lambda v: v is None or v >= 1, "at least 1 (or null: the arch's)"),
    "data.resize_size": (lambda v: v >= 1, "at least 1"),
    "data.pca_std": (lambda v: v >= 0, "0 or more"),
    "data.prefetch": (lambda v: v >= 1, "at least 1"),
    "data.hw_decoder_load": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "optim.lr": (lambda v: v > 0, "above 0"),
    "optim.momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "optim.weight_decay": (lambda v: v >= 0, "0 or more"),
    "optim.plateau_patience": (lambda v: v >= 0, "0 or more"),
    "optim.step_size": (lambda v: v >= 1, "at least 1"),
    "optim.gamma": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "optim.min_lr": (lambda v: v >= 0, "0 or more"),
    "optim.reference_batch": (lambda v: v is None or v >= 1, "at least 1 (or null)"),
    "checkpoint.every_n_epochs": (lambda v: v is None or v >= 1, "at least 1 (or null: at the end only)"),
    "checkpoint.every_n_train_steps": (lambda v: v is None or v >= 1, "at least 1 (or null)"),
    "checkpoint.every_minutes": (lambda v: v is None or v > 0, "above 0 (or null)"),
    "checkpoint.keep_last": (lambda v: v >= 0, "0 or more"),
}
# Trainer keys whose bad values Lightning reports late or not at all (max_epochs 0 trains nothing).
_TRAINER_RANGES: dict[str, tuple[Any, str]] = {
    "max_epochs": (lambda v: isinstance(v, int) and (v >= 1 or v == -1), "at least 1 (or -1: no limit)"),
    "max_steps": (lambda v: isinstance(v, int) and (v >= 1 or v == -1), "at least 1 (or -1: no limit)"),
    "devices": (lambda v: v == "auto" or (isinstance(v, int) and (v >= 1 or v == -1)) or
                (isinstance(v, list) and len(v) > 0), "at least 1, -1 (all), auto, or a list of device ids"),
    "num_nodes": (lambda v: isinstance(v, int) and v >= 1, "at least 1"),
    "precision": (lambda v: str(v) in _PRECISIONS, "one of 32-true, bf16-mixed, 16-mixed, bf16-true, 16-true, 64-true"),
    "log_every_n_steps": (lambda v: isinstance(v, int) and v >= 1, "at least 1"),
    "collective_timeout_s": (lambda v: isinstance(v, (int, float)) and v > 0, "a number of seconds above 0"),
}
_PRECISIONS = {"32-true", "32", "bf16-mixed", "bf16", "16-mixed", "16", "64-true", "64", "bf16-true", "16-true",
               "transformer-engine", "transformer-engine-float16"}


def _check_ranges(recipe: Recipe, where) -> None:
    if not 0 <= recipe.seed < 2**32:  # what NumPy's generators take
        raise AlexnetError(f"{where('seed')}: {recipe.seed} is out of range: it must be in [0, 4294967295]")
    for section in _SECTIONS:  # every float key, ranged or not: inf and nan pass "above 0" checks or fail late
        for key, value in dataclasses.asdict(getattr(recipe, section)).items():
            if isinstance(value, float) and not math.isfinite(value):
                words = _RANGES.get(f"{section}.{key}", (None, "a finite number"))[1]
                raise AlexnetError(f"{where(f'{section}.{key}')}: {value!r} is not a finite number: it must be {words}")
    trainer = recipe.trainer.to_dict()
    for key, value in trainer.items():
        if isinstance(value, float) and not math.isfinite(value):
            words = _TRAINER_RANGES.get(key, (None, "a finite number"))[1]
            raise AlexnetError(f"{where('trainer.' + key)}: {value!r} is not a finite number: it must be {words}")
    for dotted, (allowed, words) in _RANGES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(recipe, section), key)
        if not allowed(value):
            raise AlexnetError(f"{where(dotted)}: {value!r} is out of range: it must be {words}")
    for key, (allowed, words) in _TRAINER_RANGES.items():
        value = trainer.get(key)
        if key in trainer and (isinstance(value, bool) or not allowed(value)):
            raise AlexnetError(f"{where('trainer.' + key)}: {value!r} is out of range: it must be {words}")


def _apply_override(raw: dict[str, Any], override: str) -> str:
    """Apply ``section.key=value`` to ``raw``; returns the dotted key. Spaces around ``=`` are allowed."""
    if "=" in override:
        name, text = override.split("=", 1)
        override = f"{name.strip()}={text.strip()}"
    if "=" not in override or "." not in override.split("=", 1)[0]:
        if "=" in override and override.split("=", 1)[0] in _TOP_LEVEL:
            key, text = override.split("=", 1)
            raw[key] = yaml.load(text, Loader=_UniqueKeyLoader)
            return key
        raise AlexnetError(f"--set {override!r}: expected section.key=value, e.g. --set optim.lr=0.02")
    dotted, text = override.split("=", 1)
    section, key = dotted.split(".", 1)
    if section not in (*_SECTIONS, "trainer"):
        raise AlexnetError(f"--set {override!r}: unknown section {section!r} "
                           "(use model, data, optim, checkpoint, trainer)")
    try:
        value = yaml.load(text, Loader=_UniqueKeyLoader) if text != "" else None
    except yaml.YAMLError:
        value = text
    raw.setdefault(section, {})
    if not isinstance(raw[section], dict):
        raise AlexnetError(f"recipe section {section!r} must be a mapping")
    raw[section][key] = value
    return dotted


def _section(cls: type, values: Any, section: str, where) -> Any:
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise AlexnetError(f"{where(section)} must be a mapping of keys, not {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise AlexnetError(f"{where(f'{section}.{key}')}: unknown key (allowed: {', '.join(sorted(known))})")
        kwargs[key] = _coerce(value, hints[key], where(f"{section}.{key}"))
    return cls(**kwargs)


# lightning.Trainer's arguments (Lightning 2.6; tests/test_recipes.py holds this list to the installed signature).
# Listed rather than read from the signature: reading a recipe then needs no import of Lightning and torch,
# which took `alexnet recipes` from under 2 s to 6 s.
TRAINER_ARGUMENTS = frozenset({
    "accelerator", "accumulate_grad_batches", "barebones", "benchmark", "callbacks", "check_val_every_n_epoch",
    "default_root_dir", "detect_anomaly", "deterministic", "devices", "enable_autolog_hparams", "enable_checkpointing",
    "enable_model_summary", "enable_progress_bar", "fast_dev_run", "gradient_clip_algorithm", "gradient_clip_val",
    "inference_mode", "limit_predict_batches", "limit_test_batches", "limit_train_batches", "limit_val_batches",
    "log_every_n_steps", "logger", "max_epochs", "max_steps", "max_time", "min_epochs", "min_steps", "model_registry",
    "num_nodes", "num_sanity_val_steps", "overfit_batches", "plugins", "precision", "profiler",
    "reload_dataloaders_every_n_epochs", "strategy", "sync_batchnorm", "use_distributed_sampler", "val_check_interval",
})

# Keys of the trainer section that are the tool's own, not lightning.Trainer arguments.
TOOL_TRAINER_KEYS = frozenset({"collective_timeout_s"})

# lightning.Trainer arguments the tool sets itself (training/trainer.trainer_arguments): a recipe's would be
# silently replaced, so it is refused, saying what to use instead.
_SET_BY_THE_TOOL = {
    "callbacks": "the tool builds its own (checkpoints, meters, the non-finite stop): use the checkpoint section",
    "default_root_dir": "--out names the run folder",
    "enable_checkpointing": "use the checkpoint section",
    "enable_progress_bar": "use --quiet",
    "enable_model_summary": "the run names its network itself",
    "plugins": "the tool writes checkpoints atomically with its own",
    "use_distributed_sampler": "the data is sharded by the layout",
}


def _trainer_section(values: Any, where) -> TrainerConfig:
    """The section typed; its values are checked with the rest of the recipe (``_check_ranges``)."""
    if values is None:
        return TrainerConfig()
    if not isinstance(values, dict):
        raise AlexnetError(f"{where('trainer')} must be a mapping of lightning.Trainer arguments")
    for key in values:
        if key in _SET_BY_THE_TOOL:
            raise AlexnetError(f"{where('trainer.' + key)}: set by the tool, not by a recipe ({_SET_BY_THE_TOOL[key]})")
    for key in values:
        if key not in TRAINER_ARGUMENTS | TOOL_TRAINER_KEYS:
            raise AlexnetError(f"{where('trainer.' + key)}: not a lightning.Trainer argument (nor "
                               f"{', '.join(sorted(TOOL_TRAINER_KEYS))})")
    typed = {key: value for key, value in values.items() if key in _TYPED_TRAINER_KEYS}
    passed_on = {key: value for key, value in values.items() if key not in _TYPED_TRAINER_KEYS}
    return TrainerConfig(**typed, passed_on=passed_on, written=tuple(values))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint, allowing int → float; raise naming ``where``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors, kinds = [], []
        for option in options:
            if option is type(None):
                continue
            kinds.append(", ".join(map(str, typing.get_args(option))) if typing.get_origin(option) is Literal
                         else option.__name__)
            try:
                return _coerce(value, option, where)
            except AlexnetError as exc:
                errors.append(str(exc))
        if len(kinds) > 1:  # int | Literal["auto"]: say both
            raise AlexnetError(f"{where}: expected {' or '.join(kinds)}, got {value!r}")
        raise AlexnetError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise AlexnetError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and (_FLOAT.fullmatch(value.strip()) or
                                                     _NON_FINITE.fullmatch(value.strip())):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; users write it anyway
    if hint in (int, float, str, bool):
        if isinstance(value, bool) and hint is not bool:
            raise AlexnetError(f"{where}: expected {hint.__name__}, got {value!r}")
        if not isinstance(value, hint):
            raise AlexnetError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    return value
