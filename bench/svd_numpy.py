"""numpy reference for bench/svd_bench.ts: time numpy.linalg.svd(full_matrices=False)
of a .npy matrix and print JSON {seconds, optimal: {rank: relative Frobenius error of
the optimal rank-k truncation}}. Usage: svd_numpy.py MATRIX.npy RANK..."""
import json
import sys
import time

import numpy as np

a = np.load(sys.argv[1])
t0 = time.perf_counter()
s = np.linalg.svd(a, full_matrices=False, compute_uv=True)[1]
seconds = time.perf_counter() - t0
energy = np.cumsum((s.astype(np.float64) ** 2)[::-1])[::-1]  # energy[k] = sum_{i>=k} s_i^2
total = float((a.astype(np.float64) ** 2).sum())
optimal = {r: float(np.sqrt(energy[int(r)] / total)) for r in sys.argv[2:]}
print(json.dumps({"seconds": seconds, "optimal": optimal}))
