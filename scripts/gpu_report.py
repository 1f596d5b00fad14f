"""Gather what scripts/gpu-check.sh wrote into OUT_DIR/gpu-check.md and OUT_DIR/gpu-check.json.

    python scripts/gpu_report.py OUT_DIR
"""

import csv
import json
import re
import sys
from pathlib import Path


def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def steps(out: Path) -> list[dict]:
    rows = []
    for line in (out / "steps.tsv").read_text().splitlines():
        name, status, seconds = line.split("\t")
        rows.append({"step": name, "status": status, "seconds": int(seconds)})
    return rows


def gpu_batches(out: Path) -> list[str]:
    """The lines test_gpu.py prints for the report (pixel differences, dtypes, shapes)."""
    log = out / "gpu-tests.log"
    text = log.read_text() if log.is_file() else ""
    found = [line.split("GPU-CHECK ", 1)[1] for line in text.splitlines() if "GPU-CHECK " in line]
    summary = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    return found + summary[-1:]


def predictions(out: Path) -> dict | None:
    files = {d: out / f"predictions-{d}.csv" for d in ("gpu", "cpu")}
    if not all(f.is_file() for f in files.values()):
        return None
    rows = {d: list(csv.DictReader(f.open())) for d, f in files.items()}
    gpu, cpu = rows["gpu"], rows["cpu"]
    differ = sum(a["top1"] != b["top1"] for a, b in zip(gpu, cpu))
    return {"gpu_images": len(gpu), "cpu_images": len(cpu), "top1_predictions_differing": differ,
            "same_files_in_order": [r["file"] for r in gpu] == [r["file"] for r in cpu]}


def decoder_load(out: Path) -> dict | None:
    path = out / "jpeg-util.csv"
    if not path.is_file():
        return None
    text = path.read_text()
    values = [int(m) for m in re.findall(r",\s*\d+ %,\s*(\d+) %", text)]
    if not values:
        return {"raw": text[:300]}
    return {"samples": len(values), "max_jpeg_pct": max(values), "mean_jpeg_pct": sum(values) / len(values)}


def main(out: Path) -> None:
    report = {
        "steps": steps(out),
        "gpu_batches": gpu_batches(out),
        "train": load(out / "train.json"),
        "eval_gpu": load(out / "eval-gpu.json"),
        "eval_cpu": load(out / "eval-cpu.json"),
        "predictions": predictions(out),
        "data_roi": load(out / "data-roi.json"),
        "data_whole": load(out / "data-whole.json"),
        "model_paper": load(out / "model-paper.json"),
        "model_owt": load(out / "model-owt.json"),
        "train_loop": load(out / "train-loop.json"),
        "jpeg_decoder": decoder_load(out),
    }
    env = out / "environment.log"
    report["environment"] = env.read_text().strip().splitlines()[-1:] if env.is_file() else []
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu-check.md").write_text(markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    lines = ["# GPU check", "", f"Environment: {' '.join(r['environment'])}", "",
             "| step | status | seconds |", "|---|---|---:|"]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']} |" for s in r["steps"]]
    lines += ["", "## (a) One batch of each loader kind, GPU against CPU", ""]
    lines += [f"- {line}" for line in r["gpu_batches"]] or ["- no output"]
    lines += ["", "## (d) 50 single-gpu steps, ten-crop eval on both devices", ""]
    if r["train"]:
        t = r["train"]
        lines.append(f"- train: {t.get('global_step')} steps, {t.get('images_per_second', 0):,.0f} img/s, "
                     f"data wait {t.get('data_wait_fraction', 0):.1%}, best top-1 {t.get('best_top1')}")
    for device in ("gpu", "cpu"):
        e = r[f"eval_{device}"]
        if e:
            lines.append(f"- eval {device}: {e['images']} images, top-1 {e['top1']:.4f}, top-5 {e['top5']:.4f}, "
                         f"{e['images_per_second']:,.0f} img/s")
    if r["predictions"]:
        lines.append(f"- predictions: {r['predictions']}")
    lines += ["", "## (b) Input pipeline and model", ""]
    for name in ("data_roi", "data_whole"):
        d = r[name]
        if d:
            lines.append(f"- {name}: DALI {d['dali_img_s']:,.0f} img/s ({d['dali_threads']} threads + "
                         f"{d['dali_py_workers']} readers) vs torchvision {d['torchvision_img_s']:,.0f} img/s "
                         f"({d['baseline_workers']} workers): {d['ratio']:.2f}×, median of {d['repeats']}")
    for name in ("model_paper", "model_owt"):
        m = r[name]
        for row in (m or {}).get("results", []):
            lines.append(f"- {row['arch']} {row['variant']}: train {row['train_img_s']:,.0f} img/s "
                         f"({row['train_ms']:.2f} ± {row['train_ms_std']:.2f} ms), forward "
                         f"{row['forward_img_s']:,.0f} img/s, peak {row['peak_memory_mb']:,.0f} MB")
    lines += ["", "## (c) Training loop", ""]
    t = r["train_loop"]
    if t:
        lines.append(f"- plain loop {t['plain_img_s']:,.0f} img/s, Lightning {t['lightning_img_s']:,.0f} img/s "
                     f"(overhead {t['overhead_pct']:+.1f}%, runs {t['lightning_img_s_runs']} vs "
                     f"{t['plain_img_s_runs']}), data wait {t['data_wait_frac']:.1%}, synthetic "
                     f"{t.get('synthetic_img_s') or 0:,.0f} img/s, host syncs per step "
                     f"{t.get('lightning_syncs_per_step')} (plain {t.get('plain_syncs_per_step')})")
    lines += ["", "## (e) Hardware JPEG decoder during (b)", "", f"- {r['jpeg_decoder']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
