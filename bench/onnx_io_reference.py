"""Reference timings for ONNX model I/O with Debian's python3-onnx (protobuf C++).

Usage: /usr/bin/python3 bench/onnx_io_reference.py [--repeat N] MODEL.onnx...

For each model prints, as one JSON object keyed by path, the size in MB and the
throughput in MB/s (best of N runs) of:
  load       onnx.load(path): read the file and parse it
  parse      ModelProto.ParseFromString on bytes already in memory
  serialize  ModelProto.SerializeToString
  save       onnx.save(model, path): serialize and write the file
"""

import argparse
import json
import os
import tempfile
import time

import onnx


def best_seconds(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(path, repeat):
    size_mb = os.path.getsize(path) / 1e6
    with open(path, "rb") as f:
        data = f.read()
    model = onnx.load(path)
    out_dir = tempfile.mkdtemp(prefix="onnx_io_reference_")
    out = os.path.join(out_dir, "saved.onnx")
    try:
        times = {
            "load": best_seconds(lambda: onnx.load(path), repeat),
            "parse": best_seconds(lambda: onnx.ModelProto().ParseFromString(data), repeat),
            "serialize": best_seconds(model.SerializeToString, repeat),
            "save": best_seconds(lambda: onnx.save(model, out), repeat),
        }
    finally:
        if os.path.exists(out):
            os.remove(out)
        os.rmdir(out_dir)
    result = {"size_mb": round(size_mb, 1)}
    for name, seconds in times.items():
        result[name + "_mbps"] = round(size_mb / seconds, 1)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    print(json.dumps({path: measure(path, args.repeat) for path in args.models}))


if __name__ == "__main__":
    main()
