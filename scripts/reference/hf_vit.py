"""A tiny Hugging Face ViT (`ViTForImageClassification`) with its own state-dict names, an input
batch and its eval-mode logits: the fixture for loading Hugging Face ViT weights
(`Checkpoint` maps HF's names onto timm's layout; ModelConformanceTests).

    .reference-venv/bin/python scripts/reference/hf_vit.py Tests/LFPTests/Conformance/models/hf_vit.safetensors

Config: image 8x8x3, patch 4, hidden 8, 2 layers, 2 heads, MLP 32, LayerNorm eps 1e-6, exact GELU,
qkv bias, 10 labels; LayerNorm weights and biases, the class token and the positions randomised.
Tensors: the state dict under HF's names (transformers version in the metadata), `input` [2, 3, 8, 8],
`logits` [2, 10].
"""
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import ViTConfig, ViTForImageClassification

torch.manual_seed(3)
config = ViTConfig(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=8,
                   patch_size=4, num_channels=3, num_labels=10, layer_norm_eps=1e-6, hidden_act="gelu",
                   qkv_bias=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
model = ViTForImageClassification(config).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if "layernorm" in name:
            p.uniform_(-1.5, 1.5)
        elif name.endswith("cls_token") or name.endswith("position_embeddings"):
            p.normal_(0, 0.5)
        else:
            p.normal_(0, 0.3)
x = torch.randn(2, 3, 8, 8)
with torch.no_grad():
    logits = model(pixel_values=x).logits
tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
tensors["input"], tensors["logits"] = x, logits
save_file(tensors, sys.argv[1], metadata={"transformers": transformers.__version__})
print(sorted(tensors))
