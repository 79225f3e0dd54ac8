// Fuzz target `checkpoint`: what `lfp train --resume DIR` and `lfp evaluate` read from a
// checkpoint file: the safetensors file itself, the run state that `lfp train` keeps as JSON in
// its metadata (`lfp.run_state`, decoded and range-checked by `RunState.decode` as `lfp train
// --resume` does), the normalisation statistics in it (applied to a dataset), and
// `Checkpoint.restore` of the tensors into a small model (names, shapes, finiteness).
import Foundation
import LFP
import LFPData
import LFPTensor

private let template: Sequential = {
    var rng = SeededRandom(seed: 1)
    return Sequential([
        .linear(Linear(inFeatures: 4, outFeatures: 3, rng: &rng)),
        .activation(.relu),
        .linear(Linear(inFeatures: 3, outFeatures: 2, bias: false, rng: &rng)),
    ])
}()

private let images: Dataset = {
    try! Dataset(features: (0..<8).map { Float($0) / 8 }, labels: [0, 1], sampleShape: [1, 2, 2], classCount: 2, name: "fuzz")
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCheckpoint(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let path = scratchFile("state.safetensors", input)
    let metadata: [String: String]
    do {
        metadata = try Checkpoint.metadata(at: path)
    } catch let error as DataError {
        checkRejection(error, file: path)
        return 0
    } catch {
        fatalError("contract: Checkpoint.metadata threw \(type(of: error)): \(error)")
    }
    do throws(Checkpoint.Error) {
        let state = try RunState.decode(metadata: metadata, file: path)
        guard state.epoch >= 1, state.progress.nextBatch >= 0, state.progress.correct <= state.progress.seen else {
            fatalError("invariant: RunState.decode accepted a state out of range")
        }
        _ = state.progress.objective + state.progress.accuracy
        do {
            // Extreme statistics may give non-finite features, which training reports as a numerical
            // fault at its first step; here only the shape must hold.
            let normalized = try images.normalized(mean: state.normalizationMean, std: state.normalizationStd)
            guard normalized.features.count == images.features.count else { fatalError("invariant: normalisation changed the size") }
        } catch {
            guard !error.description.contains(where: { $0.isNewline }) else { fatalError("contract: \(error)") }
        }
    } catch {
        checkCheckpointError(error, file: path)
    }
    var model = template
    do {
        try Checkpoint.restore(&model, from: path, allowUnexpected: size % 2 == 0)
        for (name, value) in model.namedParameters where !value.storage.allSatisfy({ $0.isFinite }) {
            fatalError("invariant: restored non-finite values into \(name)")
        }
    } catch let error as DataError {
        checkRejection(error, file: path)
    } catch let error as Checkpoint.Error {
        checkCheckpointError(error, file: path)
    } catch {
        fatalError("contract: Checkpoint.restore threw \(type(of: error)): \(error)")
    }
    return 0
}

/// A `Checkpoint.Error` must be one printable line naming the file.
private func checkCheckpointError(_ error: Checkpoint.Error, file path: String) {
    let text = error.description
    guard text.contains(path), !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }),
          !text.contains(where: { $0.isNewline }) else { fatalError("contract: \(text.debugDescription)") }
}
