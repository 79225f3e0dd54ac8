import ArgumentParser
import Foundation
import LFP
import LFPData
import LFPTensor

/// `lfp propagate`: one forward and backward pass of a model on a batch from a file, every
/// signal written by parameter name (inspection, and the interface to compare with the
/// reference implementation).
struct Propagate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Propagate feedback (or the gradient) for one batch and write every signal by parameter name.",
        discussion: """
            INPUT holds `input` (float [N, ...]) and `labels` (integer [N]); OUTPUT gets `logits`, `reward` (LFP) or \
            `loss` (gradient), `feedback.<parameter>` or `gradient.<parameter>` (mean cross-entropy), and with \
            --mode train `running.<buffer>` (BatchNorm's running statistics after the batch). Example:
              lfp propagate --model resnet18 --classes 10 --checkpoint W.safetensors --input I.safetensors \\
                --composite epsilon --feedback softmax --mode eval --output O.safetensors
            Spiking models (snn-mlp, snn-lenet) run --timesteps steps as lfp train does (constant encoding, the \
            rate-coded spiking feedback, LFP feedback summed over the batch; --composite epsilon or zplus-zminus, \
            --method gradient with --surrogate and the rate cross-entropy); OUTPUT gets `spikes` [T, N, C] in place \
            of `logits`.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Classes of the model's output.") var classes: Int
    @Option(help: "Parameters (and buffers) to load, safetensors with PyTorch's names (default: the seeded initialisation).") var checkpoint: String?
    @Option(help: "safetensors file with `input` and `labels`.") var input: String
    @Option(help: "Output safetensors file.") var output: String
    @Option(name: [.customLong("composite"), .customLong("rule")], help: "LFP composite (as for lfp train).") var composite = "epsilon"
    @Option(help: "Feedback function: \(FeedbackFunction.names.joined(separator: ", ")) (default softmax; spiking models: rate-coded only).") var feedback: String?
    @Option(help: "lfp or gradient.") var method = "lfp"
    @Option(help: "eval (BatchNorm on running statistics) or train (batch statistics; dropout active).") var mode = "eval"
    @Option(help: "Transformers: gradient (attention and adds as lfprop computes them) or attnlrp (lxt's AttnLRP rules).") var attentionRules = "gradient"
    @Option(help: "Spiking models, --method gradient: surrogate derivative atan, fast-sigmoid or heaviside.") var surrogate = "atan"
    @Option(help: "Seed of the initialisation (without --checkpoint) and of dropout masks.") var seed: UInt64 = 0
    @Option(help: "BLAS threads (default: all cores).") var threads: Int?

    func validate() throws {
        try modelOptions.validateValues()
        do { _ = try Surrogate.parse(surrogate) } catch { throw ValidationError("--surrogate: \(error)") }
        if modelOptions.isSpiking {
            if let feedback, feedback.lowercased() != "rate-coded" {
                throw ValidationError("spiking models take the rate-coded spiking feedback, got --feedback '\(feedback)'")
            }
            if method == "lfp" { try ModelOptions.checkSpikingComposite(composite) }
        }
        guard classes >= 1 else { throw ValidationError("--classes must be at least 1, got \(classes)") }
        guard Inspection.Method(rawValue: method) != nil else { throw ValidationError("unknown --method '\(method)'; valid: lfp, gradient") }
        guard ["eval", "train"].contains(mode) else { throw ValidationError("unknown --mode '\(mode)'; valid: eval, train") }
        guard PropagationOptions.AttentionRules(rawValue: attentionRules) != nil else {
            throw ValidationError("unknown --attention-rules '\(attentionRules)'; valid: gradient, attnlrp")
        }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        try reportingErrors {
            BLAS.configure()
            if let threads { BLAS.setThreads(threads) }
            let (tensors, _) = try SafeTensors.read(input)
            guard let x = tensors["input"] else { throw PropagateError("\(input): no tensor named 'input'") }
            guard let y = tensors["labels"] else { throw PropagateError("\(input): no tensor named 'labels'") }
            guard x.shape.count >= 2, x.shape[0] >= 1 else { throw PropagateError("\(input): 'input' must be [N, ...] with N >= 1, got \(x.shape)") }
            guard y.values.count == x.shape[0] else {
                throw PropagateError("\(input): \(y.values.count) labels for \(x.shape[0]) inputs")
            }
            let labels = try y.values.map { v throws(PropagateError) -> Int in
                guard v.isFinite, v == v.rounded(), v >= 0, Int(v) < classes else {
                    throw PropagateError("\(input): label \(v) is not a class index in 0..<\(classes)")
                }
                return Int(v)
            }
            guard x.values.allSatisfy(\.isFinite) else { throw PropagateError("\(input): 'input' holds NaN or infinite values") }
            let inputTensor = Tensor(shape: x.shape, storage: x.values)
            if modelOptions.isSpiking {
                var model = try modelOptions.buildSpiking(inputShape: Array(x.shape.dropFirst()), classes: classes, seed: seed)
                if let checkpoint { try Checkpoint.restore(&model, from: checkpoint) }
                let spikingMethod = try ModelOptions.spikingMethod(lfp: method == "lfp", composite: composite, surrogate: surrogate)
                let signals = try Inspection.propagateSpiking(model: model, input: inputTensor, labels: labels, method: spikingMethod,
                                                              steps: modelOptions.timesteps, seed: seed)
                // The pass is in training mode (the spiking models have neither BatchNorm nor dropout).
                var metadata = ["lfp.mode": "train", "lfp.timesteps": String(modelOptions.timesteps), "lfp.beta": String(modelOptions.beta),
                                "lfp.threshold": String(modelOptions.threshold), "lfp.reset": modelOptions.reset]
                if method == "lfp" { metadata["lfp.feedback"] = "rate-coded" } else { metadata["lfp.surrogate"] = surrogate }
                try write(signals, metadata: metadata)
                return
            }
            var model = try modelOptions.build(inputShape: Array(x.shape.dropFirst()), classes: classes, seed: seed)
            if let checkpoint { try Checkpoint.restore(&model, from: checkpoint) }
            let feedback = self.feedback ?? "softmax"
            let signals = try Inspection.propagate(
                model: model, input: inputTensor, labels: labels,
                method: Inspection.Method(rawValue: method)!, composite: try Composite.preset(named: composite),
                feedback: try FeedbackFunction.named(feedback), training: mode == "train",
                options: PropagationOptions(attentionRules: PropagationOptions.AttentionRules(rawValue: attentionRules)!), seed: seed)
            try write(signals, metadata: ["lfp.mode": mode, "lfp.feedback": feedback])
        }
    }

    /// Writes the signals to OUTPUT with the run's settings as metadata.
    private func write(_ signals: [(name: String, value: Tensor)], metadata: [String: String]) throws {
        let common = ["lfp.model": modelOptions.model, "lfp.method": method, "lfp.composite": composite]
        try SafeTensors.write(signals.map { TensorRecord(name: $0.name, shape: $0.value.shape, values: $0.value.storage) },
                              metadata: common.merging(metadata) { $1 }, to: output)
        print("wrote \(signals.count) tensors to \(output)")
    }
}

/// A problem with `lfp propagate`'s input file, reported as one line.
struct PropagateError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
