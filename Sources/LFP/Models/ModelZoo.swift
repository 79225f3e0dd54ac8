import LFPTensor

/// The paper's models (and the benchmark models of REFERENCE.md), built with PyTorch's
/// default initialisation from a seed.
public enum ModelZoo {
    /// Names accepted by `make(_:)`.
    public static let names = ["mlp", "lenet", "vgg16", "vgg-like", "toy", "mlp3072", "lenet3x32", "lenet1x28",
                               "cifar-resnet", "resnet18", "resnet34", "resnet50", "vgg16-bn", "vit-tiny", "vit-small", "vit-base"]

    /// What a model is built for.
    public struct Configuration: Sendable {
        /// Input shape of one sample: `[C, H, W]` or `[features]`.
        public var inputShape: [Int]
        public var classes: Int
        public var activation: Activation = .relu
        /// Dropout after the hidden dense layers (the paper uses 0.5 for `mlp` and `lenet`).
        public var dropout: Float = 0
        /// Width multiplier for VGG models (1 = the paper's widths).
        public var width: Float = 1
        /// Hidden sizes of the `toy` model.
        public var hidden: [Int] = [32, 32]
        /// Standard deviation of Gaussian noise added (in training) before every Linear and
        /// Conv2d layer; 0 for none. The paper trains step networks with 0.1.
        public var noise: Float = 0
        /// ViT patch size (default 16, timm's `patch16` models).
        public var patch: Int = 16

        public init(inputShape: [Int], classes: Int, activation: Activation = .relu, dropout: Float = 0,
                    width: Float = 1, hidden: [Int] = [32, 32], noise: Float = 0, patch: Int = 16) {
            self.inputShape = inputShape
            self.classes = classes
            self.activation = activation
            self.dropout = dropout
            self.width = width
            self.hidden = hidden
            self.noise = noise
            self.patch = patch
        }
    }

    /// Builds a model by name.
    public static func make(_ name: String, _ config: Configuration, seed: UInt64) throws(ModelError) -> Sequential {
        var rng = SeededRandom(seed: seed)
        let act = Layer.activation(config.activation)
        let features = config.inputShape.reduce(1, *)
        func dense(_ sizes: [Int], dropout: Float) -> [Layer] {
            var layers: [Layer] = []
            for i in 0..<(sizes.count - 1) {
                layers.append(.linear(Linear(inFeatures: sizes[i], outFeatures: sizes[i + 1], rng: &rng)))
                if i < sizes.count - 2 {
                    layers.append(act)
                    if dropout > 0 { layers.append(.dropout(p: dropout)) }
                }
            }
            return layers
        }
        let model: Sequential
        switch name.lowercased() {
        case "vgg16-bn":
            guard config.inputShape.count == 3, config.inputShape[1] >= 32, config.inputShape[2] >= 32 else {
                throw .invalidConfiguration("vgg16-bn needs image input [C, H, W] of at least 32x32, got \(config.inputShape)")
            }
            guard config.activation == .relu, config.noise == 0 else { throw .invalidConfiguration("vgg16-bn is torchvision's: ReLU, no noise") }
            model = VGG.vgg16BN(inputChannels: config.inputShape[0], classes: config.classes, width: config.width,
                                dropout: config.dropout, seed: seed)
        case "vit-tiny", "vit-small", "vit-base":
            guard config.inputShape.count == 3, config.patch >= 1, config.inputShape[1] >= config.patch, config.inputShape[2] >= config.patch else {
                throw .invalidConfiguration("\(name) needs image input [C, H, W] of at least one \(config.patch)x\(config.patch) patch, got \(config.inputShape) (set the patch size)")
            }
            guard config.activation == .relu, config.dropout == 0, config.noise == 0 else {
                throw .invalidConfiguration("\(name) is timm's ViT: GELU, no dropout, no noise")
            }
            let size = VisionTransformer.sizes[name.lowercased()]!
            let dimension = max(size.heads, Int((Float(size.dimension) * config.width / Float(size.heads)).rounded()) * size.heads)
            model = VisionTransformer.make(inputShape: config.inputShape, patch: config.patch, dimension: dimension, depth: size.depth,
                                           heads: size.heads, classes: config.classes, seed: seed)
        case "cifar-resnet", "resnet18", "resnet34", "resnet50":
            guard config.inputShape.count == 3 else { throw .invalidConfiguration("\(name) needs image input [C, H, W], got \(config.inputShape)") }
            guard config.activation == .relu, config.dropout == 0, config.noise == 0 else {
                throw .invalidConfiguration("\(name) is torchvision's ResNet: ReLU, no dropout, no noise")
            }
            model = ResNet.named(name.lowercased(), inputChannels: config.inputShape[0], classes: config.classes, width: config.width, seed: seed)!
        case "mlp":
            // Paper A.6.1: 512-256-128-C.
            model = Sequential([.flatten] + dense([features, 512, 256, 128, config.classes], dropout: config.dropout))
        case "mlp3072":
            model = Sequential([.flatten] + dense([features, 512, 256, 128, config.classes], dropout: 0))
        case "toy":
            model = Sequential([.flatten] + dense([features] + config.hidden + [config.classes], dropout: config.dropout))
        case "lenet", "lenet3x32", "lenet1x28":
            guard config.inputShape.count == 3 else { throw .invalidConfiguration("lenet needs image input [C, H, W], got \(config.inputShape)") }
            let c = config.inputShape[0], h = config.inputShape[1], w = config.inputShape[2]
            let fh = ((h - 4) / 2 - 4) / 2, fw = ((w - 4) / 2 - 4) / 2
            guard fh > 0 && fw > 0 else { throw .invalidConfiguration("lenet needs images of at least 16x16, got \(h)x\(w)") }
            var layers: [Layer] = [
                .conv2d(Conv2d(inChannels: c, outChannels: 16, kernelSize: (5, 5), rng: &rng)), act, .maxPool2d(MaxPool2d(kernel: 2)),
                .conv2d(Conv2d(inChannels: 16, outChannels: 16, kernelSize: (5, 5), rng: &rng)), act, .maxPool2d(MaxPool2d(kernel: 2)),
                .flatten,
            ]
            layers += dense([16 * fh * fw, 120, 84, config.classes], dropout: name == "lenet" ? config.dropout : 0)
            model = Sequential(layers)
        case "vgg16", "vgg-like":
            guard config.inputShape.count == 3 else { throw .invalidConfiguration("\(name) needs image input [C, H, W], got \(config.inputShape)") }
            // VGG-16: 13 convolutions in five blocks; vgg-like: a small CIFAR-style VGG.
            let blocks: [[Int]] = name == "vgg16"
                ? [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
                : [[32, 32], [64, 64], [128, 128]]
            var channels = config.inputShape[0], h = config.inputShape[1], w = config.inputShape[2]
            var layers: [Layer] = []
            for block in blocks {
                for width in block {
                    let out = max(1, Int((Float(width) * config.width).rounded()))
                    layers.append(.conv2d(Conv2d(inChannels: channels, outChannels: out, kernelSize: (3, 3), padding: (1, 1), rng: &rng)))
                    layers.append(act)
                    channels = out
                }
                if h >= 2 && w >= 2 {
                    layers.append(.maxPool2d(MaxPool2d(kernel: 2)))
                    h /= 2; w /= 2
                }
            }
            layers.append(.flatten)
            let hidden = name == "vgg16" ? max(1, Int(4096 * config.width)) : max(1, Int(256 * config.width))
            layers += dense([channels * h * w, hidden, hidden, config.classes], dropout: config.dropout)
            model = Sequential(layers)
        default:
            throw .invalidConfiguration("unknown model '\(name)'; valid: \(names.joined(separator: ", "))")
        }
        var result = model
        if config.noise > 0 {
            result.layers = model.layers.flatMap { layer in
                layer.kind == .linear || layer.kind == .conv2d ? [.gaussianNoise(std: config.noise), layer] : [layer]
            }
        }
        _ = try result.outputShape(input: [1] + config.inputShape)
        return result
    }
}
