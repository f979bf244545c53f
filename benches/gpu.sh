#!/usr/bin/env bash
# Issue 7's GPU measurement in one sitting on the GPU machine: Colossus and the PyTorch peer on the
# same shapes, back to back. That machine has no internet, and only this checkout travels there
# (not ../shared), so prepare a folder here that git ignores and carry it:
#   echo /.gpu/ >> .git/info/exclude && mkdir -p .gpu
#   CUDARC_CUDA_VERSION=13000 cargo build --release --locked --features cuda
#   cp target/release/colossus .gpu/colossus-cuda && strip .gpu/colossus-cuda
#   cp ../shared/reference/torch_train_peer.py .gpu/
# (stripped, the binary is ~47 MB: what travels, this checkout included, must stay under 64 MiB).
# CUDARC_CUDA_VERSION pins cudarc's bindings to the device's CUDA (13.0 with driver 580); without
# nvcc here they would default to the newest CUDA cudarc knows. On the GPU machine, from the
# repository root (carry `.gpu`):
#   set -o pipefail; benches/gpu.sh 2>&1 | tee $OUT/gpu.log
# The runs go in order of importance, each under its own time limit (EACH seconds), so a sitting
# cut short still has the headline numbers. Every line from `colossus bench` and from the peer
# carries tokens/s, model TFLOP/s and peak memory; docs/benchmarks.md says how to record them.
set -uo pipefail
BIN=${BIN:-.gpu/colossus-cuda}
PEER=${PEER:-.gpu/torch_train_peer.py}
WORK=${WORK:-$(mktemp -d)}
STEPS=${STEPS:-10}
EACH=${EACH:-150}
for f in "$BIN" "$PEER"; do
    [ -e "$f" ] || { echo "missing $f (see the top of benches/gpu.sh)" >&2; exit 2; }
done
# cudarc opens libcuda, libnvrtc and libnccl by name at run time: add the toolkit's and the pip
# wheels' library folders in case the loader does not already know them.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    $(python3 -c 'import glob, nvidia; print(" ".join(d for p in nvidia.__path__ for d in glob.glob(p + "/*/lib")))' 2>/dev/null); do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
run() { echo "--- $*"; timeout "$EACH" "$@" || echo "--- exit $? (timeout is 124)"; }
ours() { run "$BIN" bench "configs/$1.yaml" --set backend=cuda --batch "$2" --seq "$3" \
    --steps "$STEPS" --warmup 3 "${@:4}"; }
peer() { run python3 "$PEER" "$WORK/$1.json" "$2" "$3" "$STEPS" "${@:4}"; }
# preset, sequences per step, tokens per sequence
shapes=("gpu-350m 16 1024" "small 16 128")
for shape in "${shapes[@]}"; do
    set -- $shape
    "$BIN" bench "configs/$1.yaml" --peer-json "$WORK/$1.json" >/dev/null
done
# First the headline: the ~350M preset in bf16 against PyTorch eager and torch.compile.
set -- ${shapes[0]}
ours "$@" --set precision=bf16
peer "$@" --bf16
peer "$@" --bf16 --compile
# The flash-attention kernel (src/model/flash.rs) on the same run: its line says which kernel ran
# (attention=flash/blackbox_accelerated is the tensor-core one) and its loss should match the
# composed run's within bf16 noise (the same steps, summed in another order).
ours "$@" --set precision=bf16 --set attention=flash
# Then what the GPU kernels (src/backend/gpu.rs: softmax, RMSNorm, cross-entropy) buy: the same
# bf16 run on the plain burn composition; then f32 on both sides.
ours "$@" --set precision=bf16 --plain-kernels
ours "$@" --set precision=f32
peer "$@"
ours "$@" --set precision=f32 --set attention=flash
# The small preset last.
set -- ${shapes[1]}
ours "$@" --set precision=bf16
ours "$@" --set precision=bf16 --set attention=flash
peer "$@" --bf16
peer "$@" --bf16 --compile
ours "$@" --set precision=f32
peer "$@"
