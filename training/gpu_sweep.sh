#!/usr/bin/env bash
# Design comparisons on a GPU machine (the bundled weights are trained on CPU; see README).
# Usage: VARIANTS="name:args;name:args" LIMIT=seconds bash training/gpu_sweep.sh   → $OUT/sweep.json
set -u
OUT=${OUT:-/tmp/sweep_out}
W=/tmp/sweep
mkdir -p "$W" "$OUT"
export PYTHONUNBUFFERED=1
IFS=';' read -ra VS <<< "${VARIANTS:-A_joint:;B_frozen:--text-encoder frozen}"
for v in "${VS[@]}"; do
  name=${v%%:*}; args=${v#*:}
  ( timeout "${LIMIT:-380}" python3 -m training.train_shapes --out "$W/$name/model" --log-dir "$W/$name/logs" --threads 2 $args > "$W/$name.train.log" 2>&1 \
    && timeout "${EVAL_LIMIT:-120}" python3 -m training.evaluate_shapes --model "$W/$name/model" --out-dir "$W/$name/eval" --threads 2 > "$W/$name.eval.log" 2>&1 \
    || echo "$name FAILED" ) &
done
wait
python3 - "$W" "$OUT" <<'PY'
import json, sys, shutil
from pathlib import Path
w, out = Path(sys.argv[1]), Path(sys.argv[2])
res = {}
for d in sorted(p for p in w.iterdir() if p.is_dir()):
    r = {}
    for key, f in (("train", "logs/train_summary.json"), ("eval", "eval/results.json")):
        if (d / f).exists():
            r[key] = json.loads((d / f).read_text())
    res[d.name] = r
    if (d / "eval/grid.png").exists():
        shutil.copy(d / "eval/grid.png", out / f"grid_{d.name}.png")
(out / "sweep.json").write_text(json.dumps(res, indent=1))
for k, r in res.items():
    print(k, r.get("train", {}).get("timings_s"))
    for s, v in r.get("eval", {}).get("samplers", {}).items():
        print(f"  {s:16s}", *(f"{g}: c {v[g]['color']:.2f} s {v[g]['shape']:.2f} b {v[g]['bg']:.2f}" for g in ("cfg1", "cfg7")))
PY
tail -n 3 "$W"/*.log > "$OUT/tails.log"
