import LFPTensor

/// torchvision's ResNets (`resnet18/34/50`) and a CIFAR-sized variant, with torchvision's
/// parameter names (`conv1.weight`, `layer1.0.bn1.running_mean`, `layer2.0.downsample.0.weight`,
/// `fc.bias`), so a torchvision `state_dict` saved as safetensors loads without renaming.
public enum ResNet {
    /// The residual block kind.
    public enum Block: Sendable {
        /// Two 3x3 convolutions (ResNet-18/34); expansion 1.
        case basic
        /// 1x1, 3x3 (carrying the stride, torchvision's "v1.5"), 1x1 convolutions; expansion 4.
        case bottleneck

        var expansion: Int { self == .basic ? 1 : 4 }
    }

    /// The layers before the residual stages.
    public enum Stem: Sendable {
        /// 7x7 stride-2 convolution, BatchNorm, ReLU, 3x3 stride-2 max-pool (ImageNet inputs).
        case imagenet
        /// 3x3 stride-1 convolution, BatchNorm, ReLU, no pooling (32x32 inputs).
        case cifar
    }

    /// A ResNet: stem, one stage per entry of `blocks` (`widths[i]` channels, stride 2 from the
    /// second stage on), global average pooling, a Linear classifier `fc`.
    /// Initialisation as torchvision: convolutions Kaiming-normal (fan-out, ReLU gain), BatchNorm
    /// gamma 1 and beta 0, the classifier PyTorch's default.
    public static func make(block: Block, blocks: [Int], widths: [Int], stem: Stem, inputChannels: Int, classes: Int,
                            seed: UInt64) -> Sequential {
        precondition(blocks.count == widths.count && !blocks.isEmpty, "one width per stage")
        var rng = SeededRandom(seed: seed)
        func conv(_ cin: Int, _ cout: Int, _ k: Int, stride: Int = 1, padding: Int = 0) -> Layer {
            let std = (2 / Float(cout * k * k)).squareRoot()
            let w = Tensor.normal([cout, cin, k, k], std: std, rng: &rng)
            return .conv2d(Conv2d(weight: w, bias: nil, stride: (stride, stride), padding: (padding, padding)))
        }
        func norm(_ c: Int) -> Layer { .batchNorm(BatchNorm(features: c)) }
        let relu = Layer.activation(.relu)

        var root: [(String, Layer)] = []
        var channels = widths[0]
        switch stem {
        case .imagenet:
            root += [("conv1", conv(inputChannels, channels, 7, stride: 2, padding: 3)), ("bn1", norm(channels)), ("relu", relu),
                     ("maxpool", .maxPool2d(MaxPool2d(kernel: 3, stride: 2, padding: 1)))]
        case .cifar:
            root += [("conv1", conv(inputChannels, channels, 3, padding: 1)), ("bn1", norm(channels)), ("relu", relu)]
        }
        for (stage, (count, width)) in zip(blocks, widths).enumerated() {
            var stageBlocks: [(String, Layer)] = []
            for b in 0..<count {
                let stride = stage > 0 && b == 0 ? 2 : 1
                let out = width * block.expansion
                var main: [(String, Layer)]
                switch block {
                case .basic:
                    main = [("conv1", conv(channels, width, 3, stride: stride, padding: 1)), ("bn1", norm(width)), ("relu", relu),
                            ("conv2", conv(width, width, 3, padding: 1)), ("bn2", norm(width))]
                case .bottleneck:
                    main = [("conv1", conv(channels, width, 1)), ("bn1", norm(width)), ("relu", relu),
                            ("conv2", conv(width, width, 3, stride: stride, padding: 1)), ("bn2", norm(width)), ("relu2", relu),
                            ("conv3", conv(width, out, 1)), ("bn3", norm(out))]
                }
                var shortcut: Sequential?
                if stride != 1 || channels != out {
                    shortcut = Sequential(named: [("downsample.0", conv(channels, out, 1, stride: stride)), ("downsample.1", norm(out))])
                }
                stageBlocks.append(("\(b)", .residual(Residual(main: Sequential(named: main), shortcut: shortcut, activation: .relu))))
                channels = out
            }
            root.append(("layer\(stage + 1)", .sequential(Sequential(named: stageBlocks))))
        }
        root += [("avgpool", .adaptiveAvgPool2d(AdaptiveAvgPool2d())), ("flatten", .flatten),
                 ("fc", .linear(Linear(inFeatures: channels, outFeatures: classes, rng: &rng)))]
        return Sequential(named: root)
    }

    /// The zoo's ResNets by name.
    static func named(_ name: String, inputChannels: Int, classes: Int, width: Float, seed: UInt64) -> Sequential? {
        func scaled(_ widths: [Int]) -> [Int] { widths.map { max(1, Int((Float($0) * width).rounded())) } }
        switch name {
        case "resnet18": return make(block: .basic, blocks: [2, 2, 2, 2], widths: scaled([64, 128, 256, 512]), stem: .imagenet,
                                     inputChannels: inputChannels, classes: classes, seed: seed)
        case "resnet34": return make(block: .basic, blocks: [3, 4, 6, 3], widths: scaled([64, 128, 256, 512]), stem: .imagenet,
                                     inputChannels: inputChannels, classes: classes, seed: seed)
        case "resnet50": return make(block: .bottleneck, blocks: [3, 4, 6, 3], widths: scaled([64, 128, 256, 512]), stem: .imagenet,
                                     inputChannels: inputChannels, classes: classes, seed: seed)
        case "cifar-resnet": return make(block: .basic, blocks: [2, 2, 2, 2], widths: scaled([16, 32, 64, 128]), stem: .cifar,
                                         inputChannels: inputChannels, classes: classes, seed: seed)
        default: return nil
        }
    }
}

/// torchvision's `vgg16_bn`: `features.<i>` (3x3 convolutions with bias, BatchNorm, ReLU; max-pools),
/// `avgpool` (adaptive, 7x7), `classifier.<i>` (Linear 4096, ReLU, Dropout, Linear 4096, ReLU,
/// Dropout, Linear), with torchvision's indices, so its `state_dict` loads without renaming.
public enum VGG {
    /// VGG-16 with BatchNorm; `width` scales the channels and the classifier's hidden size.
    /// Initialisation as torchvision: convolutions Kaiming-normal (fan-out), biases 0,
    /// BatchNorm 1 and 0, Linear N(0, 0.01) with biases 0.
    public static func vgg16BN(inputChannels: Int, classes: Int, width: Float = 1, dropout: Float = 0.5, seed: UInt64) -> Sequential {
        var rng = SeededRandom(seed: seed)
        func scaled(_ c: Int) -> Int { max(1, Int((Float(c) * width).rounded())) }
        let plan: [Int?] = [64, 64, nil, 128, 128, nil, 256, 256, 256, nil, 512, 512, 512, nil, 512, 512, 512, nil]
        var features: [(String, Layer)] = []
        var channels = inputChannels
        for entry in plan {
            guard let c = entry.map(scaled) else {
                features.append(("\(features.count)", .maxPool2d(MaxPool2d(kernel: 2))))
                continue
            }
            let w = Tensor.normal([c, channels, 3, 3], std: (2 / Float(c * 9)).squareRoot(), rng: &rng)
            features.append(("\(features.count)", .conv2d(Conv2d(weight: w, bias: Tensor(shape: [c]), padding: (1, 1)))))
            features.append(("\(features.count)", .batchNorm(BatchNorm(features: c))))
            features.append(("\(features.count)", .activation(.relu)))
            channels = c
        }
        let hidden = scaled(4096)
        func linear(_ i: Int, _ o: Int) -> Layer { .linear(Linear(weight: .normal([o, i], std: 0.01, rng: &rng), bias: Tensor(shape: [o]))) }
        let classifier: [(String, Layer)] = [
            ("0", linear(channels * 49, hidden)), ("1", .activation(.relu)), ("2", .dropout(p: dropout)),
            ("3", linear(hidden, hidden)), ("4", .activation(.relu)), ("5", .dropout(p: dropout)),
            ("6", linear(hidden, classes)),
        ]
        return Sequential(named: [("features", .sequential(Sequential(named: features))),
                                  ("avgpool", .adaptiveAvgPool2d(AdaptiveAvgPool2d(outputSize: (7, 7)))), ("flatten", .flatten),
                                  ("classifier", .sequential(Sequential(named: classifier)))])
    }
}
