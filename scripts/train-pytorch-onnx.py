#!/usr/bin/env python3
"""Trains one of the ONNX test CNNs (tests/onnx/make_torch_models.py) in PyTorch on Fashion-MNIST
and exports it to ONNX for `bitmix import`, with the normalization as metadata properties.

  /usr/bin/python3 scripts/train-pytorch-onnx.py --model resnet --epochs 2 --out resnet.onnx

Prints PyTorch's test accuracy, which `bitmix train --eval-only --init` of the imported
checkpoint reproduces (the float graph computes what PyTorch computes).
"""
import argparse
import gzip
import pathlib
import sys

import numpy as np
import onnx
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "onnx"))
import make_torch_models  # noqa: E402

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training pixels in [0, 1]


def idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet", choices=sorted(make_torch_models.MODELS))
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    d = pathlib.Path(a.data)
    norm = lambda x: (torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1) - MEAN) / STD  # noqa: E731
    xtr, ytr = norm(idx(d / "train-images-idx3-ubyte.gz")), torch.from_numpy(idx(d / "train-labels-idx1-ubyte.gz").astype(np.int64))
    xte, yte = norm(idx(d / "t10k-images-idx3-ubyte.gz")), torch.from_numpy(idx(d / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    make, opset, keep_bn = make_torch_models.MODELS[a.model]
    model = make()
    steps = a.epochs * ((len(xtr) + a.batch - 1) // a.batch)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=steps, pct_start=0.1)
    for epoch in range(a.epochs):
        model.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), a.batch):
            idxs = perm[i:i + a.batch]
            loss = torch.nn.functional.cross_entropy(model(xtr[idxs]), ytr[idxs])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum()) for i in range(0, len(xte), 1000))
        print(f"epoch {epoch + 1}: test accuracy {100.0 * correct / len(xte):.2f}%", flush=True)
    mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(model, xte[:1], a.out, opset_version=opset, training=mode, do_constant_folding=not keep_bn,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    m = onnx.load(a.out)
    for key, value in (("bitmix.mean", f"{MEAN}"), ("bitmix.std", f"{STD}"),
                       ("bitmix.class_names", "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot")):
        prop = m.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(m, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
