"""PyTorch's (MKL's) side of examples/matmul_shapes.rs: the same 13 products of one CPU row shard
of the tiny-peer step, on one thread, best of 3 means, in GFLOP/s. It tells whether the PyTorch
peer's matmuls are faster or slower than gemm's on this machine. Needs torch (never in CI):
    python3 benches/torch_matmul_shapes.py
    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 python3 benches/torch_matmul_shapes.py
"""
import time

import torch

# name, m, k, n, lhs transposed, rhs transposed: [m, k] · [k, n], as in examples/matmul_shapes.rs.
SHAPES = [
    ("q projection", 1024, 256, 256, False, False),
    ("k/v projection", 1024, 256, 64, False, False),
    ("projection dW (x^T dy)", 256, 1024, 256, True, False),
    ("expert gate/up", 512, 256, 1368, False, False),
    ("expert down", 512, 1368, 256, False, False),
    ("expert dX (dh W1^T)", 512, 1368, 256, False, True),
    ("expert dh (dy W2^T)", 512, 256, 1368, False, True),
    ("expert dW1 (x^T dh)", 256, 512, 1368, True, False),
    ("expert dW2 (h^T dy)", 1368, 512, 256, True, False),
    ("head (h E^T)", 1024, 256, 4096, False, True),
    ("head dh (dl E)", 1024, 4096, 256, False, False),
    ("head dE (dl^T h)", 4096, 1024, 256, True, False),
    ("1024^3", 1024, 1024, 1024, False, False),
]

torch.set_num_threads(1)
for name, m, k, n, lhs_t, rhs_t in SHAPES:
    lhs = torch.randn(k, m).t() if lhs_t else torch.randn(m, k)
    rhs = torch.randn(n, k).t() if rhs_t else torch.randn(k, n)
    flops = 2 * m * k * n
    reps = max(3, int(5e9 / flops))
    lhs @ rhs
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            lhs @ rhs
        best = min(best, (time.perf_counter() - t) / reps)
    print(f"{name:<26} {f'{m}x{k}x{n}':>18} {flops / best / 1e9:10.1f}")
