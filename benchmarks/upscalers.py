#!/usr/bin/env python3
"""Upscaler throughput: output megapixels per second with and without tiles, per precision and memory layout.

The model is an RRDBNet of Real-ESRGAN x4plus's shape (16.7 M weights, 4×) with random weights, detected and run
by sdart's own path (spandrel, sdart.upscalers); the input a SIZE² picture. Configurations are interleaved round by
round (A B C …, … C B A) so that each sees the same load of a shared machine on average; each configuration runs
once untimed first on a 32² picture (libraries and oneDNN set up; at 256² a run is minutes, its first-call cost
is lost in that). Also recorded: the peak resident memory of each run, and
how far the tiled picture is from the whole one (8-bit levels).

    python benchmarks/upscalers.py [--size 256] [--rounds 1] [--threads N]   # writes benchmarks/results-upscalers.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from measure import GiB, PeakRSS, load_average, machine, release_memory  # noqa: E402

# label → (dtype, channels_last, tile, overlap); tile 0 = the whole picture at once.
CONFIGS = {
    "fp32, whole picture": (torch.float32, False, 0, 0),
    "bf16, whole picture": (torch.bfloat16, False, 0, 0),
    "bf16 channels_last, whole picture (sdart's CPU default at ≤512²)": (torch.bfloat16, True, 0, 0),
    "bf16 channels_last, 128 px tiles, 32 overlap": (torch.bfloat16, True, 128, 32),
    "fp32, 128 px tiles, 32 overlap": (torch.float32, False, 128, 32),
}


def test_picture(size: int) -> Image.Image:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x, y, x + y], axis=-1) / (2 * size) * 255
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="input side in pixels (output: 4×)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--only", default="", help="comma-separated substrings of configuration names")
    parser.add_argument("--out", type=Path, default=HERE / "results-upscalers.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import tempfile

    from sdart.upscalers.files import choose_dtype, prepare, read_model
    from sdart.upscalers.pixel import run_model
    from sdart.upscalers.tiles import tile_layout
    from sdart.upscalers.tiny import realesrgan_x4plus_shaped

    configs = {k: v for k, v in CONFIGS.items() if not args.only or any(s in k for s in args.only.split(","))}
    with tempfile.TemporaryDirectory() as folder:  # through a file, as a user's model arrives
        path = Path(folder) / "RealESRGAN_x4plus-shaped.pth"
        torch.save(realesrgan_x4plus_shaped().state_dict(), path)
        models = {label: prepare(read_model(path), torch.device("cpu"), dtype, channels_last)
                  for label, (dtype, channels_last, _, _) in configs.items()}
        auto = choose_dtype(read_model(path), torch.device("cpu"))
    picture = test_picture(args.size)
    out_mp = (args.size * 4) ** 2 / 1e6
    info = {**machine("cpu"), "auto dtype on this CPU": str(auto).removeprefix("torch."),
            "input": f"{args.size}x{args.size}", "output megapixels": round(out_mp, 3)}
    print(json.dumps(info, indent=2), flush=True)

    rss = PeakRSS()
    times: dict[str, list[float]] = {label: [] for label in configs}
    peaks: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}
    for label in configs:  # untimed warm-up
        run_model(test_picture(32), models[label], tile=configs[label][2] and 16, overlap=configs[label][3] and 4)
    for round_index in range(args.rounds):
        order = list(configs) if round_index % 2 == 0 else list(reversed(configs))
        for label in order:
            _, _, tile, overlap = configs[label]
            release_memory()
            rss.reset()
            started = time.perf_counter()
            result = run_model(picture, models[label], tile=tile, overlap=overlap)
            times[label].append(time.perf_counter() - started)
            peaks[label] = max(peaks.get(label, 0.0), rss.peak / GiB)
            outputs[label] = np.asarray(result).astype(np.int16)
            print(f"round {round_index + 1} {label}: {times[label][-1]:.2f} s (load {load_average()})", flush=True)
    rss.close()

    rows = []
    for label, (dtype, channels_last, tile, overlap) in configs.items():
        best = min(times[label])
        whole = next((other for other, c in configs.items() if c[:2] == (dtype, channels_last) and c[2] == 0), None)
        row = {"config": label, "seconds": round(best, 2), "output_mp_per_s": round(out_mp / best, 4),
               "input_mp_per_s": round(args.size**2 / 1e6 / best, 5), "peak_rss_gib": round(peaks[label], 2),
               "tiles": len(tile_layout(args.size, tile, overlap)) ** 2 if tile else 1, "all_seconds": times[label]}
        if tile and whole in outputs:
            row["max_levels_vs_whole"] = int(np.abs(outputs[label] - outputs[whole]).max())
            row["mean_levels_vs_whole"] = round(float(np.abs(outputs[label] - outputs[whole]).mean()), 4)
        rows.append(row)
        print(f"{label:70s} {best:7.2f} s  {out_mp / best:7.4f} MP/s out  peak RSS {peaks[label]:.2f} GiB", flush=True)
    info["load average at end"] = load_average()
    args.out.write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
