"""numpy anchors for bench/svd_bench.ts, timed in this process (run it with
OPENBLAS_NUM_THREADS=1, OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset).

Usage: svd_numpy.py MATRIX.npy REPEATS TASK... where TASK is
  rsvd:K   randomized SVD, the same algorithm as passes/linalg.ts randomizedSvd:
           Gaussian sketch with K+10 columns, 2 power iterations each
           re-orthonormalized by QR, QR of A^T Q, SVD of the small R (float32
           like our input);
  svd      numpy.linalg.svd(full_matrices=False) in float64 (the exact reference);
  gram     the small side's Gram matrix in float64, numpy.linalg.eigh, and the
           other side's vectors A^T U / s (the same algorithm as gramSpectrum).
Prints JSON {blas, threads, results: {TASK: {seconds: [...], s: [...]}}}, `s`
being the singular values found (descending)."""
import json
import os
import sys
import time

import numpy as np


def blas_library():
    with open("/proc/self/maps") as maps:
        libs = {line.split()[-1] for line in maps if "blas" in line.lower() or "lapack" in line.lower()}
    return sorted(os.path.basename(x) for x in libs)


def rsvd(a, k, oversample=10, iterations=2, seed=1):
    m, n = a.shape
    l = min(min(m, n), k + oversample)
    omega = np.random.default_rng(seed).standard_normal((n, l), dtype=np.float32)
    q, _ = np.linalg.qr(a @ omega)
    for _ in range(iterations):
        z, _ = np.linalg.qr(a.T @ q)
        q, _ = np.linalg.qr(a @ z)
    q2, r = np.linalg.qr(a.T @ q)
    ur, s, vrt = np.linalg.svd(r)
    u = q @ vrt.T[:, :k]
    vt = (q2 @ ur[:, :k]).T
    return u, s[:k], vt


def gram(a):
    a = a.astype(np.float64)
    wide = a.shape[0] <= a.shape[1]
    g = a @ a.T if wide else a.T @ a
    values, vectors = np.linalg.eigh(g)
    # Descending, contiguous (a reversed view would send the products below off BLAS).
    values, vectors = values[::-1], np.ascontiguousarray(vectors[:, ::-1])
    s = np.sqrt(np.maximum(values, 0))
    other = (vectors.T @ a if wide else vectors.T @ a.T) / np.where(s > 0, s, 1)[:, None]
    return vectors, s, other


def run(task, a):
    if task.startswith("rsvd:"):
        return rsvd(a, int(task[5:]))[1]
    if task == "svd":
        return np.linalg.svd(a.astype(np.float64), full_matrices=False)[1]
    if task == "gram":
        return gram(a)[1]
    raise SystemExit(f"svd_numpy.py: unknown task {task!r} (rsvd:K, svd or gram)")


a = np.load(sys.argv[1])
repeats = int(sys.argv[2])
results = {}
for task in sys.argv[3:]:
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        s = run(task, a)
        seconds.append(time.perf_counter() - t0)
    results[task] = {"seconds": seconds, "s": [float(x) for x in s]}
threads = os.environ.get("OPENBLAS_NUM_THREADS")
print(json.dumps({"blas": blas_library(), "threads": threads, "results": results}))
