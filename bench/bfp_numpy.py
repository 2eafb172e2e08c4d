"""numpy reference for bench/bfp_bench.ts: the same BFP formula as ir/bfp.ts
(floor exponent rule, nearest-even, symmetric clamp, exponent range [-bias, bias],
all-zero blocks at -bias), vectorized. Quantizes a float32 .npy vector cut into
rows of LENGTH and blocks of BLOCK (0 = one block per row; BLOCK must divide
LENGTH), writes OUT_mantissas.npy (int8/int16) and OUT_exponents.npy (int16),
and prints JSON {seconds, megabytesPerSecond, cpuSeconds} (best of REPEATS, loading excluded).
Usage: bfp_numpy.py INPUT.npy L E LENGTH BLOCK OUT REPEATS"""
import json
import sys
import time

import numpy as np

path, L, E, length, block, out, repeats = sys.argv[1:8]
L, E, length, block, repeats = int(L), int(E), int(length), int(block), int(repeats)
x = np.load(path)
block = block or length
assert x.dtype == np.float32 and x.size % length == 0 and length % block == 0
bias = 2 ** (E - 1) - 1
max_m = 2 ** (L - 1) - 1


def quantize(x):
    xb = x.reshape(-1, block)
    amax = np.abs(xb).max(axis=1)
    e = np.frexp(amax)[1].astype(np.int16) - 1  # amax = f * 2^k, f in [0.5, 1): floor(log2) = k - 1, exact
    e = np.where(amax == 0, -bias, np.clip(e, -bias, bias)).astype(np.int16)
    scale = np.ldexp(np.float32(1), (L - 2) - e.astype(np.int32)).astype(np.float32)  # exact powers of two
    m = np.rint(xb * scale[:, None])  # the float32 product is exact; rint rounds half to even
    np.clip(m, -max_m, max_m, out=m)
    return e, m.astype(np.int8 if L <= 8 else np.int16).reshape(-1)


best = best_cpu = float("inf")
for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    e, m = quantize(x)
    best = min(best, time.perf_counter() - t0)
    best_cpu = min(best_cpu, time.process_time() - c0)
np.save(out + "_mantissas.npy", m)
np.save(out + "_exponents.npy", e)
print(json.dumps({"seconds": best, "megabytesPerSecond": x.nbytes / 1e6 / best, "cpuSeconds": best_cpu}))
