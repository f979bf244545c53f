#!/usr/bin/env bash
# Kernel launches per training step at gpu-350m's structure, counted on wgpu (lavapipe will do:
# launch counts do not depend on the device; they say nothing about time). The method of
# docs/benchmarks.md, "Launches per training step", as one command, so a change's launch count
# is measured, not recounted by hand:
#   cargo build --features wgpu && benches/launches.sh            # f32
#   PRECISION=f16 benches/launches.sh                              # half products (lavapipe has no bf16)
#   benches/launches.sh --set attention=flash                      # extra arguments go to the bench
# Prints the bench's line (its loss too: a change that should not move values must leave it),
# then backward / optimizer / forward / step, then the step's launches by kernel, most first, with
# each phase's share.
# 2 minutes on 2 cores with a dev build, beside a release build.
#
# One step is the launches from the 2nd CrossEntropyFwd kernel up to the 3rd (the loss kernel
# counts with the backward that follows it), split after the last RmsNormBwd (the backward's end)
# and at the first RmsNormFwd (the next forward's start); the optimizer is what lies between.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/debug/colossus}
PRECISION=${PRECISION:-f32}
TOP=${TOP:-25}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
# cubecl reads cubecl.toml from the working directory; "minimal" logs one line per launch. It
# does not truncate the log, so each run gets a new directory.
cat >"$DIR/cubecl.toml" <<'EOF'
[profiling.logger]
level = "minimal"
file = "profile.log"
append = false
EOF
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$DIR}
(cd "$DIR" && "$BIN" bench "$ROOT/configs/gpu-350m.yaml" --set backend=wgpu --set precision="$PRECISION" \
    --set model.d_model=128 --set model.vocab_size=1024 --batch 2 --seq 64 --steps 3 --warmup 1 "$@")
python3 - "$DIR/profile.log" "$TOP" <<'EOF'
import collections, sys
names = [l[len("Executing "):].split(" | ")[0].strip()
         for l in open(sys.argv[1]) if l.startswith("Executing ")]
ce = [i for i, n in enumerate(names) if n == "CrossEntropyFwdKernel"]
if len(ce) < 3:
    sys.exit(f"expected at least 3 CrossEntropyFwdKernel launches (3 steps), found {len(ce)}")
a, b = ce[1], ce[2]
last_bwd = max(i for i in range(a, b) if names[i] == "RmsNormBwdKernel")
first_fwd = min(i for i in range(last_bwd, b) if names[i] == "RmsNormFwdKernel")
print(f"launches: backward={last_bwd - a + 1} optimizer={first_fwd - last_bwd - 1} "
      f"forward={b - first_fwd} step={b - a}")
phases = [collections.Counter(names[i:j]) for i, j in
          ((a, last_bwd + 1), (last_bwd + 1, first_fwd), (first_fwd, b))]
print(f"{'step':>6} {'bwd':>6} {'opt':>6} {'fwd':>6} kernel")
for name, n in collections.Counter(names[a:b]).most_common(int(sys.argv[2])):
    print(f"{n:6} " + " ".join(f"{c[name]:6}" for c in phases) + f" {name}")
EOF
