"""``alexnet report``: training runs beside each other and beside the paper's published errors.

Reads what a run directory holds (``recipe.yaml``, ``metrics.csv``, ``run.json`` and any
``eval*.json`` written by ``alexnet eval --json``) and writes ``report.md`` and ``curves.png``
(training loss, validation top-1 error and learning rate against epoch, the runs overlaid).
"""

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alexnet_cli.atomic import write_atomic, write_text_atomic
from alexnet_cli.errors import AlexnetError, message_line
from alexnet_cli.inspection.paper_claims import ABLATIONS, VAL_TOP1_ERROR, VAL_TOP5_ERROR, Ablation

IMAGENET_TRAIN_IMAGES, IMAGENET_CLASSES = 1_281_167, 1000


@dataclass
class RunSummary:
    run_dir: Path
    recipe: dict
    ablations: list[Ablation]
    finished: bool
    epochs: int  # with a validation row
    best_top1_error: float | None = None  # % of the validation images
    best_top5_error: float | None = None
    last_top1_error: float | None = None
    last_top5_error: float | None = None
    ten_crop: tuple[float, float] | None = None  # top-1, top-5 error % from an 'eval --json' in the run
    images_per_second: float | None = None
    wall_seconds: float | None = None
    not_comparable: str | None = None  # why the paper's figures do not apply, if they do not
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # name → (epoch, value)
    label: str | None = None  # set by write_report where runs share a folder name: the shortest unique path

    @property
    def name(self) -> str:
        return self.label or self.run_dir.name


def summarize(run_dir: Path) -> RunSummary:
    """Everything the report says about one run directory."""
    run_dir = Path(run_dir)
    recipe_path = run_dir / "recipe.yaml"
    if not recipe_path.is_file():
        raise AlexnetError(f"{run_dir} has no recipe.yaml: not a run directory of 'alexnet train'")
    recipe = _read_recipe(recipe_path)
    info = _read_json(run_dir / "run.json") or {}
    rows = _metrics(run_dir / "metrics.csv")
    summary = RunSummary(run_dir, recipe, active_ablations(recipe), bool(info.get("finished")), 0,
                         images_per_second=info.get("images_per_second"), wall_seconds=info.get("seconds"),
                         not_comparable=_not_comparable(recipe, info))
    try:
        _add_curves(summary, rows)
    except (KeyError, ValueError) as exc:  # a column missing, or a cell that is not a number
        raise AlexnetError(f"{run_dir / 'metrics.csv'}: {_what_is_wrong(exc)}; not a metrics table that "
                           "'alexnet train' wrote") from None
    summary.ten_crop = _ten_crop_errors(run_dir)
    return summary


def _what_is_wrong(exc: KeyError | ValueError) -> str:
    return f"no {exc.args[0]!r} column" if isinstance(exc, KeyError) else str(exc)


def _add_curves(summary: RunSummary, rows: list[dict]) -> None:
    validation = [(int(r["epoch"]), float(r["val/top1"]), float(r["val/top5"])) for r in rows
                  if r.get("val/top1") and r.get("epoch")]
    if validation:
        errors = [(epoch, 100 * (1 - top1), 100 * (1 - top5)) for epoch, top1, top5 in validation]
        best = min(errors, key=lambda e: e[1])
        summary.epochs = len({e[0] for e in errors})
        summary.best_top1_error, summary.best_top5_error = best[1], best[2]
        summary.last_top1_error, summary.last_top5_error = errors[-1][1], errors[-1][2]
        summary.curves["val top-1 error %"] = [(epoch + 1, top1) for epoch, top1, _ in errors]
    if summary.images_per_second is None:
        speeds = [float(r["train/img_per_s"]) for r in rows if r.get("train/img_per_s")]
        summary.images_per_second = speeds[-1] if speeds else None
    summary.curves["training loss"] = _per_epoch_mean(rows, "train/loss")
    summary.curves["learning rate"] = _learning_rates(rows)


def active_ablations(recipe: dict) -> list[Ablation]:
    """The paper's ablations a resolved recipe has switched on."""
    def value(key: str):
        section, name = key.split(".")
        return recipe.get(section, {}).get(name)

    return [a for a in ABLATIONS
            if all(value(o.split("=")[0]) == yaml.safe_load(o.split("=")[1]) for o in a.overrides)]


def _not_comparable(recipe: dict, info: dict) -> str | None:
    if recipe.get("trainer", {}).get("accelerator") == "cpu":
        return "a CPU run"
    classes, images = info.get("num_classes"), info.get("train_images")
    if classes is not None and classes != IMAGENET_CLASSES:
        return f"{classes} classes, not ImageNet's {IMAGENET_CLASSES}"
    if images is not None and images < 0.9 * IMAGENET_TRAIN_IMAGES:
        return f"{images:,} training images, not ImageNet's {IMAGENET_TRAIN_IMAGES:,}"
    return None


def _read_recipe(path: Path) -> dict:
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise AlexnetError(f"{path} is not a recipe that 'alexnet train' wrote ({message_line(exc)})") from None
    if not isinstance(recipe, dict):
        raise AlexnetError(f"{path} holds a {type(recipe).__name__}, not a recipe's sections")
    return recipe


def _metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise AlexnetError(f"{path} is not a metrics table that 'alexnet train' wrote ({message_line(exc)})") from None


def _read_json(path: Path) -> dict | None:
    """The JSON object a file holds; None where there is none yet (a run still starting) or it is unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(value, dict):
        raise AlexnetError(f"{path} holds a JSON {type(value).__name__}, not the object 'alexnet' writes there")
    return value



def _per_epoch_mean(rows: list[dict], key: str) -> list[tuple[float, float]]:
    values = defaultdict(list)
    for row in rows:
        if row.get(key) and row.get("epoch"):
            values[int(row["epoch"])].append(float(row[key]))
    return [(epoch + 1, sum(v) / len(v)) for epoch, v in sorted(values.items())]


def _learning_rates(rows: list[dict]) -> list[tuple[float, float]]:
    """The weights' learning rate, logged once at each epoch's start (rows without an epoch): epoch k's."""
    key = next((k for k in ("lr-SGD/weights", "lr-SGD") if rows and k in rows[0]), None)
    if key is None:
        return []
    rates = [float(r[key]) for r in rows if r.get(key)]
    return [(epoch, rate) for epoch, rate in enumerate(rates, start=1)]


def _ten_crop_errors(run_dir: Path) -> tuple[float, float] | None:
    for path in sorted(run_dir.glob("eval*.json")):
        result = _read_json(path)
        if result and result.get("ten_crop") and "top1" in result:
            return 100 * (1 - result["top1"]), 100 * (1 - result["top5"])
    return None


def paper_figures(summary: RunSummary) -> str:
    """What the paper reports for the same setting, as a sentence."""
    if summary.not_comparable:
        return f"not comparable ({summary.not_comparable})"
    top1, top5 = VAL_TOP1_ERROR, VAL_TOP5_ERROR
    text = f"one CNN, ten crops: {top1:.1f} / {top5:.1f}"
    for ablation in summary.ablations:
        if ablation.top1_points is not None:
            top1 += ablation.top1_points
            top5 += ablation.top5_points or 0.0
        text += f"; without {ablation.removes} ({ablation.section}) the paper reports {ablation.paper_effect}"
    if any(a.top1_points is not None for a in summary.ablations):
        text += f" (so about {top1:.1f} / {top5:.1f} here)"
    return text


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def markdown(summaries: list[RunSummary]) -> str:
    lines = ["# Training runs beside the paper", "",
             "Errors in % of the validation images (top-1 / top-5). Best and last are the per-epoch validation "
             "(centre crop); ten crops come from an `alexnet eval --ten-crop --json` result in the run directory.",
             "", "| run | arch | ablations | epochs | best | last | ten crops | img/s | wall time | state |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for s in summaries:
        ablations = ", ".join(" ".join(a.overrides) for a in s.ablations) or "none"
        ten = f"{s.ten_crop[0]:.1f} / {s.ten_crop[1]:.1f}" if s.ten_crop else "–"
        wall = f"{s.wall_seconds / 3600:.2f} h" if s.wall_seconds else "–"
        speed = f"{s.images_per_second:,.0f}" if s.images_per_second else "–"
        state = "finished" if s.finished else "in progress or stopped"
        if not s.epochs:
            state += "; no validation rows yet"
        arch = s.recipe.get("model", {}).get("arch", "?")
        lines.append(f"| {_cell(s.name)} | {_cell(arch)} | {_cell(ablations)} | {s.epochs} | "
                     f"{_percent(s.best_top1_error)} / {_percent(s.best_top5_error)} | "
                     f"{_percent(s.last_top1_error)} / {_percent(s.last_top5_error)} | {ten} | {speed} | {wall} | "
                     f"{state} |")
    lines += ["", "## The paper's figures for the same setting", ""]
    lines += [f"- **{s.name}** (recipe {s.recipe.get('name', '?')}): {paper_figures(s)}" for s in summaries]
    lines += ["", "![training loss, validation top-1 error and learning rate by epoch](curves.png)", ""]
    return "\n".join(lines)


def _cell(value: object) -> str:
    """Text for a cell of a Markdown table: a '|' in a run's name would start a new column."""
    return str(value).replace("|", "\\|")


def plot_curves(summaries: list[RunSummary], out: Path) -> None:
    figure = curves_figure(summaries)
    # "tight" grows the image to hold the legend beside the plots
    write_atomic(out, lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def curves_figure(summaries: list[RunSummary]) -> Figure:
    """The three curves side by side, one colour per run; the legend outside the plots, where many runs
    cannot cover them. A ``Figure`` of its own, not pyplot's: files only, no display or backend to choose, and
    nothing left open in pyplot's list of figures."""
    names = ("training loss", "val top-1 error %", "learning rate")
    figure = Figure(figsize=(15, 4.2))
    FigureCanvasAgg(figure)  # the PNG renderer, attached: drawn and measured without a display
    axes = figure.subplots(1, len(names))
    colours = matplotlib.colormaps["tab10" if len(summaries) <= 10 else "turbo"]
    for axis, name in zip(axes, names):
        for index, summary in enumerate(summaries):
            points = summary.curves.get(name) or []
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, label=summary.name,
                          color=colours(index if len(summaries) <= 10 else index / (len(summaries) - 1)))
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if name == "learning rate" and any(summary.curves.get(name) for summary in summaries):
            axis.set_yscale("log")
    figure.tight_layout()
    labelled = {label: line for axis in axes for line, label in zip(*axis.get_legend_handles_labels())}
    if labelled:
        figure.legend(labelled.values(), labelled.keys(), loc="upper left", bbox_to_anchor=(1.0, 0.98),
                      fontsize=8, ncols=1 + (len(labelled) - 1) // 30)  # 30 names fit the height
    return figure


def shortest_unique_names(run_dirs: list[Path]) -> list[str]:
    """Each run's shortest trailing path that no other run ends with: ``x/r1`` and ``y/r1``, not ``r1`` twice."""
    parts = [Path(run_dir).resolve().parts for run_dir in run_dirs]
    names = []
    for index, mine in enumerate(parts):
        others = parts[:index] + parts[index + 1:]
        length = next((n for n in range(1, len(mine)) if all(other[-n:] != mine[-n:] for other in others)),
                      len(mine))
        names.append(str(Path(*mine[-length:])))
    return names


def write_report(run_dirs: list[Path], out: Path) -> list[RunSummary]:
    """``out/report.md`` and ``out/curves.png`` for the runs, in the order given."""
    if not run_dirs:
        raise AlexnetError("give at least one run directory")
    summaries = [summarize(run_dir) for run_dir in run_dirs]
    for summary, label in zip(summaries, shortest_unique_names(run_dirs)):
        summary.label = label
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AlexnetError(f"--out {out} is a file; give a folder for report.md and curves.png")
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(summaries, out / "curves.png")
    write_text_atomic(out / "report.md", markdown(summaries))
    return summaries
