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


class ViT(nn.Module):
    """timm's VisionTransformer layout (pre-norm blocks, fused qkv, exact GELU, LayerNorm eps 1e-6,
    class token, learned positions), the model of `lfp bench step --model vit-tiny`."""

    def __init__(self, dim=192, depth=12, heads=3, patch=16, image=224, classes=10):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        tokens = (image // patch) ** 2 + 1
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 1e-6)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            block = nn.Module()
            block.norm1, block.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
            block.qkv, block.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            block.fc1, block.act, block.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
            self.blocks.append(block)
        self.norm, self.head = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, classes)

    def attention(self, b, x):
        n, t, d = x.shape
        q, k, v = b.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1)
        return b.proj((a @ v).transpose(1, 2).reshape(n, t, d))

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for b in self.blocks:
            x = x + self.attention(b, b.norm1(x))
            x = x + b.fc2(b.act(b.fc1(b.norm2(x))))
        return self.head(self.norm(x)[:, 0])


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
    if name == "vit-tiny":
        return ViT(), (3, 224, 224)
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
    p.add_argument("--model", required=True, choices=["mlp3072", "lenet3x32", "lenet1x28", "cifar-resnet", "resnet18", "resnet18-224", "vit-tiny"])
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
        from lfprop.propagation import propagator_lxt, propagator_vit
        from lfprop.rewards import reward_functions as rewards

        lfp_model, _ = make_model(args.model)
        lfp_model.load_state_dict(model.state_dict())
        lfp_opt = torch.optim.SGD(lfp_model.parameters(), lr=1e-4, momentum=0.9)
        if args.model.startswith("vit"):
            # The reference's ViT composite (epsilon 1). Its function rules (add, matmul, softmax,
            # div) need a traced graph that lfprop discards (scripts/reference/VIT-NOTES.md, a):
            # without them the feedback is bitwise the same and no tracer is needed.
            composite = propagator_vit.LFPEpsilonComposite()
            for key in [k for k in composite.layer_map if getattr(k, "__name__", "") in ("add", "truediv", "matmul", "softmax")]:
                del composite.layer_map[key]
        else:
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
                # (a ViT's class token and positions get no feedback in the reference)
                feedback = getattr(param, "feedback", None)
                param.grad = None if feedback is None else -feedback
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
