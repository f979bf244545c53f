#!/usr/bin/env bash
# Same values, to the bit: the tiny preset's first five steps (loss and gradient norm as
# metrics.jsonl writes them, shortest round-trip f64, so equal text is equal bits) on every path a
# change to the kernels or the model may touch. For a change meant to move no value (a
# refactor, fewer launches, another kernel layout): run it before and after, and diff.
#   cargo build --features wgpu
#   benches/bitcheck.sh >/tmp/before.txt     # on the commit before the change
#   benches/bitcheck.sh >/tmp/after.txt && diff /tmp/before.txt /tmp/after.txt
# Paths: the CPU in f32 and in bf16; wgpu (lavapipe will do) in f32, and in f16 with composed and
# with flash attention (lavapipe has no bf16; a GPU's bf16 runs the same code with the other half
# type). 14 minutes on 2 cores with a dev build, beside a release build. RUNS="cpu-f32 wgpu-f16-flash"
# picks some.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/debug/colossus}
RUNS=${RUNS:-cpu-f32 cpu-bf16 wgpu-f32 wgpu-f16-composed wgpu-f16-flash}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$DIR}
for run in $RUNS; do
    IFS=- read -r backend precision attention <<<"$run"
    "$BIN" train "$ROOT/configs/tiny.yaml" --quiet --set backend="$backend" --set precision="$precision" \
        --set attention="${attention:-composed}" --set train.steps=5 --set train.warmup_steps=2 --set train.log_every=5 \
        --set train.checkpoint_every=0 --set train.eval_every=0 --set train.out_dir="$DIR" \
        --set run_name="$run" >"$DIR/$run.log" 2>&1 || { cat "$DIR/$run.log" >&2; exit 1; }
    python3 - "$DIR/$run/metrics.jsonl" "$run" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if "loss" in m:
        print(f'{sys.argv[2]} step={m["step"]} loss={m["loss"]!r} grad_norm={m["grad_norm"]!r}')
EOF
done
