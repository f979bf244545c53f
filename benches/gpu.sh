#!/usr/bin/env bash
# Issue 7's GPU measurement in one sitting on the GPU machine: Colossus and the PyTorch peer on the
# same shapes, back to back. That machine has no internet, and only this checkout travels there
# (not ../shared), so stage what it needs here first, in `.gpu/`, which git ignores:
#   benches/gpu-prepare.sh
# It builds the release binary (--features cuda), copies the peer, and compiles every CUDA kernel
# these runs launch into the kernel cache this script unpacks (xz-compressed, both: what travels,
# this checkout included, must stay under 64 MiB). On the GPU machine, from the repository root
# (carry `.gpu`):
#   set -o pipefail; benches/gpu.sh 2>&1 | tee $OUT/gpu.log
# The runs go in order of importance, each under its own time limit (EACH seconds; FIRST for the
# runs that compile most), so a sitting cut short still has the headline numbers. Every line
# from `colossus bench` and from the peer carries tokens/s, model TFLOP/s and peak memory;
# docs/benchmarks.md says how to record them.
set -uo pipefail
ROOT=$(pwd)
WORK=${WORK:-$(mktemp -d)}
# gpu-prepare.sh leaves the binary xz-compressed.
[ -z "${BIN:-}" ] && [ -e .gpu/colossus-cuda.xz ] && xz -dc .gpu/colossus-cuda.xz >"$WORK/colossus-cuda" &&
    chmod +x "$WORK/colossus-cuda" && BIN=$WORK/colossus-cuda
BIN=${BIN:-.gpu/colossus-cuda}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
PEER=${PEER:-.gpu/torch_train_peer.py}
# The CUDA kernels gpu-prepare.sh compiled for this binary (`--compile-only --kernel-cache`).
KERNELS=${KERNELS:-.gpu/kernel-cache.tar.xz}
STEPS=${STEPS:-10}
EACH=${EACH:-150}
# burn's CUDA server compiles each kernel with NVRTC at its first launch, one after another, and
# autotune launches every candidate: gpu-350m's bf16 step compiles 391 kernels, 278 of them
# matmul candidates, in 454 s of NVRTC time on one core of this project's 2-core machine
# (`--compile-only`'s nvrtc_s, docs/benchmarks.md). Each 150 s limit would cut that run off
# before its first number. The carried kernel cache (KERNELS) should spare all of that; in
# case it does not (a kernel the GPU selects differently is compiled there), the runs that
# would compile most (the first of each precision, and the torch.compile peers, whose Inductor
# compiles too) get FIRST seconds, and every run shares cubecl's caches (below): the autotune
# choices and each compiled kernel, so a later run compiles only what no earlier one launched.
FIRST=${FIRST:-420}
# A dry run of this script without a GPU (it checks the script, not the speed), with a
# `--features wgpu` build on lavapipe, which has f16 but no bf16 (the peer's lines fail without
# torch; ~14 minutes on 2 cores):
#   BIN=target/debug/colossus BACKEND=wgpu HALF=f16 SHAPE1="tiny 2 32" SHAPE2="tiny 2 32" \
#   STEPS=2 benches/gpu.sh
BACKEND=${BACKEND:-cuda}
HALF=${HALF:-bf16}
# The peer imports the model from grok_ref.py beside it.
for f in "$BIN" "$PEER" "$(dirname "$PEER")/grok_ref.py"; do
    [ -e "$f" ] || { echo "missing $f (see the top of benches/gpu.sh)" >&2; exit 2; }
done
# cudarc opens libcuda, libnvrtc and libnccl by name at run time: add the toolkit's and the pip
# wheels' library folders in case the loader does not already know them.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    $(python3 -c 'import glob, nvidia; print(" ".join(d for p in nvidia.__path__ for d in glob.glob(p + "/*/lib")))' 2>/dev/null); do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
date -u
# Which commit's binary and kernels these are (gpu-prepare.sh's stamp), for the record.
[ -e .gpu/built-from ] && echo "--- .gpu staged from commit $(head -1 .gpu/built-from)"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' || true
# cubecl reads `cubecl.toml` from the working directory (or a parent), so Colossus runs in RUN,
# whose file points both caches at CACHE: a fresh folder, as the PTX cache is keyed by kernel
# names and settings, not by the binary that made them. (Off by default in cubecl; the autotune
# cache would otherwise go under the checkout's target/.)
CACHE=$WORK/cubecl-cache
RUN=$WORK/run
mkdir -p "$CACHE" "$RUN"
caches=$(printf '[compilation]\ncache = { file = "%s" }\n[autotune]\ncache = { file = "%s" }\n' "$CACHE" "$CACHE")
printf '%s\n' "$caches" >"$RUN/cubecl.toml"
# Kernels in the cache: cubecl's table of contents has a line for each, and the runtime adds one
# for each kernel it compiles, so the count's growth over a run is what NVRTC compiled in it
# (CUDA's cache only: a wgpu dry run, below, always prints 0; checked 2026-12-04, 10 minutes).
kernels() { cat "$CACHE"/cuda/*/ptx/toc.json.log 2>/dev/null | wc -l; }
if [ -e "$KERNELS" ]; then
    xz -dc "$KERNELS" | tar -x -C "$CACHE"
    echo "--- kernel cache from $KERNELS: $(kernels) kernels"
fi
run() {
    echo "--- $*"
    timeout "$LIMIT" "$@"
    local rc=$?
    [ $rc = 0 ] || echo "--- exit $rc (timeout is 124)"
    return $rc
}
LIMIT=$EACH
colossus() {
    local before rc
    before=$(kernels)
    (cd "$RUN" && run "$BIN" "$@")
    rc=$?
    echo "--- compiled by NVRTC in this run: $(($(kernels) - before)) kernels"
    return $rc
}
# Each of our lines ends with `step_ms_spread=min:…,median:…,max:…`: a slowest timed step far
# above the median compiled or autotuned a kernel for a new expert row count (tokens/s hides it).
ours() { colossus bench "$ROOT/configs/$1.yaml" --set backend="$BACKEND" --batch "$2" --seq "$3" \
    --steps "$STEPS" --warmup 3 "${@:4}"; }
peer() { run python3 "$PEER" "$WORK/$1.json" "$2" "$3" "$STEPS" "${@:4}"; }
# The fused flash backward (src/backend/flash_bwd.rs) against the composed backward, at a
# preset's attention shape, before any flash run: lavapipe checks all of it but its tensor-core
# products, which only run here; a FAILED line means `attention: flash` must not be used (the
# flash timings that follow would be of wrong gradients).
check_flash() { colossus bench "$ROOT/configs/$1.yaml" --set backend="$BACKEND" --seq "$3" \
    --set precision="$HALF" --check-flash-backward; }
# preset, sequences per step, tokens per sequence
shapes=("${SHAPE1:-gpu-350m 16 1024}" "${SHAPE2:-small 16 128}")
for shape in "${shapes[@]}"; do
    set -- $shape
    "$BIN" bench "configs/$1.yaml" --peer-json "$WORK/$1.json" >/dev/null
done
# First the headline, the four numbers issue 7 asks for before anything else: each preset in
# bf16 against the PyTorch peer in eager mode and with torch.compile. The eager peer goes first:
# it takes under a minute and the ratio needs it. Then ours, which compiles and autotunes what
# the carried cache lacks (FIRST); what it compiled is listed after it, to show the caches work.
# The small preset's two eager-side runs (seconds each) come before the torch.compile peers,
# whose Inductor compile time on the MoE (grok_ref.py's `nonzero` routing breaks its graph) is
# unknown and could otherwise leave the sitting without the small preset's numbers.
set -- ${shapes[0]}
peer "$@" --bf16
LIMIT=$FIRST
# Cut off by its limit while still compiling, the run has left what it compiled and tuned in the
# caches (cubecl writes each entry as it goes), so a second try starts from there. A lock file
# the killed run may have held would make the next wait 30 s for it to go stale. Failed
# otherwise, it runs again without the carried kernels (the driver may have refused them).
ours "$@" --set precision="$HALF"
case $? in
0) ;;
124) find "$CACHE" -name '*.lock' -delete; ours "$@" --set precision="$HALF" ;;
*) [ -e "$KERNELS" ] && echo "--- again without the carried kernels" && rm -rf "$CACHE"/cuda &&
    ours "$@" --set precision="$HALF" ;;
esac
echo "--- cubecl caches after the first run: $(find "$CACHE" -type f | wc -l) files, $(du -sh "$CACHE" | cut -f1)"
find "$CACHE" -type f | sed "s|^$CACHE/||" | head -8
set -- ${shapes[1]}
ours "$@" --set precision="$HALF"
peer "$@" --bf16
set -- ${shapes[0]}
peer "$@" --bf16 --compile
set -- ${shapes[1]}
peer "$@" --bf16 --compile
LIMIT=$EACH
set -- ${shapes[0]}
# Where the time goes (.library/device/METHOD.md: profile, then count against the ceilings):
# cubecl times every kernel on the device as it runs and prints a table of kernels by total time
# at each sync, so one per phase of each step (`cubecl.toml`, read from the working directory).
# Launches are serialised, so this run's tokens/s is no benchmark. The last three tables are
# printed (the last step's phases; on lavapipe the forward and backward shared one table), each
# kernel's name cut to its first part and, for matmuls, its algorithm; the whole log goes to
# $OUT, compressed.
prof=$(mktemp -d)
{ printf '%s\n' "$caches"; printf '[profiling.logger]\nlevel = "basic"\nfile = "%s"\nappend = false\n' \
    "$prof/profile.log"; } >"$prof/cubecl.toml"
(cd "$prof" && run "$BIN" bench "$ROOT/configs/$1.yaml" --set backend="$BACKEND" --batch "$2" \
    --seq "$3" --steps 2 --warmup 1 --set precision="$HALF")
if [ -s "$prof/profile.log" ]; then
    gzip -c "$prof/profile.log" >"${OUT:-$WORK}/profile.log.gz"
    awk -F'|' '
        function trim(s) { gsub(/^ +| +$/, "", s); return s }
        /^\| Name .*Ratio/ { n++; on = 1; rows = 0; next }
        on && /^\|[-⎼⎯]/ { next }
        on {
            # name | duration | count | ratio; long generic names (the matmul families) keep
            # their first part and their algorithm.
            name = trim($2); algo = ""
            for (i = 3; i <= NF - 4; i++) if ($i ~ /MatmulFamily/) algo = algo " " trim($i)
            for (i = 3; i <= NF - 4; i++) if ($i !~ /Runtime/ && length(name) < 40 && algo == "") name = name " " trim($i)
            row = sprintf("%-60s %14s %6s %6s", substr(name algo, 1, 60), trim($(NF-3)), trim($(NF-2)), trim($(NF-1)))
            if (name == "Total") { t[n] = t[n] row "\n"; on = 0 } else if (rows++ < 16) t[n] = t[n] row "\n"
        }
        END { for (i = n - 2; i <= n; i++) if (i > 0) printf "--- profile table %d of %d (kernel, time, launches, share)\n%s", i, n, t[i] }' \
        "$prof/profile.log"
fi
# The flash-attention kernel (src/model/flash.rs) on the same run: its line says which kernel ran
# (attention=flash/blackbox_accelerated is the tensor-core one) and its loss should match the
# composed run's within bf16 noise (the same steps, summed in another order).
check_flash "$@"
ours "$@" --set precision="$HALF" --set attention=flash
# What the fused flash backward buys: the same run with the composed backward (matmuls around the
# softmax kernels, the probabilities rebuilt at [rows, keys] in f32). Predicted
# (docs/benchmarks.md): most of the ~30 ms a step of attention traffic goes.
ours "$@" --set precision="$HALF" --set attention=flash --composed-flash-backward
# What the bf16 head product (src/model/wide.rs) buys: the same run with the head in f32 (tf32),
# as before it. Predicted (docs/benchmarks.md): up to 18% more matmul time with the f32 head,
# less of the whole step.
ours "$@" --set precision="$HALF" --f32-head
# What one autodiff node for all of a layer's experts (src/model/experts.rs) buys: the same run
# with a node per expert, whose input gradients are whole [n, d] tensors added up by autodiff.
# Predicted (docs/benchmarks.md, "One node for all experts"): ~5-7 ms a step more per-expert.
ours "$@" --set precision="$HALF" --per-expert-moe
# Then what the GPU kernels (src/backend/gpu.rs: softmax, RMSNorm, cross-entropy) buy: the same
# bf16 run on the plain burn composition; then f32 on both sides.
ours "$@" --set precision="$HALF" --plain-kernels
LIMIT=$FIRST
ours "$@" --set precision=f32
LIMIT=$EACH
peer "$@"
ours "$@" --set precision=f32 --set attention=flash
# The small preset's other runs (its bf16 run and both bf16 peers ran with the headline).
set -- ${shapes[1]}
check_flash "$@"
ours "$@" --set precision="$HALF" --set attention=flash
ours "$@" --set precision=f32
peer "$@"
# f16 with loss scaling (`precision: f16`; f16 runs at the bf16 rate on Hopper), last.
set -- ${shapes[0]}
ours "$@" --set precision=f16
