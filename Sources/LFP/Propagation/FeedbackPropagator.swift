import LFPTensor

/// Options of an LFP backward pass.
public struct PropagationOptions: Sendable {
    /// Sum parameter feedback over the batch (the reference's convention) or average it.
    public var reduction: Reduction = .sum
    /// After each affine layer, divide the propagated feedback by its max-abs (LFP-MATH.md section 5).
    public var backwardNormalization = false
    /// Also compute the feedback arriving at the input (the LRP-style explanation).
    public var computeInputFeedback = false
    /// Record the feedback arriving at every layer's output.
    public var recordLayerFeedback = false
    /// Measure each connection's contribution from the centre of the activation that feeds it:
    /// `z_ij = (a_i - c) w_ij` with `c = Activation.centre` (0.5 for step and sigmoid, 0 for
    /// the others, which are unchanged), the rest `c * sum_i w_ij` joining the bias as a fixed
    /// reference that receives no feedback (docs/MATH-ACTIVATIONS.md).
    public var centredInputs = false
    /// How feedback crosses a transformer's attention products, softmax and unowned adds
    /// (docs/MATH-MODELS.md section 5).
    public var attentionRules: AttentionRules = .gradient

    /// The two behaviours of the reference implementation's ViT composite.
    public enum AttentionRules: String, Sendable, CaseIterable {
        /// As lfprop computes: the attention products, the softmax and the residual adds carry
        /// the feedback as the gradient does (its AttnLRP function rules never run).
        case gradient
        /// AttnLRP, as lxt's function rules compute when they do run: the epsilon rule on both
        /// attention products with the feedback split evenly between the operands, the softmax
        /// rule `x (R - p sum R)`, proportional shares at the residual adds and at `+ pos_embed`.
        case attnLRP = "attnlrp"
    }

    public init(reduction: Reduction = .sum, backwardNormalization: Bool = false,
                computeInputFeedback: Bool = false, recordLayerFeedback: Bool = false, centredInputs: Bool = false,
                attentionRules: AttentionRules = .gradient) {
        self.reduction = reduction
        self.backwardNormalization = backwardNormalization
        self.computeInputFeedback = computeInputFeedback
        self.recordLayerFeedback = recordLayerFeedback
        self.centredInputs = centredInputs
        self.attentionRules = attentionRules
    }
}

/// Layer-wise Feedback Propagation for one model: its composite resolved once, then a plain
/// reverse loop over the traced layers (recursing into containers).
public struct FeedbackPropagator: Sendable {
    public let composite: Composite
    /// The rule of every leaf layer, in `Sequential.leaves` order (nil where no rule applies).
    public let rules: [Rule?]
    /// The same rules by leaf path (`layers.3`, `layer1.0.conv1`).
    let rulesByPath: [String: Rule]
    public var options: PropagationOptions

    /// Resolves `composite` for `model`; throws when a rule does not fit a layer.
    public init(model: Sequential, composite: Composite = .uniform(.epsilon), options: PropagationOptions = .init()) throws(LFPError) {
        self.composite = composite
        self.rules = try composite.resolve(for: model)
        var byPath: [String: Rule] = [:]
        for ((path, _), rule) in zip(model.leaves, rules) where rule != nil { byPath[path] = rule }
        self.rulesByPath = byPath
        self.options = options
    }

    /// Propagates `feedback` (at the logits) down to every parameter.
    /// - Returns: parameter feedback by name (summed or averaged over the batch), the input
    ///   feedback when requested, and per-layer output feedback when requested.
    public func propagate(model: Sequential, trace: Trace, feedback: Tensor) -> ParameterSignals {
        propagate(model: model, trace: trace, feedback: feedback, parameterScale: 1)
    }

    /// What one backward pass collects.
    struct Collected {
        var parameters: [String: Tensor] = [:]
        var checkedFinite: Set<String> = []
    }

    /// `propagate` with the parameter feedback multiplied by `parameterScale` in the rules'
    /// epilogues (the trainer passes -1 to get the optimizer's direction without another pass).
    func propagate(model: Sequential, trace: Trace, feedback: Tensor, parameterScale: Float) -> ParameterSignals {
        precondition(rules.count == model.leaves.count, "propagator was resolved for another model")
        var collected = Collected()
        var layerFeedback: [Tensor] = options.recordLayerFeedback ? Array(repeating: Tensor(shape: [0]), count: model.layers.count) : []
        // The batch size: rows of the feedback, or rows per step of a spiking network's stacked output.
        let batch = Float(max(1, (feedback.shape.first ?? 1) / trace.timeSteps))
        let scale: Float = (options.reduction == .mean ? 1 / batch : 1) * parameterScale
        let f = backward(model, trace: trace, feedback: feedback, prefix: "", computeInput: options.computeInputFeedback || options.recordLayerFeedback,
                         parameterScale: scale, layerFeedback: &layerFeedback, into: &collected)
        return ParameterSignals(parameters: collected.parameters, input: options.computeInputFeedback ? f : nil,
                                layerOutputs: options.recordLayerFeedback ? layerFeedback : nil, checkedFinite: collected.checkedFinite)
    }

    /// Propagates `feedback` through one sequence, collecting parameter feedback named under
    /// `prefix`; returns the feedback at the sequence's input when `computeInput`.
    /// Takes `feedback` over: the rules compute their quotients in its storage (pass it with
    /// `consume`, or it is copied at the first of them).
    func backward(_ model: Sequential, trace: Trace, feedback: consuming Tensor, prefix: String, computeInput: Bool, parameterScale scale: Float,
                  layerFeedback: inout [Tensor], into collected: inout Collected) -> Tensor {
        precondition(trace.outputs.count == model.layers.count, "trace does not belong to this model")
        var f = consume feedback
        let lowest = model.firstParameterLayer ?? model.layers.count
        let record = !layerFeedback.isEmpty
        var noLayers: [Tensor] = []
        for index in model.layers.indices.reversed() {
            if record { layerFeedback[index] = f }
            if index < lowest && !computeInput { break }
            let layer = model.layers[index]
            let input = trace.inputs[index]
            let needInput = index > lowest || computeInput
            let name = Sequential.join(prefix, model.name(of: index))
            /// Hands the feedback over to the rule, which computes its quotient in place: `collect`
            /// sets `f` to the rule's input feedback; without one (`needInput` false: the lowest
            /// parameter layer) nothing reads `f` again.
            func applyRule(_ map: AffineMap, contributing: Tensor) -> RuleOutput {
                let feedback = takeFeedback()
                return rulesByPath[name]!.apply(map, input: contributing, output: trace.outputs[index], feedback: consume feedback,
                                                needInput: needInput, parameterScale: scale)
            }
            func takeFeedback() -> Tensor {
                defer { f = Tensor(shape: [0]) }
                return f
            }
            /// Stores a rule's parameter feedback (under `module` inside the layer, for attention's
            /// projections) and moves on with its input feedback.
            func collect(_ out: RuleOutput, module: String = "", normalize: Bool = true) {
                let owner = Sequential.join(name, module)
                let (weightName, biasName) = (Sequential.join(owner, "weight"), Sequential.join(owner, "bias"))
                if let fw = out.weightFeedback { collected.parameters[weightName] = fw }
                if let fb = out.biasFeedback { collected.parameters[biasName] = fb }
                if out.weightFeedbackIsFinite { collected.checkedFinite.insert(weightName) }
                if out.biasFeedbackIsFinite { collected.checkedFinite.insert(biasName) }
                if let fi = out.inputFeedback {
                    f = fi
                    if options.backwardNormalization && normalize {
                        let m = f.maxAbs()
                        if m > 0 && m.isFinite { f = f * (1 / m) }
                    }
                }
            }
            switch layer {
            case .linear, .conv2d, .avgPool2d, .adaptiveAvgPool2d:
                let map = AffineMap(layer, inputShape: input.shape)!
                let contributing = options.centredInputs ? Self.centred(input, layer: index, model: model, trace: trace) : input
                collect(applyRule(map, contributing: contributing))
            case .batchNorm(let b):
                // The rule's quotient S = F / stab(y) at the layer's output, then "gradient times
                // input" as the reference does (docs/MATH-MODELS.md section 2): F_in = x ⊙ (BN
                // backward of S), through the batch statistics in training mode; F(gamma) =
                // |gamma| ⊙ sum S xhat, F(beta) = |beta| ⊙ sum S.
                let stats = trace.normalization[index]!
                let s = rulesByPath[name]!.batchNormQuotient(takeFeedback(), output: trace.outputs[index], input: input, norm: b, statistics: stats)
                let (back, dGamma, dBeta) = b.backward(s, input: input, stats, needInput: needInput, timesInput: true)
                collect(Self.normalizationOutput(back: back, dGamma: dGamma, dBeta: dBeta, gamma: b.weight, beta: b.bias, input: nil, scale: scale))
            case .sequential(let s):
                f = backward(s, trace: trace.children[index]![0], feedback: takeFeedback(), prefix: name, computeInput: needInput,
                             parameterScale: scale, layerFeedback: &noLayers, into: &collected)
            case .residual(let r):
                // The activation after the add passes feedback unchanged; the add splits it in
                // proportion to each operand's share of the sum (ResNets), or copies it to both as
                // the gradient does (ViTs), or shares it as AttnLRP (docs/MATH-MODELS.md section 3).
                let children = trace.children[index]!
                let sum = trace.residualSums[index]!
                let sideInput = r.shortcut == nil ? input : children[1].output
                let (toMain, toSide): (Tensor, Tensor)
                if r.splitsFeedback {
                    (toMain, toSide) = Rule.splitSum(takeFeedback(), sum: sum, children[0].output, sideInput, rule: composite.defaultRule)
                } else if options.attentionRules == .attnLRP {
                    (toMain, toSide) = Rule.proportionalShares(takeFeedback(), children[0].output, sideInput)
                } else {
                    // Both branches share one buffer: the main branch's first in-place quotient copies it.
                    let shared = takeFeedback()
                    (toMain, toSide) = (shared, shared)
                }
                let fromMain = backward(r.main, trace: children[0], feedback: consume toMain, prefix: name, computeInput: needInput,
                                        parameterScale: scale, layerFeedback: &noLayers, into: &collected)
                let fromSide: Tensor
                if let shortcut = r.shortcut {
                    fromSide = backward(shortcut, trace: children[1], feedback: consume toSide, prefix: name, computeInput: needInput,
                                        parameterScale: scale, layerFeedback: &noLayers, into: &collected)
                } else {
                    fromSide = toSide
                }
                if needInput { f = fromMain + fromSide }
            case .layerNorm(let l):
                // As BatchNorm, per token: the rule's quotient, then LayerNorm's backward (through
                // the row statistics) times the input; F(gamma) = |gamma| sum S xhat, F(beta) = |beta| sum S.
                let stats = trace.layerNormalization[index]!
                let s = rulesByPath[name]!.normalizationQuotient(takeFeedback(), output: trace.outputs[index])
                let (back, dGamma, dBeta) = l.backward(s, input: input, stats, needInput: needInput)
                collect(Self.normalizationOutput(back: back, dGamma: dGamma, dBeta: dBeta, gamma: l.weight, beta: l.bias, input: input, scale: scale))
            case .attention(let a):
                // The rule on the output projection and on the qkv projection; between them the
                // attention products and the softmax pass the feedback as the gradient (the
                // reference's behaviour, VIT-NOTES.md section e).
                let record = trace.attention[index]!
                let rule = rulesByPath[name]!
                let feedback = takeFeedback()
                var projOut = rule.apply(AffineMap(.linear(a.proj), inputShape: record.context.shape)!, input: record.context,
                                         output: trace.outputs[index], feedback: consume feedback, needInput: true, parameterScale: scale)
                let atContext = projOut.inputFeedback!
                projOut.inputFeedback = nil
                collect(projOut, module: "proj")
                let dqkv = options.attentionRules == .attnLRP ? a.attnLRPBackward(atContext, record: record)
                                                                : a.innerBackward(atContext, record: record)
                collect(rule.apply(AffineMap(.linear(a.qkv), inputShape: input.shape)!, input: input, output: record.qkv,
                                   feedback: consume dqkv, needInput: needInput, parameterScale: scale), module: "qkv")
            case .tokens(let t):
                // The class token and position embeddings receive no feedback (no rule owns them in
                // the reference); the patch tokens' feedback returns to the patch grid.
                if needInput {
                    if options.attentionRules == .attnLRP {
                        // `tokens + pos_embed` shares the feedback in proportion; the positions' share is dropped.
                        let tokens = t.withClassToken(input)
                        f = Rule.proportionalShares(f, tokens, t.positions(batch: input.shape[0])).0
                    }
                    f = t.imageLayout(TokenEmbedding.dropClassToken(f), like: input)
                }
            case .classToken:
                f = TokenEmbedding.atFirstToken(f, shape: input.shape)
            case .maxPool2d(let p):
                if needInput {
                    f = Pooling.maxBackward(f, argmax: trace.maxPoolArgmax[index]!, inputShape: input.shape,
                                            geometry: p.geometry(input: input.shape))
                }
            case .flatten:
                f.reshape(input.shape)
            case .dropout:
                // Feedback flows only through the kept units, without a second 1/(1-p) rescaling
                // (the activation was already rescaled in the forward pass).
                if let mask = trace.dropoutMasks[index] { f = f * Tensor(shape: f.shape, storage: mask) }
            case .activation, .gaussianNoise:
                break  // identity: no derivative is taken; noise only moved the forward values
            case .spiking(let s):
                // The rule through time at the membrane gives the signal `c` at the currents, then the
                // synapse's maps (LFP-MATH.md section 6). Backward normalisation acts per step.
                let record = trace.spiking[index]!
                let steps = trace.timeSteps
                let c = s.currentFeedback(f, input: input, record: record, steps: steps, rule: rulesByPath[name]!)
                collect(s.feedbackMaps(c, input: input, record: record, steps: steps, needInput: needInput, scale: scale), normalize: false)
                if needInput && options.backwardNormalization { Spiking.normalizePerStep(&f, record.staticInput ? 1 : steps) }
            }
        }
        return f
    }

    /// A normalisation's LFP output from its gradient-style backward of `S`: `F(gamma) =
    /// |gamma| ⊙ dGamma`, `F(beta) = |beta| ⊙ dBeta` (times `scale`), `F_in = back ⊙ x`
    /// (`input` nil: `back` is already multiplied by the input, as BatchNorm's backward does
    /// in its last pass).
    static func normalizationOutput(back: Tensor?, dGamma: Tensor, dBeta: Tensor, gamma: Tensor, beta: Tensor, input: Tensor?,
                                    scale: Float) -> RuleOutput {
        var out = RuleOutput()
        var (fGamma, fBeta) = (dGamma, dBeta)
        out.weightFeedbackIsFinite = fGamma.multiplyByMagnitude(of: gamma, scale: scale)
        out.biasFeedbackIsFinite = fBeta.multiplyByMagnitude(of: beta, scale: scale)
        (out.weightFeedback, out.biasFeedback) = (fGamma, fBeta)
        if var back {
            if let input { back.multiplyElementwise(by: input) }
            out.inputFeedback = back
        }
        return out
    }

    /// The input of affine layer `index` measured from the centre `c` of the activation that
    /// produced it (through max-pooling, flattening, noise and dropout, whose kept units carry
    /// `c / (1 - p)`): `a - c`. Inputs not produced by an activation with a non-zero centre
    /// are returned unchanged.
    static func centred(_ input: Tensor, layer index: Int, model: Sequential, trace: Trace) -> Tensor {
        var centre: Float = 0
        var dropouts: [(index: Int, scale: Float)] = []
        search: for below in stride(from: index - 1, through: 0, by: -1) {
            switch model.layers[below] {
            case .activation(let a): centre = a.centre; break search
            case .maxPool2d, .flatten, .gaussianNoise: continue
            case .dropout(let p): if trace.dropoutMasks[below] != nil { dropouts.append((below, 1 / (1 - p))) }
            default: break search
            }
        }
        guard centre != 0 else { return input }
        var shifted = input
        shifted.storage.withUnsafeMutableBufferPointer { pa in
            if dropouts.isEmpty {
                for i in pa.indices { pa[i] -= centre }
            } else {
                var reference = [Float](repeating: centre, count: pa.count)
                for (d, scale) in dropouts {
                    let mask = trace.dropoutMasks[d]!
                    for i in reference.indices { reference[i] *= mask[i] * scale }
                }
                for i in pa.indices { pa[i] -= reference[i] }
            }
        }
        return shifted
    }
}
