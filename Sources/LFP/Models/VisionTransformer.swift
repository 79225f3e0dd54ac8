import LFPTensor

/// Vision Transformers in timm's layout and names (`patch_embed.proj.weight`, `cls_token`,
/// `pos_embed`, `blocks.0.norm1.weight`, `blocks.0.attn.qkv.weight`, `blocks.0.mlp.fc1.weight`,
/// `norm.weight`, `head.weight`): pre-norm blocks `x + attn(norm1(x))`, `x + mlp(norm2(x))`,
/// exact GELU, LayerNorm eps 1e-6, class-token pooling. A timm `state_dict` saved as
/// safetensors loads without renaming (Hugging Face's ViT: docs/MATH-MODELS.md has the name map).
public enum VisionTransformer {
    /// A ViT for `[C, H, W]` images cut into `patch x patch` patches.
    /// Initialisation as timm's: Linear weights N(0, 0.02) truncated at 2 std, biases 0,
    /// class token N(0, 1e-6), positions N(0, 0.02); the patch convolution PyTorch's default.
    public static func make(inputShape: [Int], patch: Int, dimension: Int, depth: Int, heads: Int, mlpRatio: Int = 4,
                            classes: Int, seed: UInt64) -> Sequential {
        precondition(inputShape.count == 3 && inputShape[1] >= patch && inputShape[2] >= patch, "ViT needs [C, H, W] of at least one patch")
        var rng = SeededRandom(seed: seed)
        func linear(_ i: Int, _ o: Int) -> Linear {
            var w = Tensor(shape: [o, i])
            for k in 0..<w.count {
                var v: Float
                repeat { v = rng.normal() } while abs(v) > 2
                w.storage[k] = 0.02 * v
            }
            return Linear(weight: w, bias: Tensor(shape: [o]))
        }
        let patches = (inputShape[1] / patch) * (inputShape[2] / patch)
        var blocks: [(String, Layer)] = []
        for b in 0..<depth {
            var attention = MultiheadAttention(dimension: dimension, heads: heads, rng: &rng)
            attention.qkv = linear(dimension, 3 * dimension)
            attention.proj = linear(dimension, dimension)
            let attend = Residual(main: Sequential(named: [("norm1", .layerNorm(LayerNorm(features: dimension))), ("attn", .attention(attention))]),
                                  activation: nil, splitsFeedback: false)
            let mlp = Residual(main: Sequential(named: [("norm2", .layerNorm(LayerNorm(features: dimension))),
                                                        ("mlp.fc1", .linear(linear(dimension, mlpRatio * dimension))),
                                                        ("mlp.act", .activation(.gelu)),
                                                        ("mlp.fc2", .linear(linear(mlpRatio * dimension, dimension)))]),
                               activation: nil, splitsFeedback: false)
            blocks.append(("\(b)", .sequential(Sequential(named: [("", .residual(attend)), ("", .residual(mlp))]))))
        }
        let embed = Conv2d(inChannels: inputShape[0], outChannels: dimension, kernelSize: (patch, patch), stride: (patch, patch), rng: &rng)
        return Sequential(named: [
            ("patch_embed.proj", .conv2d(embed)),
            ("", .tokens(TokenEmbedding(dimension: dimension, patches: patches, rng: &rng))),
            ("blocks", .sequential(Sequential(named: blocks))),
            ("norm", .layerNorm(LayerNorm(features: dimension))),
            ("", .classToken),
            ("head", .linear(linear(dimension, classes))),
        ])
    }

    /// The zoo's ViTs by name: (width, depth, heads) of timm's `vit_tiny/small/base_patch16`.
    static let sizes: [String: (dimension: Int, depth: Int, heads: Int)] = [
        "vit-tiny": (192, 12, 3), "vit-small": (384, 12, 6), "vit-base": (768, 12, 12),
    ]
}
