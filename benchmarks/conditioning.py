"""What the A1111 prompt language costs: encoding a 3-chunk prompt with weights (sdart.conditioning) against a
default CPU image (SD 1.5 architecture, random weights, 512², DPM++ 2M Karras, 25 steps), measured interleaved.

    python benchmarks/conditioning.py [--rounds 3] [--quick]

Each round times, one after the other: sdart's encode of the weighted 3-chunk prompt and a negative prompt (every
chunk through the text encoder on its own), diffusers' own encode of a plain one-chunk prompt (what a run cost
before), and a 2-step image whose per-step and fixed times give the 25-step image (fixed + 25 × step; the fixed
part already holds the 3-chunk encode). Medians over the rounds; the JSON goes to benchmarks/results-conditioning.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent
# Weights and commas; the random SD 1.5's byte-level tokenizer (one token per character) makes it 3 chunks.
PROMPT = ", ".join(["(masterpiece:1.2)", "a red fox", "((snow))", "[blurry]"] * 5)
NEGATIVE = "lowres, (bad anatomy:1.1), watermark"
STEPS = 25


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the tiny test model instead of SD 1.5: a smoke test")
    parser.add_argument("--out", default=str(HERE / "results-conditioning.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from sdart.engine import Engine
    from sdart.settings import Settings

    if args.quick:
        import tempfile

        from sdart.testing import save_tiny_model

        folder = save_tiny_model(Path(tempfile.mkdtemp()) / "tiny", "sd15")
        size = None
    else:
        from random_models import sd15_folder

        folder, size = sd15_folder(), 512
    engine = Engine(str(folder), settings=Settings(device="cpu"))
    pipe = engine.model.pipeline
    chunks = engine.encode_prompt(PROMPT, NEGATIVE, steps=STEPS).chunks
    rounds = []
    for _ in range(args.rounds):
        encode = timed(lambda: engine.encode_prompt(PROMPT, NEGATIVE, steps=STEPS))
        with torch.no_grad():
            plain = timed(lambda: pipe.encode_prompt("a red fox in the snow", engine.device, 1, True,
                                                     negative_prompt="lowres"))
        result = engine.generate(prompt=PROMPT, negative_prompt=NEGATIVE, steps=2, seed=0, width=size, height=size,
                                 progress=False)
        image = result.timings["fixed_s"] + STEPS * result.timings["step_s"]
        rounds.append({"encode_s": encode, "plain_encode_s": plain, "image_s": image,
                       "step_s": result.timings["step_s"], "fixed_s": result.timings["fixed_s"]})
    summary = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    summary.update(chunks=chunks, share_of_image=summary["encode_s"] / summary["image_s"], rounds=rounds,
                   model="tiny sd15" if args.quick else "SD 1.5 (random weights)", dtype=str(engine.dtype),
                   command="python benchmarks/conditioning.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"{chunks}-chunk weighted prompt + negative: encode {summary['encode_s']:.3f} s "
          f"(diffusers, one plain chunk each: {summary['plain_encode_s']:.3f} s); 25-step image "
          f"{summary['image_s']:.1f} s; encode = {100 * summary['share_of_image']:.2f} % of the image")


if __name__ == "__main__":
    main()
