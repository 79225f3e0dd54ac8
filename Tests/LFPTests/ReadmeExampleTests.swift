import Testing
import LFP

/// The library example of the README, verbatim: it must compile and learn.
@Test func readmeExampleTrainsAnMLPWithLFP() throws {
    // --- README example start ---
    let data = try ToyData.blobs(count: 600, classes: 3, seed: 1)
    var rng = SeededRandom(seed: 1)
    let model = Sequential([
        .linear(Linear(inFeatures: 2, outFeatures: 32, rng: &rng)), .activation(.relu),
        .linear(Linear(inFeatures: 32, outFeatures: 3, rng: &rng)),
    ])
    var trainer = try Trainer(model: model, optimizer: SGD(learningRate: 0.01, momentum: 0.9),
                              method: .lfp, composite: .uniform(.epsilon), feedback: .sigmoid)
    for epoch in 0..<10 {
        _ = try Fit.epoch(&trainer, data: data, epoch: epoch, batchSize: 32, seed: 1)
    }
    let accuracy = Fit.accuracy(trainer.model, on: data)
    // --- README example end ---
    #expect(accuracy > 0.9)
}

/// The README's graph-model example, verbatim: a residual block with BatchNorm built by hand
/// with PyTorch names, one LFP pass in training mode, every signal by name.
@Test func readmeExampleBuildsAGraphModel() throws {
    // --- README graph example start ---
    var rng = SeededRandom(seed: 2)
    func conv(_ i: Int, _ o: Int) -> Layer {
        .conv2d(Conv2d(inChannels: i, outChannels: o, kernelSize: (3, 3), padding: (1, 1), bias: false, rng: &rng))
    }
    let block = Residual(main: Sequential(named: [
        ("conv1", conv(8, 8)), ("bn1", .batchNorm(BatchNorm(features: 8))), ("relu", .activation(.relu)),
        ("conv2", conv(8, 8)), ("bn2", .batchNorm(BatchNorm(features: 8))),
    ]))  // shortcut: identity; ReLU after the add
    let net = Sequential(named: [
        ("conv1", conv(1, 8)), ("bn1", .batchNorm(BatchNorm(features: 8))), ("relu", .activation(.relu)),
        ("layer1", .sequential(Sequential(named: [("0", .residual(block))]))),
        ("avgpool", .adaptiveAvgPool2d(AdaptiveAvgPool2d())), ("flatten", .flatten),
        ("fc", .linear(Linear(inFeatures: 8, outFeatures: 3, rng: &rng))),
    ])
    let x = Tensor.normal([4, 1, 8, 8], rng: &rng)
    let signals = try Inspection.propagate(model: net, input: x, labels: [0, 1, 2, 0], method: .lfp,
                                           composite: .uniform(.epsilon), feedback: .softmax, training: true)
    // "logits", "reward", "feedback.conv1.weight", ..., "feedback.layer1.0.bn2.bias", "running.bn1.running_mean", ...
    let names = signals.map(\.name)
    // --- README graph example end ---
    #expect(names.contains("feedback.layer1.0.conv2.weight") && names.contains("running.layer1.0.bn1.running_var"))
    #expect(net.stateDict.map(\.name).contains("layer1.0.bn2.num_batches_tracked"))
}
