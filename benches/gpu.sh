#!/usr/bin/env bash
# Issue 7's GPU measurement in one sitting, on the GPU machine (no internet there): Colossus and
# the PyTorch peer on the same shapes, back to back. Build on an x86-64 machine with network
# first and carry the binary:
#   cargo build --release --features cuda && cp target/release/colossus colossus-cuda
# then, on the GPU machine, from the repository root:
#   BIN=./colossus-cuda PEER=shared/reference/torch_train_peer.py benches/gpu.sh | tee gpu.log
# Each line printed by `colossus bench` and by the peer carries tokens/s, model TFLOP/s and peak
# memory; docs/benchmarks.md says how to record them.
set -uo pipefail
BIN=${BIN:-./colossus-cuda}
PEER=${PEER:-shared/reference/torch_train_peer.py}
WORK=${WORK:-$(mktemp -d)}
STEPS=${STEPS:-10}
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
# preset, sequences per step, tokens per sequence
for shape in "gpu-350m 16 1024" "small 16 128"; do
    set -- $shape
    cfg=configs/$1.yaml
    echo "=== $1: batch $2 x seq $3"
    "$BIN" bench "$cfg" --peer-json "$WORK/$1.json" >/dev/null
    for precision in bf16 f32; do
        "$BIN" bench "$cfg" --set backend=cuda --set precision=$precision \
            --batch "$2" --seq "$3" --steps "$STEPS" --warmup 3
    done
    # What the GPU kernels (src/backend/gpu.rs: softmax, RMSNorm, cross-entropy) buy: the same bf16 run on the
    # plain burn composition.
    "$BIN" bench "$cfg" --set backend=cuda --set precision=bf16 --plain-kernels \
        --batch "$2" --seq "$3" --steps "$STEPS" --warmup 3
    python3 "$PEER" "$WORK/$1.json" "$2" "$3" "$STEPS" --bf16
    python3 "$PEER" "$WORK/$1.json" "$2" "$3" "$STEPS" --bf16 --compile
    python3 "$PEER" "$WORK/$1.json" "$2" "$3" "$STEPS"
done
