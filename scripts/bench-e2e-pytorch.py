#!/usr/bin/env python3
"""PyTorch peer for bitmix's end-to-end inference benchmark (scripts/bench-e2e.sh).

Measures the latency of the CIFAR ResNet that scripts/pytorch_resnet.py defines (the same
architecture as bitmix's model zoo, option-A shortcuts) in evaluation mode, fp32 and int8, at
the given batch sizes and thread counts (torch.set_num_threads). int8 is FX graph mode
post-training quantization with the engine's default qconfig mapping (per-channel weights for
onednn), calibrated on random batches: the conv+BN+ReLU and add+ReLU patterns become quantized
ops, the option-A shortcut (strided slice and channel padding) runs in float between a
dequantize and a quantize, as FX leaves it.

Prints one JSON object per measurement:
  {"impl": "pytorch-int8", "engine": "onednn", "batch": 1, "threads": 1, "median_us": 2480.1, "mean_us": 2511.0,
   "median_cpu_us": 2470.3, "runs": 800}
(median_cpu_us: process CPU time, a steadier measure of the work than wall time on a busy
machine when one thread is used).
Exit code 3 when torch cannot be imported, so callers can skip with a message.
"""
import argparse
import json
import statistics
import sys
import time

from pytorch_resnet import build_resnet


def measure(torch, model, x, seconds, min_runs, warmup):
    with torch.no_grad():
        for _ in range(warmup):
            model(x)
        times, cpu = [], []
        start = time.perf_counter()
        while len(times) < min_runs or time.perf_counter() - start < seconds:
            t0, c0 = time.perf_counter(), time.process_time()
            model(x)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return statistics.median(times) * 1e6, statistics.fmean(times) * 1e6, statistics.median(cpu) * 1e6, len(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--engine", default="onednn", help="quantized engine (onednn, qnnpack, fbgemm, x86)")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum measuring time per case")
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--impls", default="fp32,int8")
    args = parser.parse_args()

    try:
        import torch
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    except ImportError as exc:  # the caller prints the skip message
        print(f"torch is not importable: {exc}", file=sys.stderr)
        sys.exit(3)

    if args.engine not in torch.backends.quantized.supported_engines:
        print(f"quantized engine {args.engine} not in {torch.backends.quantized.supported_engines}", file=sys.stderr)
        sys.exit(3)
    torch.backends.quantized.engine = args.engine
    torch.manual_seed(0)
    fp32 = build_resnet(torch, args.depth, 3, 10, "A").eval()
    models = {}
    if "fp32" in args.impls:
        models["pytorch-fp32"] = fp32
    if "int8" in args.impls:
        example = torch.randn(1, 3, 32, 32)
        prepared = prepare_fx(build_resnet(torch, args.depth, 3, 10, "A").eval(),
                              get_default_qconfig_mapping(args.engine), example_inputs=(example,))
        with torch.no_grad():
            for _ in range(8):
                prepared(torch.randn(16, 3, 32, 32))
        models["pytorch-int8"] = convert_fx(prepared)

    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for batch in [int(b) for b in args.batches.split(",")]:
            x = torch.randn(batch, 3, 32, 32)
            for name, model in models.items():
                median, mean, cpu, runs = measure(torch, model, x, args.seconds, args.min_runs, args.warmup)
                print(json.dumps({"impl": name, "engine": args.engine if "int8" in name else "default",
                                  "torch": torch.__version__, "batch": batch, "threads": threads,
                                  "median_us": round(median, 1), "mean_us": round(mean, 1),
                                  "median_cpu_us": round(cpu, 1), "runs": runs}),
                      flush=True)


if __name__ == "__main__":
    main()
