"""gpu-check.md from gpu-check.json: every section a step has written so far, each figure with its label (a
lower bound, an upper bound, demo data rather than photos)."""


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _compiled(row: dict) -> str:
    if row.get("graphs") is None:
        return ""
    if row.get("ran_eagerly") or row["graphs"] == 0:
        return "ran eagerly: no graph captured"
    return f"{row['graphs']} graph(s), {row['graph_breaks']} break(s)"


def _lrn(results: dict, step: str) -> list[str]:
    lines = ["", f"## LRN ({step}): both layers' shapes, batch 128, bf16, forward + backward (goal: both ≤ 1,000 µs)",
             "", "GB: what the implementation moves, counted by `alexnet benchmark traffic` (exact for eager code, "
             "a lower bound for compiled code, whose GB/s is then a lower bound too).", "",
             "| layer | layout | impl | µs | GB | GB/s | bf16 max rel. error | compiled to |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for r in results[step].get("rows", []):
        lower = "≥ " if r.get("bytes_counted") == "lower bound" else ""
        lines.append(f"| {r['layer']} | {r['layout']} | {r['impl']} | {r['us']:,.0f} | {lower}{r['bytes'] / 1e9:.3f} "
                     f"| {lower}{r['gb_s']:,.0f} | {r['bf16_max_rel_error']:.2e} | {_compiled(r)} |")
    lines += [f"- both layers, {impl}: {us:,.0f} µs" for impl, us in results[step].get("both_layers_us", {}).items()]
    return lines


def _model(results: dict, step: str) -> list[str]:
    order = ("the code before issue 22 first, before issue 28 second, today's default (`bf16-mixed eager`: auto "
             "LRN) third, then one switch more per row" if step == "model" else "each row compiled afresh")
    lines = ["", f"## Model ({step}), synthetic batches: {order}", "",
             "| arch | variant | train img/s | train ms | forward img/s | compile s | compiled to |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in results[step].get("rows", []):
        if "error" in r:
            lines.append(f"| {r['arch']} | {r['variant']} | {r['error']} | | | | |")
            continue
        compiled = "" if r.get("compile_seconds") is None else f"{r['compile_seconds']:.0f}"
        lines.append(f"| {r['arch']} | {r['variant']} | {r['train_img_s']:,.0f} | {r['train_ms']:.2f} | "
                     f"{r['forward_img_s']:,.0f} | {compiled} | {_compiled(r)} |")
    return lines


def _train_loop(results: dict, step: str) -> list[str]:
    r = results[step]
    if "lightning_img_s" not in r:
        return ["", f"## {step}: not finished"]
    switches = f" {r['switches']}" if r.get("switches") else ""
    synthetic = (f", synthetic {r['synthetic_img_s']:,.0f} (real ÷ synthetic {r['real_vs_synthetic']:.2f}, goal 0.95)"
                 if r.get("synthetic_img_s") else "")
    return ["", f"## {step}: single-gpu end to end{switches}, {r.get('data', '')}", "",
            f"- Lightning {r['lightning_img_s']:,.0f} img/s (goal 20,000), plain loop {r['plain_img_s']:,.0f}"
            f"{synthetic}; GPU busy {_share(r.get('gpu_busy_frac'))} (goal 95 %); host blocked in run() "
            f"{_number(r.get('host_blocked_ms_per_step'))} ms/step; data wait {r['data_wait_frac']:.1%}; host syncs "
            f"per step {_number(r.get('lightning_syncs_per_step'))}"]


def _dali(d: dict) -> list[str]:
    lines = ["", f"## DALI alone ({d.get('bound', '')}), {d.get('data', '')}", "",
             "| hw_decoder_load | threads + readers | prefetch | img/s | host blocked ms/batch | SM use | JPEG use |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in d.get("rows", []):
        lines.append(f"| {r['hw_decoder_load']} | {r['threads']} + {r['readers']} | {r['prefetch']} | "
                     f"{r['img_s']:,.0f} | {r['host_blocked_ms_per_batch']:.2f} | {_percent(r.get('sm_util_mean'))} | "
                     f"{_percent(r.get('jpeg_util_mean'))} |")
    return lines


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} %"


def _profile(p: dict) -> list[str]:
    lines = ["", f"## Profile ({p.get('clock', '?')} time per step, ms; each kernel counted once)", "",
             "| category | ms |", "|---|---:|"]
    table = p.get("ms_per_step_by_category", {})
    lines += [f"| {k} | {v:.3f} |" for k, v in table.items()]
    lines.append(f"| **total** | **{sum(table.values()):.3f}** |")
    if p.get("kernel_ms_per_step") is not None:
        lines.append(f"\nEvery kernel's time, summed: {p['kernel_ms_per_step']:.3f} ms per step.")
    return lines


def markdown(results: dict) -> str:
    env = results.get("environment", {})
    lines = [f"# GPU check{' (CPU smoke run)' if results['smoke'] else ''}", "",
             f"Environment: {env.get('card', 'CPU')}, torch {env.get('torch')}, cuDNN {env.get('cudnn')}, "
             f"DALI {env.get('dali')}, Lightning {env.get('lightning')}, Triton {env.get('triton')}, "
             f"{env.get('usable_cores')} usable cores.", "", f"Data: {results.get('data')}.", "",
             "| step | status | seconds |", "|---|---|---:|"]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']} |" for s in results["steps"]]
    for step in ("lrn", "lrn-compiled"):
        if step in results:
            lines += _lrn(results, step)
    for step in ("train-loop", "train-loop-before", "train-loop-switches"):
        if step in results:
            lines += _train_loop(results, step)
    if "dali" in results:
        lines += _dali(results["dali"])
    if "profile" in results:
        lines += _profile(results["profile"])
    for step in ("model", "model-compiled"):
        if step in results:
            lines += _model(results, step)
    if "gpu-tests" in results:
        g = results["gpu-tests"]
        lines += ["", f"## GPU tests: {g.get('summary')}", ""] + [f"- {line}" for line in g.get("checks", [])]
    if "train-eval" in results:
        t = results["train-eval"]
        lines += ["", f"## alexnet train and ten-crop eval, {t.get('data', '')}", "",
                  f"- train: {t.get('steps')} steps at {_number(t.get('train_img_s'))} img/s (start-up included), "
                  f"data wait {_share(t.get('data_wait'))}; ten-crop eval: {t.get('eval_images')} images at "
                  f"{_number(t.get('eval_img_s'))} img/s"]
    if "compare" in results:
        c = results["compare"]
        lines += ["", f"## Against {c.get('against')}: regressions {c.get('regressions') or 'none'}"]
    return "\n".join(lines) + "\n"
