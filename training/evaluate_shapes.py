"""Grade the shapes model on held-out prompts through the real diffusers StableDiffusionPipeline.

    python -m training.evaluate_shapes --model src/sdart/builtin/shapes --threads 2

For every sampler sdart offers (built as sdart builds it) and for guidance 1 and the default guidance (7),
generates held-out prompts × seeds and checks each picture with the pixel-level checker (colour, shape,
background). Writes
``results.json``, ``results.md`` and ``grid.png`` (held-out prompts × seeds, default sampler and guidance)
into --out-dir.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from sdart.sampling.samplers import sampler_names
from sdart.speed.options import SpeedOptions, apply_speed
from sdart.speed.stepcache import reset_step_cache

from .shapes_data import check_image, held_out_combos

HERE = Path(__file__).resolve().parent
DEFAULT_GUIDANCE = 7.0  # sdart's (and A1111's) default cfg_scale


def load_pipeline(model: Path | str, device: str = "cpu"):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(model), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.base_scheduler_config = pipe.scheduler.config  # every sampler is built from the folder's own config
    return pipe.to(device)


def set_sampler(pipe, name: str) -> None:
    """The scheduler sdart builds for this A1111 sampler name, from the folder's own scheduler config."""
    from sdart.sampling.build import make_scheduler
    from sdart.sampling.samplers import parse_sampler_name

    sampler, schedule = parse_sampler_name(name)  # "DPM++ 2M Karras": DPM++ 2M on Karras
    pipe.scheduler = make_scheduler(sampler, getattr(pipe, "base_scheduler_config", pipe.scheduler.config), schedule)


def generate(pipe, prompts: list[str], seeds: list[int], guidance: float, steps: int, device: str = "cpu") -> np.ndarray:
    """One picture per (prompt, seed) pair, batched: (N, H, W, 3) float in [0, 1]."""
    gens = [torch.Generator(device).manual_seed(s) for s in seeds]
    reset_step_cache(pipe.unet)  # a new denoising run (no-op without the step cache)
    out = pipe(prompts, guidance_scale=guidance, num_inference_steps=steps, generator=gens, output_type="np")
    return out.images


def grade(images: np.ndarray, combos) -> dict:
    checks = [check_image(img, c) for img, c in zip(images, combos)]
    n = len(checks)
    return {k: sum(c[f"{k}_ok"] for c in checks) / n for k in ("color", "shape", "bg", "all")} | {"n": n}


def grid_image(rows: list[np.ndarray], labels: list[str], scale: int = 2, label_w: int = 260) -> Image.Image:
    """rows[i] is (n_seeds, H, W, 3) in [0, 1]; one labelled row per prompt."""
    n_cols = rows[0].shape[0]
    h, w = rows[0].shape[1] * scale, rows[0].shape[2] * scale
    canvas = Image.new("RGB", (label_w + n_cols * (w + 2), len(rows) * (h + 2)), (255, 255, 255))
    d = ImageDraw.Draw(canvas)
    for r, (row, label) in enumerate(zip(rows, labels)):
        y = r * (h + 2)
        d.text((4, y + h // 2 - 6), label, fill=(0, 0, 0))
        for c, img in enumerate(row):
            tile = Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).resize((w, h), Image.NEAREST)
            canvas.paste(tile, (label_w + c * (w + 2), y))
    return canvas


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=HERE.parent / "src/sdart/builtin/shapes")
    p.add_argument("--out-dir", type=Path, default=HERE / "eval")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=25, help="sdart's default")
    p.add_argument("--seeds", type=int, default=4, help="seeds per held-out prompt for the default sampler")
    p.add_argument("--sampler-seeds", type=int, default=2, help="seeds per held-out prompt for the other samplers")
    p.add_argument("--default-sampler", default="DPM++ 2M Karras", help="sdart's default sampler")
    p.add_argument("--samplers", default="all", help="comma-separated names, or 'all'")
    # sdart's options that change the picture, to grade what each costs (see benchmarks/RESULTS.md)
    p.add_argument("--step-cache", type=int, default=0, help="full UNet every N steps (sdart --step-cache)")
    p.add_argument("--token-downsampling", type=int, default=1, help="sdart --token-downsampling")
    p.add_argument("--quantize", default="none", help="sdart --quantize")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)

    pipe = load_pipeline(args.model, device)
    options = SpeedOptions(channels_last=False, fuse_qkv=False, step_cache=args.step_cache,
                           token_downsampling=args.token_downsampling, quantize=args.quantize)
    apply_speed(pipe, options, torch.device(device))
    combos = held_out_combos()
    names = sampler_names() if args.samplers == "all" else [s.strip() for s in args.samplers.split(",")]
    if args.default_sampler in names:
        names.remove(args.default_sampler)
    names.insert(0, args.default_sampler)
    results: dict = {"model": str(args.model), "steps": args.steps, "n_prompts": len(combos), "samplers": {},
                     "options": {"step_cache": args.step_cache, "token_downsampling": args.token_downsampling,
                                 "quantize": args.quantize}}
    t_all = time.time()
    for name in names:
        n_seeds = args.seeds if name == args.default_sampler else args.sampler_seeds
        pairs = [(c, s) for c in combos for s in range(n_seeds)]
        set_sampler(pipe, name)
        entry = {"seeds": n_seeds}
        for guidance in (1.0, DEFAULT_GUIDANCE):
            t0 = time.time()
            imgs = generate(pipe, [c.prompt() for c, _ in pairs], [s for _, s in pairs], guidance, args.steps, device)
            entry[f"cfg{guidance:g}"] = grade(imgs, [c for c, _ in pairs]) | {"seconds": round(time.time() - t0, 1)}
            if name == args.default_sampler and guidance == DEFAULT_GUIDANCE:
                rows = [imgs[i * n_seeds:(i + 1) * n_seeds] for i in range(len(combos))]
                args.out_dir.mkdir(parents=True, exist_ok=True)
                grid_image(rows, [c.prompt() for c in combos]).save(args.out_dir / "grid.png")
        results["samplers"][name] = entry
        g1, g7 = entry["cfg1"], entry[f"cfg{DEFAULT_GUIDANCE:g}"]
        print(f"{name:16s} cfg1 c/s/b {g1['color']:.2f}/{g1['shape']:.2f}/{g1['bg']:.2f}   "
              f"cfg7 c/s/b {g7['color']:.2f}/{g7['shape']:.2f}/{g7['bg']:.2f}  ({g1['seconds'] + g7['seconds']:.0f}s)",
              flush=True)
    results["seconds"] = round(time.time() - t_all, 1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=2))
    (args.out_dir / "results.md").write_text(to_markdown(results))
    print(to_markdown(results))
    return results


def to_markdown(results: dict) -> str:
    g = f"{DEFAULT_GUIDANCE:g}"
    options = ", ".join(f"{k} {v}" for k, v in results.get("options", {}).items() if v not in (0, 1, "none"))
    lines = [
        f"Held-out prompts: {results['n_prompts']}, steps: {results['steps']}, accuracy = share of pictures the checker "
        "reads as the prompt says." + (f" sdart options: {options}." if options else ""),
        "",
        f"| sampler | seeds | colour cfg 1 | shape cfg 1 | bg cfg 1 | all cfg 1 | colour cfg {g} | shape cfg {g} | "
        f"bg cfg {g} | all cfg {g} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in results["samplers"].items():
        a, b = e["cfg1"], e[f"cfg{g}"]
        cells = [f"{x[k] * 100:.0f}%" for x in (a, b) for k in ("color", "shape", "bg", "all")]
        lines.append(f"| {name} | {e['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
