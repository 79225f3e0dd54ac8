import ArgumentParser
import Foundation
import LFP
import LFPDistributed
import LFPExperiments
import LFPData
import LFPTensor

/// Options that describe a model, shared by `train` and `evaluate`.
struct ModelOptions: ParsableArguments {
    @Option(help: "Model: \(ModelOptions.allModelNames.joined(separator: ", ")).") var model = "lenet"
    @Option(help: "Activation: relu, step, sigmoid, tanh, silu, elu, leaky-relu.") var activation = "relu"
    @Option(help: "Dropout after hidden dense layers (the paper's mlp/lenet use 0.5).") var dropout: Float = 0
    @Option(help: "Width multiplier for vgg16 / vgg-like, the ResNets and the ViTs.") var width: Float = 1
    @Option(help: "ViT patch size.") var patch = 16
    @Option(help: "Gaussian noise (std) added in training before every Linear/Conv2d layer (the paper uses 0.1 for step networks; default 0).") var noise: Float?
    @Option(help: "Spiking models: time steps per input.") var timesteps = 15
    @Option(help: "Spiking models: membrane decay beta.") var beta: Float = 0.9
    @Option(help: "Spiking models: firing threshold.") var threshold: Float = 1
    @Option(help: "Spiking models: reset by subtract or zero.") var reset = "subtract"

    var isSpiking: Bool { SpikingZoo.names.contains(model.lowercased()) }

    /// The spiking models' rules: LFP-epsilon or LFP-z+z- (`lfp train` and `lfp propagate`).
    static func checkSpikingComposite(_ composite: String) throws {
        guard ["epsilon", "zplus-zminus"].contains(composite.lowercased()) else {
            throw ValidationError("spiking models take --composite epsilon or zplus-zminus, got '\(composite)'")
        }
    }

    /// The spiking method of `--method` (LFP or not), `--composite` and `--surrogate`, as `lfp
    /// train` and `lfp propagate` read them: LFP-epsilon or LFP-z+z-, or the surrogate gradient
    /// of the rate cross-entropy.
    static func spikingMethod(lfp: Bool, composite: String, surrogate: String) throws -> SpikingMethod {
        if lfp { return composite.lowercased().hasPrefix("zplus-zminus") ? .lfpZPlusZMinus() : .lfp() }
        return .gradient(surrogate: try Surrogate.parse(surrogate), loss: .rateCrossEntropy)
    }
    static var allModelNames: [String] { ModelZoo.names + SpikingZoo.names }

    func buildSpiking(inputShape: [Int], classes: Int, seed: UInt64) throws -> Sequential {
        try SpikingZoo.make(model.lowercased(), inputShape: inputShape, classes: classes, beta: beta, threshold: threshold,
                            reset: reset == "zero" ? .zero : .subtract, seed: seed)
    }

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
        guard Self.allModelNames.contains(model.lowercased()) else {
            throw ValidationError("unknown --model '\(model)'; valid: \(Self.allModelNames.joined(separator: ", "))")
        }
        guard timesteps >= 1 else { throw ValidationError("--timesteps must be at least 1, got \(timesteps)") }
        guard beta >= 0 && beta <= 1 else { throw ValidationError("--beta must be in [0, 1], got \(beta)") }
        guard threshold > 0 else { throw ValidationError("--threshold must be positive, got \(threshold)") }
        guard ["subtract", "zero"].contains(reset) else { throw ValidationError("unknown --reset '\(reset)'; valid: subtract, zero") }
        _ = try parsedActivation()
        guard dropout >= 0 && dropout < 1 else { throw ValidationError("--dropout must be in [0, 1), got \(dropout)") }
        guard width > 0 else { throw ValidationError("--width must be positive") }
        guard patch >= 1 else { throw ValidationError("--patch must be at least 1") }
        if let noise, !(noise >= 0 && noise.isFinite) { throw ValidationError("--noise must be a non-negative number, got \(noise)") }
    }

    func build(inputShape: [Int], classes: Int, seed: UInt64) throws -> Sequential {
        try ModelZoo.make(model, .init(inputShape: inputShape, classes: classes, activation: try parsedActivation(),
                                       dropout: dropout, width: width, noise: noise ?? 0, patch: patch), seed: seed)
    }

    /// The options a checkpoint's metadata records (written by `lfp train`), the model name
    /// overridable; for commands that rebuild a trained model (`evaluate`, `explain`).
    static func recorded(in meta: [String: String], model override: String? = nil) throws -> ModelOptions {
        var options = try ModelOptions.parse([])
        options.model = override ?? meta["lfp.model"] ?? "lenet"
        options.activation = meta["lfp.activation"] ?? "relu"
        options.width = meta["lfp.width"].flatMap(Float.init) ?? 1
        options.noise = meta["lfp.noise"].flatMap(Float.init) ?? 0
        options.patch = meta["lfp.patch"].flatMap(Int.init) ?? options.patch
        options.timesteps = meta["lfp.timesteps"].flatMap(Int.init) ?? options.timesteps
        options.beta = meta["lfp.beta"].flatMap(Float.init) ?? options.beta
        options.threshold = meta["lfp.threshold"].flatMap(Float.init) ?? options.threshold
        options.reset = meta["lfp.reset"] ?? options.reset
        try options.validateValues()
        return options
    }

    var metadata: [String: String] {
        ["lfp.model": model, "lfp.activation": activation, "lfp.dropout": "\(dropout)", "lfp.width": "\(width)", "lfp.noise": "\(noise ?? 0)",
         "lfp.patch": "\(patch)",
         "lfp.timesteps": "\(timesteps)", "lfp.beta": "\(beta)", "lfp.threshold": "\(threshold)", "lfp.reset": reset]
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model with LFP (default) or gradient descent.",
        discussion: "With no options: LeNet on Fashion-MNIST, LFP-epsilon, sigmoid feedback, SGD lr 0.003 momentum 0.9, cosine schedule, batch 32, 3 epochs.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Dataset: \(DatasetCatalog.names.joined(separator: ", ")).") var dataset = "fashion-mnist"
    @Option(help: "Directory (or CSV file) holding the dataset.") var dataDir: String?
    @Option(help: "lfp, gradient or gradient-then-lfp.") var method = "lfp"
    @Option(help: "Gradient steps before switching to LFP (gradient-then-lfp).") var pretrainSteps = 100
    @Option(name: [.customLong("composite"), .customLong("rule")],
            help: "LFP composite or rule: \(Composite.presetNames.joined(separator: ", ")), or epsilon:EPS, alpha-beta:A:B, scaled-epsilon:K, threshold-epsilon:K, or RULE,SELECTOR=RULE,... with selectors first, last, dense, conv, avgpool, N, N-M (default: the --activation's recipe; epsilon for ReLU).")
    var compositeOption: String?
    @Option(name: .customLong("feedback"), help: "Feedback function: \(FeedbackFunction.names.joined(separator: ", ")) (default: the --activation's recipe; sigmoid for ReLU).")
    var feedbackOption: String?
    @Option(help: "Parameter feedback over the batch: sum (the reference's) or mean.") var reduction = "sum"
    @Flag(help: "Divide the propagated feedback by its max-abs after each layer.") var backwardNormalization = false
    @Flag(name: .customLong("centred-inputs"), inversion: .prefixedNo,
          help: "Measure contributions from the centre of each activation (0.5 for step and sigmoid; docs/MATH-ACTIVATIONS.md). Default: on for step and sigmoid under LFP.")
    var centredInputsOption: Bool?
    @Option(name: .customLong("optimizer"), help: "sgd, adam or adamw (default: the --activation's recipe; sgd for ReLU).") var optimizerOption: String?
    @Option(help: "Learning rate (default: the --activation's recipe for LFP, 0.003 for ReLU; 0.01 for gradient descent).") var lr: Float?
    @Option(help: "SGD momentum.") var momentum: Float = 0.9
    @Flag(help: "Nesterov momentum.") var nesterov = false
    @Option(help: "Weight decay.") var weightDecay: Float = 0
    @Option(help: "constant, step:N[:gamma], multistep:m1,m2[:gamma], cosine, onecycle (stepped per batch; cosine anneals over the whole run).") var schedule = "cosine"
    @Option(name: .customLong("clip"), help: "Clip the update direction to this global L2 norm (default: none).")
    var clipOption: Float?
    @Option(help: "Unit-wise adaptive clipping (AGC) with this clipping factor, e.g. 0.01.") var agc: Float?
    @Option(help: "Spiking models, --method gradient: surrogate derivative atan, fast-sigmoid or heaviside (the true, zero derivative).") var surrogate = "atan"
    @Option(help: "Epochs.") var epochs = 3
    @Option(name: .customLong("batch-size"), help: "Batch size (default: the --activation's recipe; 32).") var batchSizeOption: Int?
    @Option(help: "Use only the first N training samples.") var trainLimit: Int?
    @Option(help: "Use only the first N test samples.") var testLimit: Int?
    @Option(help: "Random seed (initialisation, data order, dropout).") var seed: UInt64 = 1
    @Option(help: "BLAS threads (default: all cores).") var threads: Int?
    @Option(help: "Output directory for metrics, plot and checkpoint.") var output = "runs/latest"
    @Flag(help: "Print a final JSON summary on stdout.") var json = false
    @Option(help: "Also write a resumable checkpoint every N steps (one is always written after each epoch).") var checkpointEvery: Int?
    @Option(help: "Stop after N steps in this process as if interrupted (checkpoint written; continue with --resume).") var stopAfter: Int?
    @Option(help: "Continue the interrupted run in this output directory (its options are taken from DIR/run.json).") var resume: String?
    @Option(name: .customLong("init"), help: "Start from a pretrained state dict (safetensors with PyTorch's names, e.g. a torchvision ResNet) and fine-tune it.") var initFrom: String?
    @Option(help: "Classes of the model's output (default: the dataset's). With --init, a classifier head of another size is replaced by a fresh one of this size.") var classes: Int?
    @Option(help: "Parameters not to train, comma-separated: names, prefixes (conv1,bn1,layer1) or globs (*.bn*.weight).") var freeze: String?
    @Option(help: "ViTs under LFP: gradient (attention and adds as lfprop computes them) or attnlrp (lxt's AttnLRP rules).") var attentionRules = "gradient"

    var resuming: Bool { resume != nil }

    /// The settings `--activation` suggests for LFP (docs/MATH-ACTIVATIONS.md); every option
    /// overrides its part. Gradient descent keeps the standard settings.
    var recipe: ActivationRecipe {
        guard method != "gradient", let activation = try? modelOptions.parsedActivation() else { return .standard }
        return .lfp(for: activation)
    }
    /// The ViTs default to epsilon 1, the reference's ViT composite (VIT-NOTES.md).
    var composite: String { compositeOption ?? (modelOptions.model.lowercased().hasPrefix("vit") ? "epsilon:1" : recipe.composite) }
    var feedback: String { feedbackOption ?? recipe.feedback }
    var optimizer: String { optimizerOption ?? recipe.optimizer }
    var batchSize: Int { batchSizeOption ?? recipe.batchSize }
    var clip: Float? { clipOption ?? recipe.clip }
    var centredInputs: Bool { centredInputsOption ?? recipe.centredInputs }

    /// The options that define the run, as arguments (saved to run.json, replayed by --resume).
    var arguments: [String] {
        var a = ["--model", modelOptions.model, "--activation", modelOptions.activation, "--dropout", "\(modelOptions.dropout)",
                 "--noise", "\(modelOptions.noise ?? recipe.noise)",
                 "--width", "\(modelOptions.width)", "--patch", "\(modelOptions.patch)", "--dataset", dataset, "--method", method, "--pretrain-steps", "\(pretrainSteps)",
                 "--composite", composite, "--feedback", feedback, "--reduction", reduction, "--optimizer", optimizer,
                 "--momentum", "\(momentum)", "--weight-decay", "\(weightDecay)", "--schedule", schedule,
                 "--epochs", "\(epochs)", "--batch-size", "\(batchSize)", "--seed", "\(seed)"]
        if let dataDir { a += ["--data-dir", URL(fileURLWithPath: dataDir).standardizedFileURL.path] }
        if let lr { a += ["--lr", "\(lr)"] }
        if let clip { a += ["--clip", "\(clip)"] }
        if let agc { a += ["--agc", "\(agc)"] }
        a += ["--timesteps", "\(modelOptions.timesteps)", "--beta", "\(modelOptions.beta)", "--threshold", "\(modelOptions.threshold)",
              "--reset", modelOptions.reset, "--surrogate", surrogate]
        if let trainLimit { a += ["--train-limit", "\(trainLimit)"] }
        if let testLimit { a += ["--test-limit", "\(testLimit)"] }
        if let checkpointEvery { a += ["--checkpoint-every", "\(checkpointEvery)"] }
        if let initFrom { a += ["--init", URL(fileURLWithPath: initFrom).standardizedFileURL.path] }
        if let classes { a += ["--classes", "\(classes)"] }
        if let freeze { a += ["--freeze", freeze] }
        a += ["--attention-rules", attentionRules]
        if nesterov { a.append("--nesterov") }
        if backwardNormalization { a.append("--backward-normalization") }
        a.append(centredInputs ? "--centred-inputs" : "--no-centred-inputs")
        return a
    }

    @Flag(help: "No progress bar.") var quiet = false

    mutating func validate() throws {
        if let dir = resume {
            // Replay the original options; only --threads, --quiet, --json and the stop options may differ.
            let url = URL(fileURLWithPath: dir).appendingPathComponent("run.json")
            guard let data = try? Data(contentsOf: url), let saved = try? JSONDecoder().decode([String].self, from: data) else {
                throw ValidationError("--resume \(dir): cannot read \(url.path) (not a run directory of lfp train)")
            }
            guard !saved.contains("--resume") else {
                throw ValidationError("--resume \(dir): \(url.path) names --resume itself (not a run directory written by lfp train)")
            }
            var replay: Train
            do { replay = try Train.parse(saved + ["--output", dir]) } catch {
                // ArgumentParser's errors print as their internal structure unless formatted.
                let reason = Train.message(for: error).split(whereSeparator: \.isNewline).first.map(String.init) ?? "\(error)"
                throw ValidationError("--resume \(dir): \(url.path) holds options lfp train does not accept: \(reason)")
            }
            // Runs saved before centred inputs existed trained without them.
            if !saved.contains("--centred-inputs") && !saved.contains("--no-centred-inputs") { replay.centredInputsOption = false }
            replay.resume = dir
            replay.threads = threads ?? replay.threads
            replay.quiet = quiet
            replay.json = json
            replay.stopAfter = stopAfter
            replay.checkpointEvery = checkpointEvery ?? replay.checkpointEvery
            self = replay
            return
        }
        try modelOptions.validateValues()
        guard ["lfp", "gradient", "gradient-then-lfp"].contains(method) else {
            throw ValidationError("unknown --method '\(method)'; valid: lfp, gradient, gradient-then-lfp")
        }
        if modelOptions.noise == nil && !modelOptions.isSpiking { modelOptions.noise = recipe.noise }
        guard ["sgd", "adam", "adamw"].contains(optimizer.lowercased()) else { throw ValidationError("unknown --optimizer '\(optimizer)'; valid: sgd, adam, adamw") }
        guard ["sum", "mean"].contains(reduction) else { throw ValidationError("unknown --reduction '\(reduction)'; valid: sum, mean") }
        do { _ = try Composite.preset(named: composite) } catch { throw ValidationError("\(error)") }
        do { _ = try FeedbackFunction.named(feedback) } catch { throw ValidationError("\(error)") }
        do { _ = try LearningRateSchedule.parse(schedule, totalSteps: 1) } catch { throw ValidationError("\(error)") }
        if let lr, !(lr > 0 && lr.isFinite) { throw ValidationError("--lr must be a positive number, got \(lr)") }
        guard momentum >= 0 && momentum < 1 else { throw ValidationError("--momentum must be in [0, 1)") }
        guard weightDecay >= 0 else { throw ValidationError("--weight-decay must be non-negative") }
        if let clip, !(clip > 0) { throw ValidationError("--clip must be positive") }
        if let agc, !(agc > 0) { throw ValidationError("--agc must be positive") }
        guard ["atan", "fast-sigmoid", "heaviside"].contains(surrogate) else {
            throw ValidationError("unknown --surrogate '\(surrogate)'; valid: atan, fast-sigmoid, heaviside")
        }
        if modelOptions.isSpiking {
            guard method != "gradient-then-lfp" else { throw ValidationError("--method gradient-then-lfp is not available for spiking models") }
            try ModelOptions.checkSpikingComposite(composite)
        }
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1, got \(epochs)") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        guard pretrainSteps >= 0 else { throw ValidationError("--pretrain-steps must be non-negative") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if let n = trainLimit, n < 1 { throw ValidationError("--train-limit must be at least 1") }
        if let n = testLimit, n < 1 { throw ValidationError("--test-limit must be at least 1") }
        if let n = checkpointEvery, n < 1 { throw ValidationError("--checkpoint-every must be at least 1") }
        if let n = stopAfter, n < 1 { throw ValidationError("--stop-after must be at least 1") }
        if let n = classes, n < 1 { throw ValidationError("--classes must be at least 1") }
        guard PropagationOptions.AttentionRules(rawValue: attentionRules) != nil else {
            throw ValidationError("unknown --attention-rules '\(attentionRules)'; valid: gradient, attnlrp")
        }
        if modelOptions.isSpiking && (initFrom != nil || freeze != nil || classes != nil) {
            throw ValidationError("--init, --classes and --freeze are for the non-spiking models")
        }
    }

    func run() throws {
        // Under mpirun every rank runs this; rank 0 alone reports errors.
        let comm: any Communicator
        do { comm = try Distributed.communicator() } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode.failure
        }
        if comm.rank != 0 {
            do { try train(comm) } catch let error as ExitCode { throw error } catch { throw ExitCode.failure }
            return
        }
        try reportingErrors { try train(comm) }
    }

    func makeOptimizer(lr: Float) -> any Optimizer {
        switch optimizer.lowercased() {
        case "adam": Adam(learningRate: lr, weightDecay: weightDecay)
        case "adamw": Adam.adamW(learningRate: lr, weightDecay: weightDecay == 0 ? 0.01 : weightDecay)
        default: SGD(learningRate: lr, momentum: momentum, nesterov: nesterov, weightDecay: weightDecay)
        }
    }

    func train(_ comm: any Communicator) throws {
        if let threads { BLAS.setThreads(threads) }
        BLAS.configure()
        let isRoot = comm.rank == 0
        let outputURL = URL(fileURLWithPath: output)
        let statePath = outputURL.appendingPathComponent("state.safetensors").path
        var state = RunState()
        var resumedTensors: [String: TensorRecord]? = nil
        if resuming {
            let (tensors, meta) = try SafeTensors.read(statePath)
            state = try RunState.decode(metadata: meta, file: statePath)
            resumedTensors = tensors
        }

        // Every rank loads the data; a failure on any rank stops all of them (reported by rank 0).
        var loaded: (Dataset, Dataset)? = nil
        var loadError: (any Error)? = nil
        do { loaded = try DatasetCatalog.load(dataset, dataDir: dataDir, seed: seed) } catch { loadError = error }
        try Distributed.agree(localError: loadError, comm)
        var (trainSet, testSet) = loaded!
        if let n = trainLimit, n < trainSet.count { trainSet = trainSet.prefix(n) }
        if let n = testLimit, n < testSet.count { testSet = testSet.prefix(n) }
        guard trainSet.count > 0 else { throw ValidationFailure("dataset \(dataset) has no training samples") }
        // Per-channel normalisation with the training set's statistics.
        if !resuming { (state.normalizationMean, state.normalizationStd) = trainSet.channelStatistics() }
        trainSet = try trainSet.normalized(mean: state.normalizationMean, std: state.normalizationStd)
        testSet = try testSet.normalized(mean: state.normalizationMean, std: state.normalizationStd)

        let lfpMethod = method != "gradient"
        let learningRate = lr ?? (lfpMethod ? recipe.learningRate : 0.01)
        let optimizerValue = ErasedOptimizer(makeOptimizer(lr: learningRate))
        let agcValue = agc.map { AdaptiveGradientClipping(clipping: $0) }
        let reductionValue: Reduction = reduction == "mean" ? .mean : .sum
        let parallel = comm.size > 1 ? Distributed.parallelism(comm, stopRequested: { StopSignal.received != nil }) : nil
        let context = RunContext(trainSet: trainSet, testSet: testSet, learningRate: learningRate, statePath: statePath,
                                 modelPath: outputURL.appendingPathComponent("model.safetensors").path, outputURL: outputURL,
                                 isRoot: isRoot, parallel: parallel)
        if modelOptions.isSpiking {
            var network = try modelOptions.buildSpiking(inputShape: trainSet.sampleShape, classes: trainSet.classCount, seed: seed)
            if resuming { try Checkpoint.restore(&network, from: context.modelPath) }
            try Distributed.broadcastParameters(&network, comm)
            let spikingMethod = try ModelOptions.spikingMethod(lfp: lfpMethod, composite: composite, surrogate: surrogate)
            var trainer = try SpikingTrainer(model: network, optimizer: optimizerValue, method: spikingMethod,
                                         steps: modelOptions.timesteps, feedback: .rateCoded,
                                         backwardNormalization: backwardNormalization, reduction: reductionValue,
                                         adaptiveClipping: agcValue, clipNorm: clip)
            try runLoop(&trainer, state: &state, resumedTensors: resumedTensors, context: context,
                        describe: "\(spikingMethod), T = \(modelOptions.timesteps), beta \(modelOptions.beta)",
                        firingRates: { t in
                            // Mean spikes per neuron per step of each spiking layer, on the first test batch.
                            let source = testSet.count > 0 ? testSet : trainSet
                            var features: [Float] = [], labels: [Int] = []
                            let n = min(source.count, 256)
                            source.fill(indices: Array(0..<n)[...], features: &features, labels: &labels)
                            let x = Tensor(shape: [n] + source.sampleShape, storage: features)
                            return t.firingRates(x).map(Double.init)
                        })
        } else {
            let outputs = classes ?? trainSet.classCount
            guard outputs >= trainSet.classCount else {
                throw ValidationFailure("--classes \(outputs) is fewer than the \(trainSet.classCount) classes of \(dataset)")
            }
            var model = try modelOptions.build(inputShape: trainSet.sampleShape, classes: outputs, seed: seed)
            if resuming {
                try Checkpoint.restore(&model, from: context.modelPath)
            } else if let initFrom {
                let fresh = try Checkpoint.initialize(&model, from: initFrom, replaceHead: classes != nil)
                if isRoot && !fresh.isEmpty {
                    print("initialised from \(initFrom); new classifier head (\(fresh.joined(separator: ", "))) for \(outputs) classes")
                } else if isRoot {
                    print("initialised from \(initFrom)")
                }
            }
            try Distributed.broadcastParameters(&model, comm)
            let options = PropagationOptions(reduction: reductionValue, backwardNormalization: backwardNormalization,
                                             centredInputs: centredInputs,
                                             attentionRules: PropagationOptions.AttentionRules(rawValue: attentionRules)!)
            var trainer = try Trainer(model: model, optimizer: optimizerValue,
                                      method: method == "lfp" ? .lfp : .gradient(.softmaxCrossEntropy),
                                      composite: try Composite.preset(named: composite), feedback: try FeedbackFunction.named(feedback),
                                      options: options)
            trainer.clipNorm = clip
            trainer.adaptiveClipping = agcValue
            if let freeze {
                let patterns = freeze.split(separator: ",").map { ParameterPattern(String($0).trimmingCharacters(in: .whitespaces)) }
                trainer.frozen = try ParameterPattern.select(patterns, in: model)
            }
            let pretrain = method == "gradient-then-lfp" ? pretrainSteps : 0
            try runLoop(&trainer, state: &state, resumedTensors: resumedTensors, context: context,
                        describe: lfpMethod ? "\(method) [\(composite)\(centredInputs ? ", centred inputs" : ""), \(feedback) feedback]" : method,
                        beforeStep: { step, t in
                            // gradient-then-lfp: gradient descent for the first steps, then LFP.
                            if pretrain > 0 { t.method = step < pretrain ? .gradient(.softmaxCrossEntropy) : .lfp }
                        })
        }
    }

    /// The final `--json` summary.
    struct Summary: Codable {
        var test_accuracy: Double?
        var train_accuracy: Double
        var epochs: Int
        var seconds: Double
        var output: String
        var firing_rates: [Double]?
    }

    /// What the training loop needs besides the trainer.
    struct RunContext {
        var trainSet: Dataset
        var testSet: Dataset
        var learningRate: Float
        var statePath: String
        var modelPath: String
        var outputURL: URL
        /// Rank 0 (or the only process): evaluates and writes metrics, plots and checkpoints.
        var isRoot: Bool
        var parallel: DataParallelism?
    }

    /// The epoch loop shared by ordinary and spiking models: schedule, progress, checkpoints,
    /// stop requests, metrics, plots.
    func runLoop<T: StepTrainer>(_ trainer: inout T, state: inout RunState, resumedTensors: [String: TensorRecord]?,
                                 context: RunContext, describe: String,
                                 beforeStep: @escaping (Int, inout T) -> Void = { _, _ in },
                                 firingRates: ((T) -> [Double])? = nil) throws where T.O == ErasedOptimizer {
        let (trainSet, testSet) = (context.trainSet, context.testSet)
        let learningRate = context.learningRate
        let batchesPerEpoch = (trainSet.count + batchSize - 1) / batchSize
        let schedule = try LearningRateSchedule.parse(self.schedule, totalSteps: batchesPerEpoch * epochs)
        // The weights at the start of the current epoch (for the sign-change and movement metrics).
        var epochStart = trainer.parameterModel
        if let tensors = resumedTensors {
            trainer.optimizer.loadState(tensors.filter { !$0.key.hasPrefix("epoch_start/") }
                .mapValues { Tensor(shape: $0.shape, storage: $0.values) })
            for (name, value) in epochStart.namedParameters {
                guard let r = tensors["epoch_start/\(name)"], r.shape == value.shape else {
                    throw ValidationFailure("\(context.statePath): missing epoch_start/\(name); cannot resume")
                }
                epochStart.setParameter(name, Tensor(shape: r.shape, storage: r.values))
            }
        }

        let isRoot = context.isRoot
        let quiet = self.quiet || !isRoot
        if isRoot { try FileManager.default.createDirectory(at: context.outputURL, withIntermediateDirectories: true) }
        let log = MetricsLog(directory: context.outputURL)
        if !resuming && isRoot {
            try log.start()
            try JSONEncoder().encode(arguments).write(to: context.outputURL.appendingPathComponent("run.json"), options: .atomic)
        }
        let metadata = modelOptions.metadata.merging([
            "lfp.input_shape": trainSet.sampleShape.map(String.init).joined(separator: ","),
            "lfp.classes": "\(classes ?? trainSet.classCount)",
            "lfp.normalization_mean": state.normalizationMean.map { "\($0)" }.joined(separator: ","),
            "lfp.normalization_std": state.normalizationStd.map { "\($0)" }.joined(separator: ","),
        ]) { $1 }
        func saveCheckpoint(_ trainer: T, _ state: RunState) throws {
            guard isRoot else { return }
            // Weights first, then the state that refers to them; both atomic (temp file, fsync, rename).
            try Checkpoint.save(trainer.parameterModel, metadata: metadata, to: context.modelPath)
            var records = trainer.optimizer.stateTensors().map { TensorRecord(name: $0.key, shape: $0.value.shape, values: $0.value.storage) }
            records += epochStart.namedParameters.map { TensorRecord(name: "epoch_start/\($0.name)", shape: $0.value.shape, values: $0.value.storage) }
            try SafeTensors.write(records, metadata: try state.metadata(), to: context.statePath)
        }

        if !quiet {
            let config = BLAS.configuration
            if isRoot && !resuming && method != "gradient" && !modelOptions.isSpiking && (recipe != .standard || modelOptions.activation.lowercased() != "relu") {
                // Say what the --activation picked and what the user overrode.
                let which = recipe == .standard ? "the standard one (as for ReLU)" : "its own"
                FileHandle.standardError.write(Data(
                    "lfp train: recipe for --activation \(modelOptions.activation) under LFP, \(which): \(recipe.summary) (options given override it)\n".utf8))
            }
            FileHandle.standardError.write(Data("""
            lfp train: \(modelOptions.model) (\(trainer.parameterModel.parameterCount) parameters) on \(dataset) (\(trainSet.count) train / \(testSet.count) test, \(trainSet.sampleShape)), \
            \(describe), \(optimizer) lr \(learningRate) \(self.schedule), batch \(batchSize), \
            \(epochs) epochs, \(config.backend) \(config.core) x\(config.threads)\(context.parallel.map { ", \($0.size) ranks" } ?? "")\(resuming ? ", resuming at epoch \(state.epoch) batch \(state.progress.nextBatch + 1)" : "")

            """.utf8))
        }
        StopSignal.install()
        var stepsThisProcess = 0
        while state.epoch <= epochs {
            let epoch = state.epoch
            var progressBar = ProgressReporter(label: "epoch \(epoch)/\(epochs)", total: batchesPerEpoch)
            progressBar.quiet = quiet
            let segmentStart = Date()
            var stopReason: String? = nil
            var progress = state.progress
            let frozenState = state
            let completed = try Fit.epoch(&trainer, data: trainSet, epoch: epoch, batchSize: batchSize, seed: seed,
                                          progress: &progress, firstStep: (epoch - 1) * batchesPerEpoch,
                                          parallel: context.parallel,
                                          schedule: { schedule.rate(base: learningRate, step: $0) },
                                          beforeStep: { step, t in
                                              if let m = schedule.momentum(step: step) { t.optimizer.momentumValue = m }
                                              beforeStep(step, &t)
                                          },
                                          afterStep: { b, total, result, p, t in
                progressBar.update(b + 1, suffix: String(format: "acc %.3f", p.accuracy))
                stepsThisProcess += 1
                let global = (epoch - 1) * batchesPerEpoch + b + 1
                if context.parallel == nil, let signal = StopSignal.received { stopReason = "received \(signal)" }
                if result.stopRequested { stopReason = "a rank received a stop signal" }
                if let limit = stopAfter, stepsThisProcess >= limit { stopReason = "--stop-after \(limit)" }
                if stopReason != nil || (checkpointEvery.map { global % $0 == 0 } ?? false) {
                    var snapshot = frozenState
                    snapshot.progress = p
                    snapshot.epochSecondsSoFar += Date().timeIntervalSince(segmentStart)
                    try saveCheckpoint(t, snapshot)
                }
                return stopReason == nil
            })
            state.progress = progress
            state.epochSecondsSoFar += Date().timeIntervalSince(segmentStart)
            if !completed {
                // The checkpoint of the last step was written in afterStep.
                if isRoot { FileHandle.standardError.write(Data("\nstopped (\(stopReason ?? "")) at epoch \(epoch), batch \(state.progress.nextBatch); checkpoint written. Continue with: lfp train --resume \(output)\n".utf8)) }
                throw ExitCode(130)
            }
            let seconds = state.epochSecondsSoFar
            let testAccuracy = testSet.count > 0 && isRoot ? trainer.accuracy(on: testSet) : nil
            let movement = Fit.parameterMovement(from: epochStart, to: trainer.parameterModel)
            let metrics = EpochMetrics(epoch: epoch, trainObjective: state.progress.objective, trainAccuracy: state.progress.accuracy,
                                       testAccuracy: testAccuracy, seconds: seconds, samplesPerSecond: Double(trainSet.count) / seconds,
                                       signChangeFraction: movement.signChanges, meanSquaredChange: movement.meanSquaredChange,
                                       medianAbsWeight: movement.medianAbsWeight, learningRate: Double(trainer.optimizer.learningRate),
                                       firingRates: isRoot ? firingRates?(trainer) : nil)
            state.history.append(metrics)
            state.secondsSoFar += seconds
            state.epoch += 1
            state.progress = Fit.EpochProgress()
            state.epochSecondsSoFar = 0
            epochStart = trainer.parameterModel
            if isRoot { try log.append(metrics) }
            if !quiet {
                let rates = metrics.firingRates.map { ", firing rates " + $0.map { String(format: "%.3f", $0) }.joined(separator: "/") } ?? ""
                FileHandle.standardError.write(Data(String(format: "epoch %d: train %@ %.4f, train accuracy %.4f, test accuracy %@, %.1f s (%.0f samples/s)%@\n",
                    epoch, method == "gradient" ? "loss" : "feedback", metrics.trainObjective, metrics.trainAccuracy,
                    testAccuracy.map { String(format: "%.4f", $0) } ?? "-", seconds, metrics.samplesPerSecond, rates).utf8))
            }
            try saveCheckpoint(trainer, state)
            if isRoot { try log.plot(state.history, title: "\(modelOptions.model) on \(dataset), \(method)") }
            if let stopReason, state.epoch <= epochs {
                if isRoot { FileHandle.standardError.write(Data("stopped (\(stopReason)) after epoch \(epoch); checkpoint written. Continue with: lfp train --resume \(output)\n".utf8)) }
                throw ExitCode(130)
            }
        }
        guard isRoot else { return }
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            let last = state.history.last!
            print(String(decoding: try e.encode(Summary(test_accuracy: last.testAccuracy, train_accuracy: last.trainAccuracy,
                                                         epochs: epochs, seconds: (state.secondsSoFar * 100).rounded() / 100, output: output,
                                                         firing_rates: last.firingRates)), as: UTF8.self))
        } else if let acc = state.history.last?.testAccuracy {
            print(String(format: "test accuracy %.4f after %d epochs (%.0f s); metrics, plot and checkpoint in %@", acc, epochs, state.secondsSoFar, output))
        }
    }
}

