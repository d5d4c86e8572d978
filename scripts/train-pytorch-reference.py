#!/usr/bin/env python3
"""PyTorch accuracy peer for `bitmix train` on CIFAR-10 (the official binary layout).

Trains the same ResNet as bitmix's model zoo (scripts/pytorch_resnet.py: option-A
shortcuts, He-normal convolutions) with the same recipe bitmix uses: per-channel normalization
with the training set's statistics, random 4-pixel pad-and-crop with zero padding and horizontal
flips, SGD with Nesterov momentum 0.9, weight decay on weights only (not BatchNorm or biases),
a per-iteration cosine schedule after a linear warm-up. It prints one line per epoch, so a recipe
that does badly in bitmix can be checked against an independent implementation.

  /usr/bin/python3 scripts/train-pytorch-reference.py --data DIR/cifar-10-batches-bin --epochs 15
"""
import argparse
import math
import pathlib
import time

import numpy as np
import torch

from pytorch_resnet import build_resnet


def load_cifar(directory, names):
    records = []
    for name in names:
        path = pathlib.Path(directory) / name
        if not path.is_file():
            raise SystemExit(f"{path}: missing (write the binary layout with make-cifar10-bin.sh)")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size % 3073 != 0:
            raise SystemExit(f"{directory}/{name}: {raw.size} bytes is not a multiple of 3073")
        records.append(raw.reshape(-1, 3073))
    raw = np.concatenate(records)
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="directory with data_batch_1..5.bin and test_batch.bin")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up epochs")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    x_train, y_train = load_cifar(a.data, [f"data_batch_{i}.bin" for i in range(1, 6)])
    x_test, y_test = load_cifar(a.data, ["test_batch.bin"])
    planes = x_train.reshape(-1, 3, 1024) / 255.0
    mean, std = planes.mean(axis=(0, 2)), planes.std(axis=(0, 2))

    def normalize(x):
        return torch.from_numpy(((x / 255.0 - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32))

    padded = np.pad(x_train, ((0, 0), (0, 0), (4, 4), (4, 4)))  # zero pixels, as bitmix and torchvision
    model = build_resnet(torch, 20, 3, 10, "A")
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    decay = [q for q in model.parameters() if q.dim() > 1]
    no_decay = [q for q in model.parameters() if q.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=a.lr, momentum=0.9, nesterov=True)
    n = len(y_train)
    steps_per_epoch = math.ceil(n / a.batch)
    total, warm = steps_per_epoch * a.epochs, int(a.warmup * steps_per_epoch)

    def lr_at(step):
        if step < warm:
            return a.lr * (step + 1) / warm
        return a.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    criterion = torch.nn.CrossEntropyLoss(label_smoothing=a.label_smoothing)
    x_test_t, y_test_t = normalize(x_test), torch.from_numpy(y_test)
    step = 0
    for epoch in range(1, a.epochs + 1):
        model.train()
        order = rng.permutation(n)
        start, correct, loss_sum = time.time(), 0, 0.0
        for i in range(steps_per_epoch):
            idx = order[i * a.batch:(i + 1) * a.batch]
            dy, dx = rng.integers(0, 9, len(idx)), rng.integers(0, 9, len(idx))
            flip = rng.random(len(idx)) < 0.5
            xb = np.stack([padded[j, :, y:y + 32, x:x + 32] for j, y, x in zip(idx, dy, dx)])
            xb[flip] = xb[flip][..., ::-1]
            x, y = normalize(xb), torch.from_numpy(y_train[idx])
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            out = model(x)
            loss = criterion(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            correct += (out.argmax(1) == y).sum().item()
            loss_sum += loss.item() * len(idx)
        model.eval()
        test_correct = 0
        with torch.no_grad():
            for i in range(0, len(y_test), 500):
                test_correct += (model(x_test_t[i:i + 500]).argmax(1) == y_test_t[i:i + 500]).sum().item()
        print(f"epoch {epoch} train_loss {loss_sum / n:.4f} train_acc {correct / n:.4f} "
              f"test_acc {test_correct / len(y_test):.4f} seconds {time.time() - start:.0f}", flush=True)


if __name__ == "__main__":
    main()
