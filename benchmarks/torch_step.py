"""Times PyTorch's gradient step and, where lfprop is installed, the reference implementation's LFP step
on the benchmark models of `lfp bench` (same layers, batch, random data and optimizer), alternating the
two step by step. Prints one JSON object per method with every timed step, for benchmarks/bench.sh to
merge with our own measurements. Needs torch (the `.reference-venv` of benchmarks/bench.sh); never a dependency
of the package.

    python benchmarks/torch_step.py --model lenet3x32 --batch 256 --steps 10 --threads 2
"""
import argparse
import json
import os
import sys
import time

import torch
from torch import nn


class ResNet(nn.Module):
    """torchvision's ResNet layout with BasicBlocks of any widths and either stem (the models of
    `lfp bench step --model cifar-resnet|resnet18|resnet18-224`). With lfprop installed the
    blocks are its `CustomBasicBlock` (torchvision's block with the residual add as a `Sum`
    module, which the reference's composite needs; the same arithmetic), else torchvision's."""

    def __init__(self, block, blocks, widths, stem, classes=10):
        super().__init__()
        c = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, c, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(3, c, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1, self.relu = nn.BatchNorm2d(c), nn.ReLU()
        stages = []
        for i, (n, w) in enumerate(zip(blocks, widths)):
            layers = []
            for b in range(n):
                stride = 2 if i > 0 and b == 0 else 1
                down = None
                if stride != 1 or c != w:
                    down = nn.Sequential(nn.Conv2d(c, w, 1, stride, bias=False), nn.BatchNorm2d(w))
                layers.append(block(c, w, stride=stride, downsample=down))
                c = w
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(c, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def basic_block():
    try:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import lfp_compat  # noqa: F401
        from lfprop.model.custom_resnet import CustomBasicBlock
        return CustomBasicBlock
    except ImportError:
        from torchvision.models.resnet import BasicBlock
        return BasicBlock


def make_model(name):
    if name == "cifar-resnet":
        return ResNet(basic_block(), [2, 2, 2, 2], [16, 32, 64, 128], "cifar"), (3, 32, 32)
    if name in ("resnet18", "resnet18-224"):
        size = 224 if name == "resnet18-224" else 32
        return ResNet(basic_block(), [2, 2, 2, 2], [64, 128, 256, 512], "imagenet"), (3, size, size)
    if name == "mlp3072":
        return nn.Sequential(nn.Flatten(), nn.Linear(3072, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                             nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)), (3, 32, 32)
    channels, size = (3, 32) if name == "lenet3x32" else (1, 28)
    side = ((size - 4) // 2 - 4) // 2
    return nn.Sequential(nn.Conv2d(channels, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * side * side, 120), nn.ReLU(),
                         nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)), (channels, size, size)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, choices=["mlp3072", "lenet3x32", "lenet1x28", "cifar-resnet", "resnet18", "resnet18-224"])
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)

    model, shape = make_model(args.model)
    x = torch.randn(args.batch, *shape)
    labels = torch.arange(args.batch) % 10
    grad_opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def gradient_step():
        grad_opt.zero_grad(set_to_none=True)
        loss_fn(model(x), labels).backward()
        grad_opt.step()

    methods = {"torch-gradient": gradient_step}
    try:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import lfp_compat  # noqa: F401  (lfprop 1.0.0 against lxt 2.1)
        from lfprop.propagation import propagator_lxt
        from lfprop.rewards import reward_functions as rewards

        lfp_model, _ = make_model(args.model)
        lfp_model.load_state_dict(model.state_dict())
        lfp_opt = torch.optim.SGD(lfp_model.parameters(), lr=1e-4, momentum=0.9)
        composite = propagator_lxt.LFPEpsilonComposite()
        reward_fn = rewards.SoftmaxLossReward(torch.device("cpu"))

        def reference_lfp_step():
            # The reference's training step (lfprop's examples): feedback, then p.grad = -feedback.
            lfp_opt.zero_grad(set_to_none=True)
            with composite.context(lfp_model) as modified:
                inp = x.detach().requires_grad_(True)
                out = modified(inp)
                reward = reward_fn(out, labels).detach()
                torch.autograd.grad((out,), (inp,), grad_outputs=(reward,))
            for param in lfp_model.parameters():
                param.grad = -param.feedback
            lfp_opt.step()

        methods["reference-lfp"] = reference_lfp_step
    except ImportError as error:
        print(f"torch_step.py: lfprop not importable ({error}); timing PyTorch's gradient step only", file=sys.stderr)

    times = {name: [] for name in methods}
    for i in range(args.warmup + args.steps):
        for name, step in methods.items():
            start = time.perf_counter()
            step()
            elapsed = (time.perf_counter() - start) * 1000
            if i >= args.warmup:
                times[name].append(elapsed)
    for name, values in times.items():
        print(json.dumps({"model": args.model, "batch": args.batch, "method": name, "times_ms": values,
                          "threads": args.threads, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
