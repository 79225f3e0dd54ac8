// `import LFP` gives the whole library: tensors (LFPTensor) and data (LFPData) included.
@_exported import LFPData
@_exported import LFPTensor

extension Dataset: BatchSource {
    public func fill(indices: ArraySlice<Int>, features: inout [Float], labels: inout [Int]) {
        batch(indices: indices, into: &features, labels: &labels)
    }
}
