"""A timm Vision Transformer's state dict, an input batch and its eval-mode logits: the fixture for
loading timm weights without renaming (ModelConformanceTests). Needs timm in the venv
(`.reference-venv/bin/pip install timm`; the shared setup script does not install it).

    .reference-venv/bin/python scripts/reference/timm_vit.py tiny Tests/LFPTests/Conformance/models/timm_vit.safetensors
    .reference-venv/bin/python scripts/reference/timm_vit.py vit_tiny_patch16_224 DIR/vit_tiny_patch16_224.safetensors

`tiny` is timm's own `VisionTransformer` class at a committed size (image 8x8x3, patch 4, width 8,
depth 2, 2 heads, MLP ratio 4, qkv bias, 10 classes: 11 kB). A timm model name builds that model
(`timm.create_model(name, pretrained=False)`, 1000 classes, input 224x224) for the opt-in test
(`LFP_TIMM_DIR=DIR swift test --filter timm`; 23 MB for vit_tiny, not committed). Weights: timm's
initialisation (seed 0) with the LayerNorm affine parameters, the class token and the positions
randomised, so that none of them is the identity or zero.
Tensors: every state_dict entry under its own name, `input` [2, 3, H, W], `logits` [2, classes];
metadata: the timm version and the model's configuration.
"""
import sys

import timm
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

name, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
if name == "tiny":
    model = VisionTransformer(img_size=8, patch_size=4, in_chans=3, num_classes=10, embed_dim=8, depth=2,
                              num_heads=2, mlp_ratio=4.0, qkv_bias=True)
    size = 8
else:
    model = timm.create_model(name, pretrained=False)
    size = model.patch_embed.img_size[0]
with torch.no_grad():
    for key, p in model.named_parameters():
        if ".norm" in key or key.startswith("norm."):
            p.uniform_(-1.5, 1.5) if key.endswith("bias") else p.uniform_(0.5, 1.5)
        elif key in ("cls_token", "pos_embed"):
            p.normal_(0, 0.5)
        elif key.startswith("head.") and name == "tiny":
            p.normal_(0, 0.3)
model.eval()
x = torch.randn(2, 3, size, size)
with torch.no_grad():
    logits = model(x)
tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
tensors["input"], tensors["logits"] = x, logits
config = f"patch {model.patch_embed.patch_size[0]}, width {model.embed_dim}, depth {len(model.blocks)}, heads {model.blocks[0].attn.num_heads}"
save_file(tensors, out, metadata={"timm": timm.__version__, "model": name, "config": config})
print(name, config, sorted(tensors)[:6], "...", logits.abs().max().item())
