import LFPData
import LFPTensor

/// Model checkpoints in safetensors, with PyTorch's names and layouts (Linear `[out, in]`,
/// Conv2d `[out, in, kh, kw]`), written atomically.
public enum Checkpoint {
    /// Errors restoring a checkpoint into a model.
    public enum Error: Swift.Error, CustomStringConvertible, Equatable {
        case missing(file: String, names: [String])
        case unexpected(file: String, names: [String])
        case shapeMismatch(file: String, name: String, expected: [Int], found: [Int])
        case nonFinite(file: String, name: String)
        /// The run state of a training checkpoint is missing, undecodable or out of range.
        case runState(file: String, problem: String)
        /// The classifier head's shape differs (another class count) and was not to be replaced.
        case headMismatch(file: String, name: String, expected: [Int], found: [Int])

        /// The first names, and how many more (a checkpoint of another model misses hundreds).
        static func list(_ names: [String]) -> String {
            names.count <= 4 ? names.joined(separator: ", ") : names.prefix(3).joined(separator: ", ") + " and \(names.count - 3) more"
        }

        /// One printable line (tensor names come from the file and may hold control characters).
        public var description: String { DataError.oneLine(text) }

        private var text: String {
            switch self {
            case .missing(let f, let n): "\(f): missing tensors \(Self.list(n))"
            case .unexpected(let f, let n): "\(f): unexpected tensors \(Self.list(n)) (not parameters of this model)"
            case .shapeMismatch(let f, let n, let e, let g): "\(f): tensor \(n) has shape \(g), the model needs \(e)"
            case .nonFinite(let f, let n): "\(f): tensor \(n) holds NaN or infinite values"
            case .runState(let f, let problem): "\(f): \(problem); cannot resume"
            case .headMismatch(let f, let n, let e, let g):
                "\(f): the classifier head \(n) has shape \(g) but the model needs \(e) (another number of classes); "
                    + "pass --classes N to train a new head of N classes on the loaded body"
            }
        }
    }

    /// Writes every parameter and buffer of `model` (its state dict) and `metadata` to `path`
    /// atomically.
    public static func save(_ model: Sequential, metadata: [String: String] = [:], to path: String) throws {
        let records = model.stateDict.map { TensorRecord(name: $0.name, shape: $0.value.shape, values: $0.value.storage) }
        try SafeTensors.write(records, metadata: metadata, to: path)
    }

    /// Reads a checkpoint's metadata.
    public static func metadata(at path: String) throws -> [String: String] {
        try SafeTensors.read(path).metadata
    }

    /// Loads the state dict stored at `path` (parameters and buffers) into `model`. For models
    /// with default names, names may carry the `layers.` prefix or not (`0.weight`, as saved from
    /// a PyTorch `nn.Sequential`). Every parameter and buffer must be present with the right
    /// shape; extra tensors are an error unless `allowUnexpected`.
    public static func restore(_ model: inout Sequential, from path: String, allowUnexpected: Bool = false) throws {
        let (byName, expected) = try matched(model, path: path, allowUnexpected: allowUnexpected)
        for (name, value) in expected {
            let record = byName[name]!
            guard record.shape == value.shape else { throw Error.shapeMismatch(file: path, name: name, expected: value.shape, found: record.shape) }
            guard record.values.allSatisfy({ $0.isFinite }) else { throw Error.nonFinite(file: path, name: name) }
            model.setParameter(name, Tensor(shape: record.shape, storage: record.values))
        }
    }

    /// The file's tensors by the model's names (Hugging Face ViT names mapped; for default-named
    /// models `0.weight` read as `layers.0.weight`) and the model's state dict, after checking
    /// that nothing is missing and, unless `allowUnexpected`, nothing is extra.
    private static func matched(_ model: Sequential, path: String, allowUnexpected: Bool) throws
        -> (byName: [String: TensorRecord], expected: [(name: String, value: Tensor)]) {
        var (tensors, _) = try SafeTensors.read(path)
        if HuggingFaceViT.matches(tensors) { tensors = try HuggingFaceViT.timmNames(tensors, file: path) }
        var byName: [String: TensorRecord] = [:]
        for (name, record) in tensors {
            byName[model.childNames == nil && !name.hasPrefix("layers.") ? "layers.\(name)" : name] = record
        }
        let expected = model.stateDict
        let missing = expected.map(\.name).filter { byName[$0] == nil }
        if !missing.isEmpty { throw Error.missing(file: path, names: missing) }
        let extra = Set(byName.keys).subtracting(expected.map(\.name)).sorted()
        if !extra.isEmpty && !allowUnexpected { throw Error.unexpected(file: path, names: extra) }
        return (byName, expected)
    }

    /// The parameters of a model's classifier head: those of its last Linear layer (`fc` in
    /// ResNets, `head` in ViTs, the last `layers.<i>` of a sequential model).
    public static func headParameterNames(of model: Sequential) -> [String] {
        guard let (path, layer) = model.leaves.last(where: { $0.layer.kind == .linear }) else { return [] }
        return layer.parameters.map { path + "." + $0.name }
    }

    /// Initialises `model` from a pretrained state dict (fine-tuning). Every tensor of the model
    /// must be in the file with its shape, except, with `replaceHead`, the classifier head when
    /// its shape differs (another class count): it keeps its fresh initialisation, as the
    /// reference replaces the last layer. Extra tensors are an error unless `allowUnexpected`.
    /// - Returns: the names left at their initialisation (the replaced head), empty otherwise.
    @discardableResult
    public static func initialize(_ model: inout Sequential, from path: String, replaceHead: Bool, allowUnexpected: Bool = false) throws -> [String] {
        let (byName, expected) = try matched(model, path: path, allowUnexpected: allowUnexpected)
        let head = Set(headParameterNames(of: model))
        var kept: [String] = []
        for (name, value) in expected {
            let record = byName[name]!
            guard record.shape == value.shape else {
                if head.contains(name) {
                    if replaceHead { kept.append(name); continue }
                    throw Error.headMismatch(file: path, name: name, expected: value.shape, found: record.shape)
                }
                throw Error.shapeMismatch(file: path, name: name, expected: value.shape, found: record.shape)
            }
            guard record.values.allSatisfy({ $0.isFinite }) else { throw Error.nonFinite(file: path, name: name) }
            model.setParameter(name, Tensor(shape: record.shape, storage: record.values))
        }
        return kept
    }
}
