#!/usr/bin/env python3
"""Process start to a loaded Engine, in fresh processes, for sdart source trees side by side (A/B of a change to
the load path: `git worktree add /tmp/before HEAD~1`, then compare the two).

Each child process imports sdart from its tree's `src/` and builds `Engine(model)`: what `sdart generate` does
before the run (imports, the model's load, speed options, compiled artifacts where present). Trees alternate
round by round, reversed every other round, so that the host's drift falls on each alike.

    python benchmarks/load_ab.py --tree after=. --tree before=/tmp/before [--rounds 4] [--folder FOLDER]
                                                  # writes "load_ab" in benchmarks/results-compile-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

CHILD = """
import json, sys, time
started = float(sys.argv[1])
from sdart.engine import Engine
Engine(sys.argv[2])
print("CHILD_RESULT", json.dumps({"loaded_after_s": time.time() - started}))
"""


def load_once(tree: Path, folder: str) -> float:
    from measure import child_result

    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-c", CHILD, repr(time.time()), folder]
    return child_result(command, timeout=900, env=env)["loaded_after_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", action="append", required=True, help="NAME=PATH of a source tree (repeat)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--folder", help="SD 1.5 diffusers folder (default: random weights in the cache)")
    p.add_argument("--out", default=str(HERE / "results-compile-cpu.json"),
                   help="results file whose `load_ab` entry this run writes")
    args = p.parse_args()
    from measure import load_average, machine
    from random_models import sd15_folder

    trees = dict(item.split("=", 1) for item in args.tree)
    folder = str(sd15_folder(args.folder))
    seconds: dict[str, list[float]] = {name: [] for name in trees}
    for r in range(args.rounds):
        order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
        for name, tree in order:
            seconds[name].append(round(load_once(Path(tree).resolve(), folder), 2))
            print(f"round {r + 1} {name}: {seconds[name][-1]} s (load average {load_average()})", flush=True)
    result = {"command": "python benchmarks/load_ab.py " + " ".join(sys.argv[1:]), "machine": machine("cpu"),
              "date": time.strftime("%Y-%m-%d %H:%M"),
              "trees": {name: {"path": trees[name], "seconds": s, "median_s": round(statistics.median(s), 2)}
                        for name, s in seconds.items()}}
    for name, row in result["trees"].items():
        print(f"{name}: median {row['median_s']} s of {row['seconds']}")
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {}
    data["load_ab"] = result
    out.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
