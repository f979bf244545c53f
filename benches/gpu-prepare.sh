#!/usr/bin/env bash
# Everything benches/gpu.sh needs on the GPU machine, staged here in `.gpu/` (git ignores it; no
# GPU needed; 33 minutes on 2 cores, 2966 kernels, measured 2026-12-04 with the stand-in's
# made-up expert shapes): the release binary, the PyTorch peer, and the CUDA
# kernels of every run gpu.sh makes, compiled for sm_90a, in the kernel cache that binary reads
# there (`colossus bench --compile-only --kernel-cache`, src/backend/cuda_cache.rs). Without the
# cache the sitting's first run spends its first minutes in NVRTC (454 s of it for gpu-350m's
# bf16 step on one core here: docs/benchmarks.md, "What the first run compiles").
#
# Needs NVRTC and the CUDA headers, pip's wheels for the device's CUDA (13.0, driver 580):
#   python3 -m pip install --target .cuda-tools "nvidia-cuda-nvrtc==13.0.*" \
#       "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-crt==13.0.*"
# Then, from the repository root: benches/gpu-prepare.sh; and carry `.gpu` to
#   set -o pipefail; benches/gpu.sh 2>&1 | tee $OUT/gpu.log
# The cache is only for the binary beside it: its keys name kernels, not the build, so a
# rebuilt binary needs this script again (it starts the cache afresh).
#
# `benches/gpu-prepare.sh --if-stale` does nothing when `.gpu` was staged from the same inputs
# (.gpu/built-from: the last commit touching what the binary and the cache are made from, and
# any uncommitted change to it), so a session on a machine that already staged it keeps its 33
# minutes.
set -euo pipefail
# Markdown under them (the vendored crates' PATCHES.md and READMEs) is not built into anything.
inputs=(src vendor kernels configs Cargo.toml Cargo.lock benches/gpu-prepare.sh ':(exclude)*.md')
stamp() { git log -1 --format=%H -- "${inputs[@]}"; git status --porcelain -- "${inputs[@]}"; }
if [ "${1:-}" = --if-stale ] && [ -e .gpu/kernel-cache.tar.xz ] && [ -e .gpu/colossus-cuda.xz ] &&
    [ "$(stamp)" = "$(cat .gpu/built-from 2>/dev/null)" ]; then
    echo ".gpu is up to date: staged from $(head -1 .gpu/built-from)"
    exit 0
fi
TOOLS=${TOOLS:-$PWD/.cuda-tools/nvidia/cu13}
SHARED=${SHARED:-../shared/reference}
mkdir -p .gpu
grep -qxF /.gpu/ .git/info/exclude 2>/dev/null || echo /.gpu/ >>.git/info/exclude
# cudarc's bindings pinned to the device's CUDA; without nvcc here they would be the newest
# cudarc knows.
CUDARC_CUDA_VERSION=13000 cargo build --release --locked --features cuda
cp target/release/colossus .gpu/colossus-cuda
strip .gpu/colossus-cuda
cp "$SHARED/torch_train_peer.py" "$SHARED/grok_ref.py" .gpu/
export CUDA_PATH=$TOOLS LD_LIBRARY_PATH=$TOOLS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
CACHE=.gpu/kernel-cache
rm -rf "$CACHE" .gpu/kernel-cache.tar.xz .gpu/colossus-cuda.xz .gpu/built-from
# gpu.sh's runs, by the kernels they launch (the profiled run is the first one's; the flash
# check, --check-flash-backward, is not a bench run and compiles on the GPU).
compile() {
    echo "--- $*"
    .gpu/colossus-cuda bench "configs/$1.yaml" --compile-only --batch "$2" --seq "$3" \
        --steps 1 --warmup 0 --kernel-cache "$CACHE" "${@:4}" | tee .gpu/compile.log
    grep -q "nvrtc=13\.0 " .gpu/compile.log ||
        echo "warning: not NVRTC 13.0 (the device's CUDA): its cubins need a driver as new as it"
}
compile gpu-350m 16 1024 --set precision=bf16
compile gpu-350m 16 1024 --set precision=bf16 --set attention=flash
compile gpu-350m 16 1024 --set precision=bf16 --set attention=flash --composed-flash-backward
compile gpu-350m 16 1024 --set precision=bf16 --f32-head
compile gpu-350m 16 1024 --set precision=bf16 --per-expert-moe
compile gpu-350m 16 1024 --set precision=bf16 --plain-kernels
compile gpu-350m 16 1024 --set precision=f32
compile gpu-350m 16 1024 --set precision=f32 --set attention=flash
compile small 16 128 --set precision=bf16
compile small 16 128 --set precision=bf16 --set attention=flash
compile small 16 128 --set precision=f32
compile gpu-350m 16 1024 --set precision=f16
rm .gpu/compile.log
# Both compress well with xz: the cache 19-fold (353 MB to 18.3 MB), the binary 6-fold (9.3 MB).
tar -C "$CACHE" -cf - . | xz -T0 -6 >.gpu/kernel-cache.tar.xz
rm -rf "$CACHE"
xz -T0 -6 -f .gpu/colossus-cuda
stamp >.gpu/built-from
du -ch .gpu/*
# What travels (the checkout and .gpu) must stay under 64 MiB.
total=$(( $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) + $(du -cb .gpu/* | tail -1 | cut -f1) ))
echo "to carry: $((total >> 20)) MiB of 64"
[ $total -lt $((64 << 20)) ] || { echo "too big to carry" >&2; exit 1; }
