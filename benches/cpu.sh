#!/usr/bin/env bash
# Issue 8's CPU measurement: Colossus against the PyTorch eager peer on the tiny-peer shape
# (shared/reference/tiny.json, 18.5M parameters, batch 8 x 256), one right after the other, ROUNDS
# times. This VM class drifts by +-20% from minute to minute, so only the ratio within a round
# means anything; the script prints each round and the median ratio. Needs torch on this machine
# (`pip install torch`; never in CI). From the repository root:
#   cargo build --release && benches/cpu.sh | tee cpu.log
# AVX2=1 runs both sides without AVX-512: PyTorch through ATEN_CPU_CAPABILITY and
# MKL_ENABLE_INSTRUCTIONS, Colossus through a binary built without burn-flex's `x86-v4` feature
# (pass it as BIN), roughly as an AVX2-only machine would run them. To build that binary, drop
# `features = ["x86-v4"]` from burn-flex in a copy's Cargo.toml, then run `cargo build --release`
# there.
set -uo pipefail
BIN=${BIN:-./target/release/colossus}
PEER=${PEER:-../shared/reference/torch_train_peer.py}
SHAPE=${SHAPE:-../shared/reference/tiny.json}
ROUNDS=${ROUNDS:-6}
if [ "${AVX2:-0}" = 1 ]; then
    export ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
fi
date -u
grep -m1 'model name' /proc/cpuinfo
grep -q avx512f /proc/cpuinfo && echo "cpu has AVX-512" || echo "cpu has no AVX-512"
ratios=()
for i in $(seq 1 "$ROUNDS"); do
    peer=$(/usr/bin/time -f 'peer_rss_kb=%M' python3 "$PEER" "$SHAPE" 8 256 10 2>&1 | tr '\n' ' ')
    ours=$("$BIN" bench configs/bench-tiny-peer.yaml --batch 8 --seq 256 --steps 10 --warmup 2 2>&1 | tail -1)
    pt=$(grep -o 'tokens_per_s=[0-9.]*' <<<"$peer" | cut -d= -f2)
    rss=$(grep -o 'peer_rss_kb=[0-9]*' <<<"$peer" | cut -d= -f2)
    ct=$(grep -o 'tokens_per_s=[0-9.]*' <<<"$ours" | cut -d= -f2)
    if [ -z "$pt" ] || [ -z "$ct" ]; then
        echo "round $i: no tokens_per_s (peer: $peer | colossus: $ours)" >&2
        exit 1
    fi
    r=$(python3 -c "print(f'{$ct / $pt:.3f}')")
    ratios+=("$r")
    echo "round $i: pytorch=$pt (rss $((rss / 1024)) MiB) colossus=$ct ratio=$r | $ours"
done
python3 -c "import statistics, sys; r = sorted(map(float, sys.argv[1:])); print(f'ratio median {statistics.median(r):.2f}, range {r[0]:.2f}-{r[-1]:.2f} over {len(r)} rounds')" "${ratios[@]}"
