import LFPData

/// Hugging Face ViT state dicts (`ViTForImageClassification`, transformers 4.x or 5.x names)
/// onto timm's layout, the one `VisionTransformer` uses: renamed, with the separate query, key
/// and value projections concatenated into `qkv` (rows q, k, v). `Checkpoint` applies it when a
/// file holds `vit.embeddings.cls_token`. The map: docs/MATH-MODELS.md section 5.
public enum HuggingFaceViT {
    /// Whether `tensors` look like a Hugging Face ViT state dict.
    public static func matches(_ tensors: [String: TensorRecord]) -> Bool { tensors["vit.embeddings.cls_token"] != nil }

    /// The tensors under timm's names; names it does not know are kept as they are (so that a
    /// restore reports them as unexpected).
    public static func timmNames(_ tensors: [String: TensorRecord], file: String) throws(Checkpoint.Error) -> [String: TensorRecord] {
        var result: [String: TensorRecord] = [:]
        var qkv: [String: [String: TensorRecord]] = [:]  // "blocks.i.attn.qkv.weight" -> q/k/v parts
        let fixed = ["vit.embeddings.cls_token": "cls_token", "vit.embeddings.position_embeddings": "pos_embed",
                     "vit.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
                     "vit.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
                     "vit.layernorm.weight": "norm.weight", "vit.layernorm.bias": "norm.bias",
                     "classifier.weight": "head.weight", "classifier.bias": "head.bias"]
        // Per layer, (HF suffix, timm suffix); q/k/v parts are marked with their slot.
        let layerNames: [(String, String)] = [
            ("layernorm_before", "norm1"), ("layernorm_after", "norm2"),
            ("attention.o_proj", "attn.proj"), ("attention.output.dense", "attn.proj"),
            ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"), ("intermediate.dense", "mlp.fc1"), ("output.dense", "mlp.fc2"),
        ]
        let parts: [(String, String)] = [
            ("attention.q_proj", "q"), ("attention.k_proj", "k"), ("attention.v_proj", "v"),
            ("attention.attention.query", "q"), ("attention.attention.key", "k"), ("attention.attention.value", "v"),
        ]
        for (name, record) in tensors {
            if let mapped = fixed[name] { result[mapped] = TensorRecord(name: mapped, shape: record.shape, values: record.values); continue }
            var layerPrefix: String?
            for p in ["vit.layers.", "vit.encoder.layer."] where name.hasPrefix(p) { layerPrefix = p }
            guard let prefix = layerPrefix else { result[name] = record; continue }
            let rest = name.dropFirst(prefix.count)
            guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]) else { result[name] = record; continue }
            let tail = String(rest[rest.index(after: dot)...])  // e.g. "attention.q_proj.weight"
            let kind = tail.hasSuffix(".weight") ? "weight" : (tail.hasSuffix(".bias") ? "bias" : "")
            let module = kind.isEmpty ? tail : String(tail.dropLast(kind.count + 1))
            if let (_, timm) = layerNames.first(where: { $0.0 == module }) {
                let mapped = "blocks.\(layer).\(timm).\(kind)"
                result[mapped] = TensorRecord(name: mapped, shape: record.shape, values: record.values)
            } else if let (_, slot) = parts.first(where: { $0.0 == module }) {
                qkv["blocks.\(layer).attn.qkv.\(kind)", default: [:]][slot] = record
            } else {
                result[name] = record
            }
        }
        for (name, pieces) in qkv.sorted(by: { $0.key < $1.key }) {
            guard let q = pieces["q"], let k = pieces["k"], let v = pieces["v"] else {
                throw .missing(file: file, names: ["query, key and value of \(name) (found \(pieces.keys.sorted().joined(separator: ", ")))"])
            }
            guard q.shape == k.shape && k.shape == v.shape, let rows = q.shape.first else {
                throw .shapeMismatch(file: file, name: name, expected: q.shape, found: k.shape == q.shape ? v.shape : k.shape)
            }
            let shape = [3 * rows] + q.shape.dropFirst()
            result[name] = TensorRecord(name: name, shape: shape, values: q.values + k.values + v.values)
        }
        return result
    }
}
