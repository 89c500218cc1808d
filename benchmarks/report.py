"""RESULTS.md and chart.png from the results-*.json files that run.py writes (one per device)."""

from __future__ import annotations

import json
from pathlib import Path

ORDER = ("cpu", "cuda", "quick")
TITLES = {"cpu": "CPU", "cuda": "GPU", "quick": "Quick smoke run (tiny model; timings meaningless)"}


def _load(folder: Path) -> dict[str, dict]:
    runs = {}
    for kind in ORDER:
        path = folder / f"results-{kind}.json"
        if path.is_file():
            runs[kind] = json.loads(path.read_text())
    return runs


def _fmt(value, digits=2) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.{digits}f}" if abs(value) >= 0.01 else f"{value:.4f}"
    return str(value)


def _baseline(rows: list[dict]) -> dict | None:
    return next((r for r in rows if r.get("config", "").startswith("original") and r.get("batch") == 1
                 and "per_image_s" in r), None)


def table(run: dict) -> str:
    rows = [r for r in run["rows"] if "per_image_s" in r]
    base = _baseline(rows)
    head = ("| configuration | dtype | sampler, steps | batch | s / UNet step | it/s | fixed s | s / image | images/s "
            "| × faster per image | peak RSS GiB | peak VRAM GiB | load s | load avg |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ratio = base["per_image_s"] / r["per_image_s"] if base and r.get("model") != "sdxl" else None
        per_image = _fmt(r["per_image_s"]) + (" (extrap.)" if r.get("extrapolated") else "")
        lines.append(
            f"| {r['config']} | {r.get('dtype', '')} | {r.get('sampler', '')} {r.get('steps', '')} | {r.get('batch', 1)} "
            f"| {_fmt(r.get('step_s'), 3)} | {_fmt(r.get('it_per_s'), 3)} | {_fmt(r.get('fixed_s'))} | {per_image} "
            f"| {_fmt(r.get('images_per_s'))} | {_fmt(ratio, 1)} | {_fmt(r.get('peak_rss_gib'))} "
            f"| {_fmt(r.get('peak_vram_gib'))} | {_fmt(r.get('load_s', r.get('build_s')))} | {r.get('load_avg', '')} |")
    return "\n".join(lines)


def extras(run: dict) -> str:
    out = []
    for r in run["rows"]:
        if "pixel_diff_vs_default" in r:
            d = r["pixel_diff_vs_default"]
            out.append(f"- {r['config']}: pixel difference against the default path, same seed and steps: "
                       f"mean {d['mean']} / max {d['max']} levels of 255.")
        if "step_cache_calls" in r:
            c = r["step_cache_calls"]
            out.append(f"- {r['config']}: last run made {c['full']} full and {c['cached']} shallow UNet calls.")
        if "peak_rss_process_gib" in r:
            out.append(f"- {r['config']} (fresh process, load + 2 steps + decode): peak RSS "
                       f"{r['peak_rss_process_gib']} GiB ({r['peak_rss_at_load_gib']} GiB when loading finished; "
                       f"{r.get('rss_after_run_gib', '?')} GiB resident after the run).")
        if "compile_s" in r:
            out.append(f"- {r['config']}: first call {r['first_call_s']:.1f} s (compile ≈ {r['compile_s']:.1f} s), "
                       f"process start to results {r.get('process_s', 0):.0f} s.")
        if "error" in r:
            out.append(f"- {r['config']}: failed: {r['error']}")
    return "\n".join(out)


def unet_ab(ab: dict) -> str:
    """The interleaved one-UNet-call table (unet_ab.py); older runs kept the mean and the ratio to fp32."""
    machine = f" on {ab['cpu']}, {ab['date']}" if "cpu" in ab else ""
    lines = [f"One UNet call (CFG batch 2, 64×64 latents), variants interleaved over {ab['rounds']} rounds so that each "
             f"sees the same machine load{machine}: `{ab['command']}` (load at end {ab['load_avg_end']})", "",
             "| variant | seconds per call (each round) | median s | × vs the first row | build s |", "|---|---|---|---|---|"]
    for r in ab["rows"]:
        median = r.get("median_s", r.get("mean_s"))
        lines.append(f"| {r['variant']} | {', '.join(map(str, r['unet_call_s']))} | {median} "
                     f"| {r.get('x_vs_first', r.get('x_vs_fp32'))} | {_fmt(r.get('build_s'))} |")
    for r in ab["rows"]:
        if "vs_torch_fp32" in r:  # the OpenVINO peer
            check = r["vs_torch_fp32"]
            lines += ["", f"{r['variant']}: OpenVINO {r['openvino']}, converted in {r['convert_s']} s and compiled in "
                          f"{r['compile_s']} s, {r['INFERENCE_NUM_THREADS']} threads; output against torch fp32: max "
                          f"abs diff {check['max_abs_diff']} (largest value {check['reference_max_abs']})."]
    if "openvino_process" in ab:
        o = ab["openvino_process"]
        lines += ["", f"OpenVINO-only process (load, convert, compile, then {len(o['calls_s'])} calls): peak RSS "
                      f"{o['peak_rss_convert_gib']} GiB up to the conversion, {o['peak_rss_calls_gib']} GiB during the "
                      f"calls once the torch model was freed; converted in {o['convert_s']} s, compiled in "
                      f"{o['compile_s']} s."]
    return "\n".join(lines)


def compile_section(data: dict) -> str:
    """Compiled artifacts: process start to the first step (first_step.py), the compiled forms compared
    (compile_start.py), the UNet per call (unet_ab.py) and the eager variants (eager_ab.py)."""
    parts = ["## Compiled artifacts (CPU)", ""]
    if "first_step" in data:
        fs = data["first_step"]
        parts += [f"`{fs['command']}`, {fs['date']}, {fs['machine']['cpu']}", "",
                  "| run | process start → first step done s | s per step after it | process start → image s "
                  "| peak RSS GiB | load avg before → after |", "|---|---|---|---|---|---|"]
        for r in fs["rows"]:
            if "error" in r:
                parts.append(f"| {r['config']} | failed: {r['error']} | | | | |")
                continue
            parts.append(f"| {r['config']} | {_fmt(r['first_step_s'])} | {', '.join(map(str, r['step_s']))} "
                         f"| {_fmt(r['done_s'])} | {_fmt(r['peak_rss_gib'])} | {r['load_before']} → {r['load_after']} |")
        parts.append("")
    if "compile_start" in data:
        cs = data["compile_start"]
        parts += [f"`{cs['command']}`, {cs['date']}, {cs['machine']['cpu']}", "",
                  "| approach | phase | imports s | UNet loaded s | exported s | built s | artifact loaded s "
                  "| first call done s | calls s | peak RSS GiB | package MiB | load avg before → after |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in cs["rows"]:
            if "error" in r:
                parts.append(f"| {r['approach']} | {r['phase']} | failed: {r['error']} | | | | | | | | | |")
                continue
            parts.append(f"| {r['approach']} | {r['phase']} | {_fmt(r.get('imports'))} | {_fmt(r.get('unet_loaded'))} "
                         f"| {_fmt(r.get('exported'))} | {_fmt(r.get('built'))} | {_fmt(r.get('artifact_loaded'))} "
                         f"| {_fmt(r.get('first_call_done'))} | {', '.join(map(str, r.get('call_s', [])))} "
                         f"| {_fmt(r.get('peak_rss_gib'))} | {_fmt(r.get('package_mib'))} "
                         f"| {r['load_before']} → {r['load_after']} |")
        parts.append("")
    for key in ("unet_ab", "unet_ab_openvino", "unet_ab_jit"):
        if key in data:
            parts += [unet_ab(data[key]), ""]
    if "load_ab" in data:
        ab = data["load_ab"]
        parts += [f"Process start to a loaded Engine, fresh processes, trees interleaved: `{ab['command']}`, "
                  f"{ab['date']}, {ab['machine']['cpu']}", "", "| tree | seconds (each round) | median s |", "|---|---|---|"]
        parts += [f"| {name}: {row['path']} | {', '.join(map(str, row['seconds']))} | {row['median_s']} |"
                  for name, row in ab["trees"].items()]
        parts.append("")
    if "engine" in data:
        run = data["engine"]
        parts += [f"Engine rows, one process: `{run['command']}`, {run['date']}, {run['machine']['cpu']}", "",
                  table(run), "", extras(run), ""]
    if "eager_ab" in data:
        ea = data["eager_ab"]
        parts += [f"Eager variants, interleaved: `{ea['command']}`, {ea['date']}, {ea['cpu']} (load at end "
                  f"{ea['load_avg_end']})", "", "| variant | s per call | median s | × vs default | max abs diff |",
                  "|---|---|---|---|---|"]
        parts += [f"| {r['variant']} | {', '.join(map(str, r['call_s']))} | {r['median_s']} | {r['x_vs_default']} "
                  f"| {r['max_abs_diff']} |" for r in ea["rows"]]
        if ea.get("profile"):
            parts += ["", "Operators by self time in one default eager call: " + "; ".join(
                f"{p['op']} {p['self_s']} s ({p['calls']}×)" for p in ea["profile"])]
        parts.append("")
    return "\n".join(parts)


def chart(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in ORDER if k in runs]
    fig, axes = plt.subplots(len(kinds), 1, figsize=(10, 1.2 + 0.42 * sum(
        len([r for r in runs[k]["rows"] if r.get("batch") == 1 and "per_image_s" in r]) for k in kinds) + len(kinds)),
        squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds):
        rows = [r for r in runs[kind]["rows"] if r.get("batch") == 1 and "per_image_s" in r]
        # The load average beside each name: on a shared machine it explains much of the spread.
        names = [f"{r['config']}  [load {r.get('load_avg', '?').split()[0]}]" for r in rows][::-1]
        values = [r["per_image_s"] for r in rows][::-1]
        colors = ["#999999" if r["path"] == "diffusers" else "#2a7ab0" for r in rows][::-1]
        ax.barh(names, values, color=colors)
        ax.set_xscale("log")
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.2f} s", va="center", fontsize=8)
        gpu = runs[kind]["machine"].get("gpu")
        ax.set_title(f"{TITLES[kind]}: seconds per image, batch 1 (log scale) — {gpu or runs[kind]['machine']['cpu'].split(' (')[0]}",
                     fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlim(right=max(values) * 4)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # long configuration names must not be cut off
    plt.close(fig)


def write_report(folder: Path, notes: str | None = None) -> Path:
    runs = _load(folder)
    if "cpu" in runs or "cuda" in runs:
        runs.pop("quick", None)  # the smoke run belongs in CI logs, not beside real numbers
    parts = ["# sdart benchmark results", "",
             "SD 1.5 architecture with random weights built from its public configs (`benchmarks/configs/`; timing "
             "and memory don't depend on weight values), 512×512, CFG 7.0, one prompt, generated by "
             "`benchmarks/run.py`. Rows marked *extrap.* ran a few UNet steps plus the full text encode and VAE "
             "decode, and extrapolate to the full step count (fixed cost + steps × seconds per step). "
             "`× faster` is against the first row of the same table (the original way). Peak RSS is sampled "
             "in-process per configuration (load included; Python + torch libraries ≈ 0.5 GiB of it); peak VRAM "
             "is `torch.cuda.max_memory_allocated` during the timed run.", ""]
    notes_file = folder / "NOTES.md"
    if notes is None and notes_file.is_file():
        notes = notes_file.read_text()
    if notes:
        parts += [notes.strip(), ""]
    for kind in ORDER:
        if kind not in runs:
            continue
        run = runs[kind]
        parts += [f"## {TITLES[kind]}", "", f"`{run['command']}`, {run['date']}", ""]
        parts += [f"- {k}: {v}" for k, v in run["machine"].items()] + [""]
        parts += [table(run), ""]
        if "unet_ab" in run:
            parts += [unet_ab(run["unet_ab"]), ""]
        more = extras(run)
        if more:
            parts += [more, ""]
    compiled = folder / "results-compile-cpu.json"
    if compiled.is_file():
        parts += [compile_section(json.loads(compiled.read_text())), ""]
    if runs:
        chart(runs, folder / "chart.png")
        parts += ["![seconds per image by configuration](chart.png)", ""]
    out = folder / "RESULTS.md"
    out.write_text("\n".join(parts))
    return out


if __name__ == "__main__":
    import sys

    print(write_report(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent))
