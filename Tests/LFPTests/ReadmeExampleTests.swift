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
