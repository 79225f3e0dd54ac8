import ArgumentParser
import Foundation
import LFP
import LFPData
import LFPTensor

/// Options that describe a model, shared by `train` and `evaluate`.
struct ModelOptions: ParsableArguments {
    @Option(help: "Model: \(ModelZoo.names.joined(separator: ", ")).") var model = "lenet"
    @Option(help: "Activation: relu, step, sigmoid, tanh, silu, elu, leaky-relu.") var activation = "relu"
    @Option(help: "Dropout after hidden dense layers (the paper's mlp/lenet use 0.5).") var dropout: Float = 0
    @Option(help: "Width multiplier for vgg16 / vgg-like.") var width: Float = 1

    func parsedActivation() throws -> Activation {
        switch activation.lowercased() {
        case "relu": return .relu
        case "step", "heaviside": return .step
        case "sigmoid": return .sigmoid
        case "tanh": return .tanh
        case "silu": return .silu
        case "elu": return .elu(alpha: 1)
        case "leaky-relu", "leakyrelu": return .leakyReLU(slope: 0.01)
        default: throw ValidationError("unknown --activation '\(activation)'; valid: relu, step, sigmoid, tanh, silu, elu, leaky-relu")
        }
    }

    func validateValues() throws {
        guard ModelZoo.names.contains(model.lowercased()) else {
            throw ValidationError("unknown --model '\(model)'; valid: \(ModelZoo.names.joined(separator: ", "))")
        }
        _ = try parsedActivation()
        guard dropout >= 0 && dropout < 1 else { throw ValidationError("--dropout must be in [0, 1), got \(dropout)") }
        guard width > 0 else { throw ValidationError("--width must be positive") }
    }

    func build(inputShape: [Int], classes: Int, seed: UInt64) throws -> Sequential {
        try ModelZoo.make(model, .init(inputShape: inputShape, classes: classes, activation: try parsedActivation(),
                                       dropout: dropout, width: width), seed: seed)
    }

    var metadata: [String: String] {
        ["lfp.model": model, "lfp.activation": activation, "lfp.dropout": "\(dropout)", "lfp.width": "\(width)"]
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model with LFP (default) or gradient descent.",
        discussion: "With no options: LeNet on Fashion-MNIST, LFP-epsilon, sigmoid feedback, SGD lr 0.003 momentum 0.9, cosine schedule, batch 32, 3 epochs.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Dataset: \(DataSets.names.joined(separator: ", ")).") var dataset = "fashion-mnist"
    @Option(help: "Directory (or CSV file) holding the dataset.") var dataDir: String?
    @Option(help: "lfp, gradient or gradient-then-lfp.") var method = "lfp"
    @Option(help: "Gradient steps before switching to LFP (gradient-then-lfp).") var pretrainSteps = 100
    @Option(name: [.long, .customLong("rule")], help: "LFP composite or rule: \(Composite.presetNames.joined(separator: ", ")), or epsilon:EPS, alpha-beta:A:B.")
    var composite = "epsilon"
    @Option(help: "Feedback function: sigmoid, softmax, simple-reward.") var feedback = "sigmoid"
    @Option(help: "Parameter feedback over the batch: sum (the reference's) or mean.") var reduction = "sum"
    @Flag(help: "Divide the propagated feedback by its max-abs after each layer.") var backwardNormalization = false
    @Option(help: "sgd, adam or adamw.") var optimizer = "sgd"
    @Option(help: "Learning rate (default 0.003 for LFP, 0.01 for gradient descent).") var lr: Float?
    @Option(help: "SGD momentum.") var momentum: Float = 0.9
    @Flag(help: "Nesterov momentum.") var nesterov = false
    @Option(help: "Weight decay.") var weightDecay: Float = 0
    @Option(help: "constant, step:N[:gamma], multistep:m1,m2[:gamma], cosine, onecycle (stepped per batch; cosine anneals over the whole run).") var schedule = "cosine"
    @Option(help: "Clip the update direction to this global L2 norm.") var clip: Float?
    @Option(help: "Epochs.") var epochs = 3
    @Option(help: "Batch size.") var batchSize = 32
    @Option(help: "Use only the first N training samples.") var trainLimit: Int?
    @Option(help: "Use only the first N test samples.") var testLimit: Int?
    @Option(help: "Random seed (initialisation, data order, dropout).") var seed: UInt64 = 1
    @Option(help: "BLAS threads (default: all cores).") var threads: Int?
    @Option(help: "Output directory for metrics, plot and checkpoint.") var output = "runs/latest"
    @Flag(help: "Print a final JSON summary on stdout.") var json = false
    @Flag(help: "No progress bar.") var quiet = false

    mutating func validate() throws {
        try modelOptions.validateValues()
        guard ["lfp", "gradient", "gradient-then-lfp"].contains(method) else {
            throw ValidationError("unknown --method '\(method)'; valid: lfp, gradient, gradient-then-lfp")
        }
        guard ["sgd", "adam", "adamw"].contains(optimizer.lowercased()) else { throw ValidationError("unknown --optimizer '\(optimizer)'; valid: sgd, adam, adamw") }
        guard ["sum", "mean"].contains(reduction) else { throw ValidationError("unknown --reduction '\(reduction)'; valid: sum, mean") }
        do { _ = try Composite.preset(named: composite) } catch { throw ValidationError("\(error)") }
        do { _ = try FeedbackFunction.named(feedback) } catch { throw ValidationError("\(error)") }
        do { _ = try LearningRateSchedule.parse(schedule, totalSteps: 1) } catch { throw ValidationError("\(error)") }
        if let lr, !(lr > 0 && lr.isFinite) { throw ValidationError("--lr must be a positive number, got \(lr)") }
        guard momentum >= 0 && momentum < 1 else { throw ValidationError("--momentum must be in [0, 1)") }
        guard weightDecay >= 0 else { throw ValidationError("--weight-decay must be non-negative") }
        if let clip, !(clip > 0) { throw ValidationError("--clip must be positive") }
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1, got \(epochs)") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        guard pretrainSteps >= 0 else { throw ValidationError("--pretrain-steps must be non-negative") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if let n = trainLimit, n < 1 { throw ValidationError("--train-limit must be at least 1") }
        if let n = testLimit, n < 1 { throw ValidationError("--test-limit must be at least 1") }
    }

    func run() throws {
        try reportingErrors { try train() }
    }

    func makeOptimizer(lr: Float) -> any Optimizer {
        switch optimizer.lowercased() {
        case "adam": Adam(learningRate: lr, weightDecay: weightDecay)
        case "adamw": Adam.adamW(learningRate: lr, weightDecay: weightDecay == 0 ? 0.01 : weightDecay)
        default: SGD(learningRate: lr, momentum: momentum, nesterov: nesterov, weightDecay: weightDecay)
        }
    }

    func train() throws {
        if let threads { BLAS.setThreads(threads) }
        BLAS.configure()
        var (trainSet, testSet) = try DataSets.load(dataset, dataDir: dataDir, seed: seed)
        if let n = trainLimit, n < trainSet.count { trainSet = trainSet.prefix(n) }
        if let n = testLimit, n < testSet.count { testSet = testSet.prefix(n) }
        guard trainSet.count > 0 else { throw ValidationFailure("dataset \(dataset) has no training samples") }
        // Per-channel normalisation with the training set's statistics.
        let (mean, std) = trainSet.channelStatistics()
        trainSet = try trainSet.normalized(mean: mean, std: std)
        testSet = try testSet.normalized(mean: mean, std: std)

        let model = try modelOptions.build(inputShape: trainSet.sampleShape, classes: trainSet.classCount, seed: seed)
        let lfpMethod = method != "gradient"
        let learningRate = lr ?? (lfpMethod ? 0.003 : 0.01)
        let batchesPerEpoch = (trainSet.count + batchSize - 1) / batchSize
        let schedule = try LearningRateSchedule.parse(schedule, totalSteps: batchesPerEpoch * epochs)
        let compositeValue = try Composite.preset(named: composite)
        let options = PropagationOptions(reduction: reduction == "mean" ? .mean : .sum, backwardNormalization: backwardNormalization)
        var trainer = try Trainer(model: model, optimizer: AnyOptimizer(makeOptimizer(lr: learningRate)),
                                  method: method == "lfp" ? .lfp : .gradient(.softmaxCrossEntropy),
                                  composite: compositeValue, feedback: try FeedbackFunction.named(feedback), options: options)
        trainer.clipNorm = clip

        let outputURL = URL(fileURLWithPath: output)
        try FileManager.default.createDirectory(at: outputURL, withIntermediateDirectories: true)
        let log = MetricsLog(directory: outputURL)
        try log.start()
        if !quiet {
            let config = BLAS.configuration
            FileHandle.standardError.write(Data("""
            lfp train: \(modelOptions.model) (\(model.parameterCount) parameters) on \(dataset) (\(trainSet.count) train / \(testSet.count) test, \(trainSet.sampleShape)), \
            \(method)\(lfpMethod ? " [\(composite), \(feedback) feedback]" : ""), \(optimizer) lr \(learningRate), batch \(batchSize), \
            \(epochs) epochs, \(config.backend) \(config.core) x\(config.threads)

            """.utf8))
        }
        var history: [EpochMetrics] = []
        var globalStep = 0
        let started = Date()
        for epoch in 1...epochs {
            let before = trainer.model
            var progress = ProgressReporter(label: "epoch \(epoch)/\(epochs)", total: batchesPerEpoch)
            progress.quiet = quiet
            let epochStart = Date()
            var running = (objective: 0.0, correct: 0, seen: 0)
            let pretrain = method == "gradient-then-lfp" ? pretrainSteps : 0
            let (objective, accuracy) = try Fit.epoch(&trainer, data: trainSet, epoch: epoch, batchSize: batchSize, seed: seed,
                                                      schedule: { step in
                                                          // gradient-then-lfp: switch method after the pre-training steps.
                                                          return schedule.rate(base: learningRate, step: step)
                                                      }, firstStep: globalStep,
                                                      onBatch: { b, total, result in
                running.objective += Double(result.objective) * Double(result.count)
                running.correct += result.correct
                running.seen += result.count
                let accuracy = Double(running.correct) / Double(max(1, running.seen))
                progress.update(b + 1, suffix: String(format: "acc %.3f", accuracy))
            }, beforeStep: { step, t in
                if pretrain > 0 { t.method = step < pretrain ? .gradient(.softmaxCrossEntropy) : .lfp }
            })
            globalStep += batchesPerEpoch
            let seconds = Date().timeIntervalSince(epochStart)
            let testAccuracy = testSet.count > 0 ? Fit.accuracy(trainer.model, on: testSet) : nil
            let movement = Fit.parameterMovement(from: before, to: trainer.model)
            let metrics = EpochMetrics(epoch: epoch, trainObjective: objective, trainAccuracy: accuracy, testAccuracy: testAccuracy,
                                       seconds: seconds, samplesPerSecond: Double(trainSet.count) / seconds,
                                       signChangeFraction: movement.signChanges, meanSquaredChange: movement.meanSquaredChange,
                                       medianAbsWeight: movement.medianAbsWeight, learningRate: Double(trainer.optimizer.learningRate))
            history.append(metrics)
            try log.append(metrics)
            if !quiet {
                FileHandle.standardError.write(Data(String(format: "epoch %d: train %@ %.4f, train accuracy %.4f, test accuracy %@, %.1f s (%.0f samples/s)\n",
                    epoch, lfpMethod ? "feedback" : "loss", objective, accuracy, testAccuracy.map { String(format: "%.4f", $0) } ?? "-",
                    seconds, metrics.samplesPerSecond).utf8))
            }
            try Checkpoint.save(trainer.model, metadata: modelOptions.metadata.merging([
                "lfp.input_shape": trainSet.sampleShape.map(String.init).joined(separator: ","),
                "lfp.classes": "\(trainSet.classCount)",
                "lfp.normalization_mean": mean.map { "\($0)" }.joined(separator: ","),
                "lfp.normalization_std": std.map { "\($0)" }.joined(separator: ","),
                "lfp.epoch": "\(epoch)",
            ]) { $1 }, to: outputURL.appendingPathComponent("model.safetensors").path)
            try log.plot(history, title: "\(modelOptions.model) on \(dataset), \(method)")
        }
        let total = Date().timeIntervalSince(started)
        if json {
            struct Summary: Codable {
                var test_accuracy: Double?
                var train_accuracy: Double
                var epochs: Int
                var seconds: Double
                var output: String
            }
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            let last = history.last!
            print(String(decoding: try e.encode(Summary(test_accuracy: last.testAccuracy, train_accuracy: last.trainAccuracy,
                                                         epochs: epochs, seconds: (total * 100).rounded() / 100, output: output)), as: UTF8.self))
        } else if let acc = history.last?.testAccuracy {
            print(String(format: "test accuracy %.4f after %d epochs (%.0f s); metrics, plot and checkpoint in %@", acc, epochs, total, output))
        }
    }
}

/// Type-erased optimizer so the command can choose one at run time.
struct AnyOptimizer: Optimizer {
    var base: any Optimizer
    init(_ base: any Optimizer) { self.base = base }
    var learningRate: Float {
        get { base.learningRate }
        set { base.learningRate = newValue }
    }
    mutating func step(_ model: inout Sequential, directions: [String: Tensor]) { base.step(&model, directions: directions) }
}
