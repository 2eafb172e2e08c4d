"""numpy anchor for bench/gemm_bench.ts: median seconds of float32 `a @ b` per shape.
Usage: gemm_numpy.py REPS M,N,K... ; prints JSON {"blas": path, "seconds": {"MxNxK": median wall seconds},
"cpu_seconds": {"MxNxK": median process CPU seconds}}.
Thread count comes from OPENBLAS_NUM_THREADS, set by the caller."""
import json
import os
import sys
import time

import numpy as np

reps = int(sys.argv[1])
rng = np.random.default_rng(0)
seconds = {}
cpu_seconds = {}
for shape in sys.argv[2:]:
    m, n, k = (int(x) for x in shape.split(","))
    a = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (k, n)).astype(np.float32)
    c = a @ b  # warm-up
    times, cpu_times = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    seconds[f"{m}x{n}x{k}"] = sorted(times)[len(times) // 2]
    cpu_seconds[f"{m}x{n}x{k}"] = sorted(cpu_times)[len(cpu_times) // 2]
# Debian's numpy links libblas.so.3, which update-alternatives points at the reference BLAS or OpenBLAS.
blas = os.path.realpath("/etc/alternatives/libblas.so.3-x86_64-linux-gnu")
print(json.dumps({"blas": blas, "seconds": seconds, "cpu_seconds": cpu_seconds}))
