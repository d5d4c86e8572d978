#!/usr/bin/env python3
"""Exports small CNNs with Debian's PyTorch (python3-torch) for the ONNX import tests.

  make_torch_models.py OUT_DIR

For each model NAME it writes OUT_DIR/NAME.onnx, OUT_DIR/NAME.input.f32 (a batch of random
images, float32 little endian, NCHW) and OUT_DIR/NAME.logits.f32 (PyTorch's logits for them), and
OUT_DIR/models.txt lists "NAME N C H W CLASSES" per line. BatchNorm statistics and affine
parameters are randomized so that an importer that drops or misreads them fails the comparison.

Exits 77 (the skip code the tests declare) when PyTorch or ONNX is not installed.
"""
import os
import shutil
import sys

try:
    import torch
    import torch.nn as nn
    import onnx  # noqa: F401  (torch.onnx.export needs it)
except ImportError as e:  # pragma: no cover
    if len(sys.argv) > 1:
        shutil.rmtree(sys.argv[1], ignore_errors=True)
    print(f"make_torch_models.py: skipped, {e.name} is not installed (apt install python3-torch python3-onnx)")
    sys.exit(77)


def conv_bn(cin, cout, k, s=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Block(nn.Module):
    """A ResNet basic block; a 1x1 projection shortcut where the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(Block(8, 8, 1))
        self.layer2 = nn.Sequential(Block(8, 16, 2), Block(16, 16, 1))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


class Vgg(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn(1, 8, 3), conv_bn(8, 8, 3), nn.MaxPool2d(2), conv_bn(8, 16, 3),
                                      nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2))
        self.dropout = nn.Dropout(0.5)
        self.classifier = nn.Linear(16 * 3 * 3, 10)

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), -1)  # exported as Shape/Gather/Concat/Reshape, folded by the importer
        return self.classifier(self.dropout(x))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, 8, 3)
        self.a = conv_bn(8, 8, 3)
        self.b = conv_bn(8, 4, 1)
        self.c = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(8, 4, 1))
        self.mix = nn.Conv2d(16, 16, 1, 2, 0, bias=True)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.a(x), self.b(x), self.c(x)], 1)
        x = torch.relu(self.mix(x))
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(conv_bn(cin, hidden, 1, act=nn.ReLU6),
                                  conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                                  conv_bn(hidden, cout, 1, act=None))

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.use_residual else y


class MobileNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, 8, 3, 2, act=nn.ReLU6)
        self.blocks = nn.Sequential(InvertedResidual(8, 8, 1, 4), InvertedResidual(8, 16, 2, 4),
                                    InvertedResidual(16, 16, 1, 4))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(x.reshape(x.shape[0], -1))


# name -> (model, opset, keep BatchNorm nodes instead of letting the exporter fold them)
MODELS = {
    "resnet": (ResNet, 13, True),
    "vgg": (Vgg, 11, False),
    "branchy": (Branchy, 17, True),
    "mobilenet": (MobileNet, 13, True),
}


def randomize(model, gen):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.3, 0.3, generator=gen)


def main():
    out = sys.argv[1]
    shutil.rmtree(out, ignore_errors=True)  # no stale models from an earlier run
    os.makedirs(out)
    gen = torch.Generator().manual_seed(20261204)
    torch.manual_seed(1)
    lines = []
    for name, (make, opset, keep_bn) in MODELS.items():
        model = make()
        randomize(model, gen)
        model.eval()
        x = torch.rand(4, 1, 28, 28, generator=gen)
        with torch.no_grad():
            logits = model(x)
        mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
        torch.onnx.export(model, x, os.path.join(out, f"{name}.onnx"), opset_version=opset, training=mode,
                          do_constant_folding=not keep_bn, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
        x.numpy().astype("<f4").tofile(os.path.join(out, f"{name}.input.f32"))
        logits.numpy().astype("<f4").tofile(os.path.join(out, f"{name}.logits.f32"))
        lines.append(f"{name} 4 1 28 28 10")
    with open(os.path.join(out, "models.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"make_torch_models.py: wrote {len(lines)} models to {out}")


if __name__ == "__main__":
    main()
