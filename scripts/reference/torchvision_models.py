"""A torchvision model's (ResNet, VGG-16-BN) state dict, an input batch and its eval-mode logits, for the
opt-in test that loading torchvision weights gives torchvision's outputs (ModelConformanceTests,
`LFP_TORCHVISION_DIR=DIR swift test --filter torchvision`, DIR holding NAME.safetensors).

    .reference-venv/bin/python scripts/reference/torchvision_models.py resnet18 DIR/resnet18.safetensors

The file (47 MB for resnet18) is not committed. Weights: torchvision's initialisation (seed 0) with
BatchNorm affine parameters and running statistics randomised, so that eval mode is not the identity.
Tensors: every state_dict entry under its own name, `input` [2, 3, 64, 64], `logits` [2, 1000].
"""
import sys

import torch
import torchvision
from safetensors.torch import save_file

name, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = getattr(torchvision.models, name)(weights=None)
with torch.no_grad():
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.2, 0.2)
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
model.eval()
x = torch.randn(2, 3, 64, 64)
with torch.no_grad():
    logits = model(x)
tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
tensors["input"] = x
tensors["logits"] = logits
save_file(tensors, out)
print(f"wrote {len(tensors)} tensors to {out}; max |logit| {logits.abs().max().item():.4f}")
