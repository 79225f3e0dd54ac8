"""Surrogate-gradient baselines for the step LeNet (docs/MATH-ACTIVATIONS.md section 8.4).

Trains the `lfp train --model lenet --activation step` network on Fashion-MNIST with PyTorch and
gradient descent through a surrogate derivative of the step, to measure how far LFP's step recipe
is from what gradient-based training of the same network reaches. It is a measurement tool, not
part of the package: it needs PyTorch (the reference venv, `bash ../shared/reference/setup.sh
.reference-venv`).

    .reference-venv/bin/python benchmarks/step-surrogate.py SURROGATE [K] [SEED]

SURROGATE, the derivative used for step(z) = [z > 0] in the backward pass:
  ste        1 for |z| < 1, else 0 (straight-through estimator)
  fastsig    1 / (1 + |z|)^2
  scaled     0.5 / (|z| + K rms_n(z))                    what scaled-epsilon:K with centred inputs gives
  threshold  0.5 / (|z| + K rms_n + z^2 / (K rms_n))     what threshold-epsilon:K with centred inputs gives
Environment: WEIGHTED=1 multiplies every gradient by |w| before the step, as LFP's parameter update
does (F(W) = |W| * S^T A); LR (default 0.01) is SGD's rate (momentum 0.9, cosine over the run, batch
32, 5 epochs: the step recipe's settings); DATA (default /usr/share/datasets/fashion-mnist).
Prints the test accuracy after every epoch. One thread, about 80 s per run on this machine.
"""
import gzip
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)
DATA = os.environ.get("DATA", "/usr/share/datasets/fashion-mnist")


def idx(stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(DATA, name)
        if os.path.exists(path):
            raw = gzip.open(path).read() if name.endswith(".gz") else open(path, "rb").read()
            dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(raw[3])]
            return np.frombuffer(raw, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)
    sys.exit(f"step-surrogate.py: {stem}(.gz) not found in {DATA}")


surrogate = sys.argv[1] if len(sys.argv) > 1 else "threshold"
if surrogate not in ("ste", "fastsig", "scaled", "threshold"):
    sys.exit(f"step-surrogate.py: unknown surrogate '{surrogate}' (ste, fastsig, scaled, threshold)")
k = float(sys.argv[2]) if len(sys.argv) > 2 else 0.25
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
weighted = bool(os.environ.get("WEIGHTED"))
lr = float(os.environ.get("LR", "0.01"))

x_train = idx("train-images-idx3-ubyte").astype(np.float32) / 255
x_test = idx("t10k-images-idx3-ubyte").astype(np.float32) / 255
mean, std = x_train.mean(), x_train.std()   # per-channel statistics of the training set, as lfp train
x_train = torch.tensor((x_train - mean) / std)[:, None]
x_test = torch.tensor((x_test - mean) / std)[:, None]
y_train = torch.tensor(idx("train-labels-idx1-ubyte").astype(np.int64))
y_test = torch.tensor(idx("t10k-labels-idx1-ubyte").astype(np.int64))


class Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        if surrogate == "ste":
            return grad * (z.abs() < 1).to(z.dtype)
        if surrogate == "fastsig":
            return grad / (1 + z.abs()) ** 2
        # Per sample: the root mean square of the layer's pre-activations.
        eps = k * z.flatten(1).pow(2).mean(1).sqrt().view(-1, *([1] * (z.dim() - 1)))
        margin = eps + (z * z / eps if surrogate == "threshold" else 0)
        return grad * 0.5 / (z.abs() + margin)


class LeNet(nn.Module):
    """The layout of `lfp train --model lenet` for 1x28x28 inputs."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 5), nn.Conv2d(16, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(256, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(Step.apply(self.conv1(x)), 2)
        x = F.max_pool2d(Step.apply(self.conv2(x)), 2).flatten(1)
        return self.fc3(Step.apply(self.fc2(Step.apply(self.fc1(x)))))


torch.manual_seed(seed)
net = LeNet()
epochs, batch = 5, 32
optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * math.ceil(len(y_train) / batch))
start = time.time()
for epoch in range(1, epochs + 1):
    order = torch.randperm(len(y_train))
    for i in range(0, len(y_train), batch):
        j = order[i:i + batch]
        optimizer.zero_grad()
        F.cross_entropy(net(x_train[j]), y_train[j]).backward()
        if weighted:
            for p in net.parameters():
                p.grad.mul_(p.detach().abs())
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        accuracy = (net(x_test).argmax(1) == y_test).float().mean().item()
    print(f"{surrogate} k={k} seed={seed} weighted={int(weighted)} lr={lr} epoch {epoch}: {accuracy:.4f} ({time.time() - start:.0f} s)",
          flush=True)
