#!/usr/bin/env python3
"""PyTorch peer for bitmix's ResNet training benchmark (benchmarks/nn).

Builds the same CIFAR ResNet as bitmix's model zoo (He et al. 2016, option-A shortcuts by
default: identity with stride-2 subsampling and zero-padded channels), then measures training
throughput (forward + backward + SGD step with momentum and weight decay, batch B) and
inference throughput (eval mode, no_grad), in images per second, with torch.set_num_threads(T).

Prints one JSON object on the last line of stdout, e.g.
  {"torch": "1.13.0", "threads": 2, "train_images_per_second": 412.3, "infer_images_per_second": 1500.1}
Exit code 3 when torch cannot be imported, so callers can skip with a message.
"""
import argparse
import json
import sys
import time

from pytorch_resnet import build_resnet


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--shortcut", choices=("A", "B"), default="A")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("--seconds", type=float, default=10.0, help="minimum timed seconds per phase")
    parser.add_argument("--min-iters", type=int, default=5)
    parser.add_argument("--phase", choices=("both", "train", "infer"), default="both")
    args = parser.parse_args()

    try:
        import torch
    except ImportError as exc:  # the caller prints the skip message
        print(f"torch is not importable: {exc}", file=sys.stderr)
        sys.exit(3)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_resnet(torch, args.depth, args.channels, args.classes, args.shortcut)
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    y = torch.randint(0, args.classes, (args.batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    def timed(step):
        for _ in range(args.warmup):
            step()
        iters = 0
        start = time.perf_counter()
        while True:
            step()
            iters += 1
            elapsed = time.perf_counter() - start
            if iters >= args.min_iters and elapsed >= args.seconds:
                return iters * args.batch / elapsed

    result = {"torch": torch.__version__, "threads": args.threads, "batch": args.batch, "depth": args.depth}
    if args.phase in ("both", "train"):
        model.train()
        result["train_images_per_second"] = round(timed(train_step), 2)
    if args.phase in ("both", "infer"):
        model.eval()

        def infer_step():
            with torch.no_grad():
                model(x)

        result["infer_images_per_second"] = round(timed(infer_step), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
