"""The CIFAR ResNet of bitmix's model zoo, in PyTorch, for the PyTorch peers under scripts/.

He et al. 2016: a 3x3 stem of 16 channels, three stages of (depth - 2) / 6 basic blocks with
16, 32 and 64 channels, global average pooling and a linear classifier. Shortcut "A" (bitmix's
default) is the identity with stride-2 subsampling and zero-padded channels; "B" is a 1x1
projection with BatchNorm. One definition shared by the throughput benchmark, the inference
benchmark and the accuracy reference, so all three measure the same network.

torch is passed in rather than imported here so the callers can report a missing torch with
their own exit code.
"""


def build_resnet(torch, depth, in_channels, num_classes, shortcut):
    nn = torch.nn
    F = torch.nn.functional
    blocks_per_stage = (depth - 2) // 6

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.projection = None
            self.pad = 0
            self.stride = stride
            if stride != 1 or cin != cout:
                if shortcut == "B":
                    self.projection = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                else:
                    self.pad = cout - cin

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.projection is not None:
                sc = self.projection(x)
            elif self.stride != 1 or self.pad:
                sc = x[:, :, :: self.stride, :: self.stride]
                lo = self.pad // 2
                sc = F.pad(sc, (0, 0, 0, 0, lo, self.pad - lo))
            else:
                sc = x
            return F.relu(out + sc)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            layers = []
            cin = 16
            for stage, cout in enumerate((16, 32, 64)):
                blocks = []
                for b in range(blocks_per_stage):
                    stride = 2 if (stage > 0 and b == 0) else 1
                    blocks.append(BasicBlock(cin, cout, stride))
                    cin = cout
                layers.append(nn.Sequential(*blocks))
            self.layer1, self.layer2, self.layer3 = layers
            self.fc = nn.Linear(64, num_classes)

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
            return self.fc(x)

    return ResNet()
