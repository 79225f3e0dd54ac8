import Foundation

/// Selects layers of a model for a rule.
public enum LayerSelector: Sendable, Equatable, CustomStringConvertible {
    /// Every layer of this kind (`.linear` = dense, `.conv2d`, `.avgPool2d`).
    case kind(LayerKind)
    /// The layer at this index.
    case index(Int)
    /// The layers whose index is in the range.
    case range(ClosedRange<Int>)
    /// The layer with this dotted path (`layers.3`, `layer1.0.conv1`), or `<index>`.
    case name(String)
    /// The first affine layer (the one next to the input).
    case first
    /// The last affine layer (the one producing the logits).
    case last

    public var description: String {
        switch self {
        case .kind(let k): "kind \(k)"
        case .index(let i): "index \(i)"
        case .range(let r): "indices \(r.lowerBound)...\(r.upperBound)"
        case .name(let n): "name \(n)"
        case .first: "first layer"
        case .last: "last layer"
        }
    }

    func matches(index: Int, path: String, layer: Layer, firstAffine: Int?, lastAffine: Int?) -> Bool {
        switch self {
        case .kind(let k): return layer.kind == k
        case .index(let i): return i == index
        case .range(let r): return r.contains(index)
        case .name(let n): return n == path || n == "layers.\(index)" || n == "\(index)"
        case .first: return index == firstAffine
        case .last: return index == lastAffine
        }
    }

    /// Whether this selector names layers explicitly (so a non-affine match is an error)
    /// rather than by kind.
    var isExplicit: Bool {
        switch self {
        case .index, .name: true
        default: false
        }
    }
}

/// Maps every affine layer of a model to a rule: a default rule plus ordered overrides
/// (the last matching override wins). Resolved once per model with `resolve(for:)`.
public struct Composite: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var defaultRule: Rule
    public var overrides: [(selector: LayerSelector, rule: Rule)]

    public init(name: String? = nil, default rule: Rule, overrides: [(selector: LayerSelector, rule: Rule)] = []) {
        self.name = name ?? rule.description
        self.defaultRule = rule
        self.overrides = overrides
    }

    public static func == (a: Composite, b: Composite) -> Bool {
        a.name == b.name && a.defaultRule == b.defaultRule && a.overrides.count == b.overrides.count
            && zip(a.overrides, b.overrides).allSatisfy { $0.selector == $1.selector && $0.rule == $1.rule }
    }

    public var description: String { name }

    /// One rule everywhere.
    public static func uniform(_ rule: Rule) -> Composite { Composite(default: rule) }

    /// The preset names accepted by `preset(named:)`.
    public static let presetNames = [
        "epsilon", "zero", "alpha-beta", "zplus-zminus",
        "zplus-zminus-dense+epsilon-conv", "zplus-zminus-dense+alpha-beta-conv",
    ]

    /// A preset composite. The mixed presets (the paper's VGG-16 experiment) use z+z- on dense
    /// layers and the other rule on convolutions and average pooling.
    public static func preset(named name: String) throws(LFPError) -> Composite {
        switch name.lowercased() {
        case "epsilon": return Composite(name: "epsilon", default: .epsilon)
        case "zero": return Composite(name: "zero", default: .zero)
        case "alpha-beta": return Composite(name: "alpha-beta", default: try .checkedAlphaBeta())
        case "zplus-zminus": return Composite(name: "zplus-zminus", default: .zPlusZMinus)
        case "zplus-zminus-dense+epsilon-conv":
            return Composite(name: "zplus-zminus-dense+epsilon-conv", default: .epsilon,
                             overrides: [(.kind(.linear), .zPlusZMinus)])
        case "zplus-zminus-dense+alpha-beta-conv":
            return Composite(name: "zplus-zminus-dense+alpha-beta-conv", default: try .checkedAlphaBeta(),
                             overrides: [(.kind(.linear), .zPlusZMinus)])
        default:
            if name.contains(",") { return try parseRuleList(name) }
            // A single rule with parameters, e.g. "epsilon:1e-4" or "alpha-beta:3:2".
            if let rule = try? Rule.parse(name) { return Composite(name: name, default: rule) }
            throw .invalidComposite("unknown composite '\(name)'; valid: \(presetNames.joined(separator: ", ")) (or a rule such as epsilon:1e-4, "
                + "or RULE,SELECTOR=RULE,... such as threshold-epsilon,last=scaled-epsilon)")
        }
    }

    /// Parses `RULE,SELECTOR=RULE,...`: a default rule, then overrides in order (the last match
    /// wins). Selectors: `first`, `last`, `dense`, `conv`, `avgpool`, a layer index `N` or a range
    /// `N-M` of indices. Example: `threshold-epsilon:0.25,last=scaled-epsilon:0.25`.
    static func parseRuleList(_ text: String) throws(LFPError) -> Composite {
        let items = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        let defaultRule: Rule
        do { defaultRule = try Rule.parse(items[0]) } catch { throw .invalidComposite("composite '\(text)': \(error)") }
        var overrides: [(selector: LayerSelector, rule: Rule)] = []
        for item in items.dropFirst() {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else {
                throw .invalidComposite("composite '\(text)': '\(item)' is not SELECTOR=RULE (selectors: first, last, dense, conv, avgpool, N, N-M)")
            }
            let selector: LayerSelector
            switch parts[0].lowercased() {
            case "first": selector = .first
            case "last": selector = .last
            case "dense", "linear": selector = .kind(.linear)
            case "conv", "conv2d": selector = .kind(.conv2d)
            case "avgpool", "avgpool2d": selector = .kind(.avgPool2d)
            case let key:
                let bounds = key.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
                if bounds.count == 1, let i = bounds[0], i >= 0 {
                    selector = .index(i)
                } else if bounds.count == 2, let lo = bounds[0], let hi = bounds[1], 0 <= lo, lo <= hi {
                    selector = .range(lo...hi)
                } else {
                    throw .invalidComposite("composite '\(text)': unknown layer selector '\(parts[0])' (first, last, dense, conv, avgpool, N, N-M)")
                }
            }
            do { overrides.append((selector, try Rule.parse(parts[1]))) } catch { throw .invalidComposite("composite '\(text)': \(error)") }
        }
        return Composite(name: text, default: defaultRule, overrides: overrides)
    }

    /// The rule of every leaf layer (nil for layers that are not affine), in `Sequential.leaves`
    /// order (for a flat model: by layer index), checked against the model. Indices and ranges
    /// count leaves; names match a leaf's dotted path (`layers.3`, `layer1.0.conv1`) or its
    /// index. An override that names a layer explicitly (index or name) but hits a layer no rule
    /// applies to, or selects nothing, is an error.
    public func resolve(for model: Sequential) throws(LFPError) -> [Rule?] {
        let leaves = model.leaves
        let affine = leaves.indices.filter { leaves[$0].layer.isAffine }
        var rules: [Rule?] = leaves.map { $0.layer.isAffine ? defaultRule : nil }
        for (selector, rule) in overrides {
            var hits = 0
            for (index, (path, layer)) in leaves.enumerated()
            where selector.matches(index: index, path: path, layer: layer, firstAffine: affine.first, lastAffine: affine.last) {
                guard layer.isAffine else {
                    if selector.isExplicit || (selector == .kind(layer.kind)) {
                        throw .incompatibleRule("rule \(rule) cannot apply to layer \(index) \(path) (\(layer)): rules apply to Linear, Conv2d, BatchNorm and the average pools")
                    }
                    continue
                }
                rules[index] = rule
                hits += 1
            }
            if hits == 0 && selector.isExplicit {
                throw .invalidComposite("composite \(name): \(selector) selects no layer of the model")
            }
        }
        for (index, (path, layer)) in leaves.enumerated() where layer.kind == .spiking {
            if let rule = rules[index], !SpikingLayer.accepts(rule) {
                throw .incompatibleRule("\(rule) is not defined for spiking layers (layer \(index) \(path)); use epsilon, zero or zplus-zminus")
            }
        }
        return rules
    }
}
