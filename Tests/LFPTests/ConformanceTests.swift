import Foundation
import Testing
@testable import LFP
import LFPTensor

/// Golden vectors from the reference implementation (`shared/conformance`, copied into the
/// test fixtures) and, when `LFP_CONFORMANCE_DIR` is set, every `*.json` in that directory.
@Suite struct ConformanceTests {
    struct VectorFile: Sendable, CustomStringConvertible {
        var url: URL
        var description: String { url.lastPathComponent }
    }

    static func bundled() -> [VectorFile] {
        guard let dir = Bundle.module.url(forResource: "Conformance", withExtension: nil),
              let files = try? FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil) else { return [] }
        return files.filter { $0.pathExtension == "json" }.sorted { $0.path < $1.path }.map(VectorFile.init)
    }

    @Test func bundledVectorsArePresent() {
        #expect(Self.bundled().count >= 6)
    }

    @Test(arguments: bundled())
    func bundledVector(_ file: VectorFile) throws {
        try ConformanceCase.check(file.url)
    }

    @Test func extraVectorsFromEnvironment() throws {
        guard let dir = ProcessInfo.processInfo.environment["LFP_CONFORMANCE_DIR"], !dir.isEmpty else { return }
        let url = URL(fileURLWithPath: dir)
        let files = try FileManager.default.contentsOfDirectory(at: url, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "json" }.sorted { $0.path < $1.path }
        #expect(!files.isEmpty, "LFP_CONFORMANCE_DIR=\(dir) holds no *.json file")
        for file in files { try ConformanceCase.check(file) }
    }
}

struct ConformanceError: Error, CustomStringConvertible {
    var description: String
}

/// One golden-vector file: builds the network, runs LFP, compares every tensor.
enum ConformanceCase {
    typealias JSON = [String: Any]

    static func tensor(_ any: Any?, _ what: String, file: String) throws -> Tensor {
        guard let obj = any as? JSON, let shape = obj["shape"] as? [Int], let values = obj["values"] as? [NSNumber] else {
            throw ConformanceError(description: "\(file): \(what) is not a tensor object")
        }
        return Tensor(shape: shape, storage: values.map { $0.floatValue })
    }

    static func pair(_ any: Any?) -> (Int, Int) {
        if let a = any as? [Int] { return (a[0], a.count > 1 ? a[1] : a[0]) }
        if let v = any as? Int { return (v, v) }
        return (1, 1)
    }

    static func buildModel(_ json: JSON, file: String) throws -> Sequential {
        guard let layers = json["layers"] as? [JSON], let params = json["params"] as? [JSON] else {
            throw ConformanceError(description: "\(file): missing layers or params")
        }
        var named: [String: Tensor] = [:]
        for p in params {
            guard let name = p["name"] as? String else { throw ConformanceError(description: "\(file): parameter without name") }
            named[name] = try tensor(p, "params[\(name)]", file: file)
        }
        var result: [Layer] = []
        for (position, l) in layers.enumerated() {
            let type = l["type"] as? String ?? "?"
            let index = l["index"] as? Int ?? position
            let weight = named["\(index).weight"], bias = named["\(index).bias"]
            switch type {
            case "Linear":
                guard let weight else { throw ConformanceError(description: "\(file): Linear \(index) has no weight") }
                result.append(.linear(Linear(weight: weight, bias: bias)))
            case "Conv2d":
                guard let weight else { throw ConformanceError(description: "\(file): Conv2d \(index) has no weight") }
                if let groups = l["groups"] as? Int, groups != 1 {
                    throw ConformanceError(description: "\(file): Conv2d \(index) uses groups = \(groups), which swift-lfp does not support")
                }
                result.append(.conv2d(Conv2d(weight: weight, bias: bias, stride: pair(l["stride"]), padding: pair(l["padding"]),
                                             dilation: pair(l["dilation"]))))
            case "ReLU": result.append(.activation(.relu))
            case "Sigmoid": result.append(.activation(.sigmoid))
            case "Tanh": result.append(.activation(.tanh))
            case "SiLU": result.append(.activation(.silu))
            case "ELU": result.append(.activation(.elu(alpha: (l["alpha"] as? NSNumber)?.floatValue ?? 1)))
            case "LeakyReLU": result.append(.activation(.leakyReLU(slope: (l["negative_slope"] as? NSNumber)?.floatValue ?? 0.01)))
            case "Heaviside", "Step": result.append(.activation(.step))
            case "MaxPool2d":
                let k = pair(l["kernel_size"]), s = l["stride"] == nil ? k : pair(l["stride"]), p = pair(l["padding"] ?? 0)
                guard k.0 == k.1, s.0 == s.1, p.0 == p.1 else { throw ConformanceError(description: "\(file): non-square MaxPool2d \(index) unsupported") }
                result.append(.maxPool2d(MaxPool2d(kernel: k.0, stride: s.0, padding: p.0)))
            case "AvgPool2d":
                let k = pair(l["kernel_size"]), s = l["stride"] == nil ? k : pair(l["stride"]), p = pair(l["padding"] ?? 0)
                guard k.0 == k.1, s.0 == s.1, p.0 == p.1, (l["ceil_mode"] as? Bool ?? false) == false else {
                    throw ConformanceError(description: "\(file): AvgPool2d \(index) with non-square window or ceil_mode unsupported")
                }
                result.append(.avgPool2d(AvgPool2d(kernel: k.0, stride: s.0, padding: p.0, countIncludePad: l["count_include_pad"] as? Bool ?? true)))
            case "Flatten":
                guard (l["start_dim"] as? Int ?? 1) == 1, (l["end_dim"] as? Int ?? -1) == -1 else {
                    throw ConformanceError(description: "\(file): Flatten \(index) must flatten dims 1...-1")
                }
                result.append(.flatten)
            default:
                throw ConformanceError(description: "\(file): layer \(index) has unsupported type \(type)")
            }
        }
        return Sequential(result)
    }

    static func rule(_ json: JSON, file: String) throws -> Rule {
        guard let r = json["rule"] as? JSON, let name = r["name"] as? String else {
            throw ConformanceError(description: "\(file): missing rule")
        }
        let eps = (r["epsilon"] as? NSNumber)?.floatValue ?? (json["epsilon"] as? NSNumber)?.floatValue ?? Rule.defaultEpsilon
        switch name {
        case "zero": return .zero
        case "epsilon": return .epsilon(eps)
        case "alpha-beta":
            return .alphaBeta(alpha: (r["alpha"] as? NSNumber)?.floatValue ?? 2, beta: (r["beta"] as? NSNumber)?.floatValue ?? 1, epsilon: eps)
        case "zplus-zminus": return .zPlusZMinus(epsilon: eps)
        default: throw ConformanceError(description: "\(file): unknown rule \(name)")
        }
    }

    static func compare(_ ours: Tensor, _ ref: Tensor, _ what: String, file: String) {
        guard ours.count == ref.count else {
            Issue.record("\(file): \(what): \(ours.shape) vs reference \(ref.shape)")
            return
        }
        let scale = max(1, Double(ref.maxAbs()))
        var worst = -1.0, at = 0
        for i in 0..<ref.count {
            let e = abs(Double(ours.storage[i]) - Double(ref.storage[i]))
            if !(e <= worst) { worst = e; at = i; if e.isNaN { break } }
        }
        #expect(worst <= 1e-4 * scale,
                "\(file): \(what): worst element \(at): ours \(ours.storage[at]) vs reference \(ref.storage[at]) (|diff| \(worst), tolerance \(1e-4 * scale))")
    }

    static func check(_ url: URL) throws {
        let file = url.lastPathComponent
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ConformanceError(description: "\(file): cannot read: \(error)")
        }
        guard let json = try JSONSerialization.jsonObject(with: data) as? JSON else {
            throw ConformanceError(description: "\(file): not a JSON object")
        }
        var model = try buildModel(json, file: file)
        let rule = try rule(json, file: file)
        let feedbackName = json["reward_function"] as? String ?? "sigmoid"
        let feedbackFunction = try FeedbackFunction.named(feedbackName)
        let reduction: Reduction = (json["feedback_batch_reduction"] as? String) == "mean" ? .mean : .sum
        let input = try tensor(json["input"], "input", file: file)
        guard let labels = json["labels"] as? [Int] else { throw ConformanceError(description: "\(file): missing labels") }
        let propagator = try FeedbackPropagator(model: model, composite: .uniform(rule),
                                                options: .init(reduction: reduction, computeInputFeedback: true, recordLayerFeedback: true))
        var rng = SeededRandom(seed: 0)
        let trace = model.trace(input, training: false, rng: &rng)
        compare(trace.output, try tensor(json["logits"], "logits", file: file), "logits", file: file)
        let feedback = feedbackFunction(logits: trace.output, labels: labels)
        compare(feedback, try tensor(json["reward_at_output"], "reward_at_output", file: file), "reward_at_output", file: file)
        let result = propagator.propagate(model: model, trace: trace, feedback: feedback)
        for f in json["feedback"] as? [JSON] ?? [] {
            let name = f["name"] as? String ?? "?"
            guard let ours = result.parameters["layers.\(name)"] else {
                Issue.record("\(file): no feedback for parameter \(name)")
                continue
            }
            compare(ours, try tensor(f, "feedback[\(name)]", file: file), "feedback[\(name)]", file: file)
        }
        if json["reward_at_input"] != nil {
            compare(result.input!, try tensor(json["reward_at_input"], "reward_at_input", file: file), "reward_at_input", file: file)
        }
        for entry in json["per_layer"] as? [JSON] ?? [] {
            guard let i = entry["index"] as? Int, model.layers.indices.contains(i) else { continue }
            if entry["output"] != nil {
                compare(trace.outputs[i], try tensor(entry["output"], "per_layer[\(i)].output", file: file), "per_layer[\(i)].output", file: file)
            }
            if entry["reward_at_output"] != nil {
                compare(result.layerOutputs![i], try tensor(entry["reward_at_output"], "per_layer[\(i)].reward_at_output", file: file),
                        "per_layer[\(i)].reward_at_output", file: file)
            }
        }
        // Two SGD steps (lr 0.1, momentum 0.9, PyTorch semantics, grad = -feedback).
        if let sgd = json["sgd_two_steps"] as? JSON, let steps = sgd["steps"] as? [JSON] {
            var optimizer = SGD(learningRate: 0.1, momentum: 0.9)
            for (k, step) in steps.enumerated() {
                let t = model.trace(input, training: false, rng: &rng)
                compare(t.output, try tensor(step["logits"], "sgd step \(k) logits", file: file), "sgd_two_steps[\(k)].logits", file: file)
                let r = propagator.propagate(model: model, trace: t, feedback: feedbackFunction(logits: t.output, labels: labels))
                for f in step["feedback"] as? [JSON] ?? [] {
                    let name = f["name"] as? String ?? "?"
                    compare(r.parameters["layers.\(name)"] ?? Tensor(shape: [0]), try tensor(f, "sgd feedback", file: file),
                            "sgd_two_steps[\(k)].feedback[\(name)]", file: file)
                }
                optimizer.step(&model, directions: r.parameters.mapValues { -$0 })
                for p in step["params_after"] as? [JSON] ?? [] {
                    let name = p["name"] as? String ?? "?"
                    compare(model.parameter("layers.\(name)") ?? Tensor(shape: [0]), try tensor(p, "params_after", file: file),
                            "sgd_two_steps[\(k)].params_after[\(name)]", file: file)
                }
            }
        }
    }
}
