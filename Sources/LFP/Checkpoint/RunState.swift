import Foundation
import LFPData

/// The state a training run checkpoints besides the weights and the optimiser, so that
/// `lfp train --resume` continues exactly where it stopped. It is kept as JSON in the metadata of
/// the run's `state.safetensors` under ``RunState/metadataKey``.
public struct RunState: Sendable, Codable {
    /// The epoch in progress (1-based).
    public var epoch = 1
    /// How far the epoch in progress has come.
    public var progress = Fit.EpochProgress()
    /// The metrics of the finished epochs.
    public var history: [EpochMetrics] = []
    public var secondsSoFar = 0.0
    public var epochSecondsSoFar = 0.0
    /// Per-channel normalisation statistics of the training set, fixed at the start of the run.
    public var normalizationMean: [Float] = []
    public var normalizationStd: [Float] = []

    public init() {}

    /// The metadata key that holds the run state.
    public static let metadataKey = "lfp.run_state"

    /// The state as metadata for ``SafeTensors/write(_:metadata:to:)``.
    public func metadata() throws -> [String: String] {
        [Self.metadataKey: String(decoding: try JSONEncoder().encode(self), as: UTF8.self)]
    }

    /// Decodes and range-checks the run state in the metadata of `file`. Everything in it comes
    /// from a file, so nothing is trusted: a missing or undecodable state and values out of range
    /// (an epoch below 1, negative counts, non-finite times, statistics of different lengths)
    /// are errors naming the file, never traps later in training.
    public static func decode(metadata: [String: String], file: String) throws(Checkpoint.Error) -> RunState {
        guard let json = metadata[metadataKey] else { throw .runState(file: file, problem: "no run state in its metadata") }
        let state: RunState
        do { state = try JSONDecoder().decode(RunState.self, from: Data(json.utf8)) } catch {
            throw .runState(file: file, problem: "its run state is not valid (\(error.localizedDescription))")
        }
        let p = state.progress
        guard state.epoch >= 1, p.nextBatch >= 0, p.seen >= 0, p.correct >= 0, p.correct <= p.seen,
              p.objectiveSum.isFinite, state.secondsSoFar.isFinite, state.epochSecondsSoFar.isFinite else {
            throw .runState(file: file, problem: "run state out of range (epoch \(state.epoch), next batch \(p.nextBatch), "
                + "\(p.correct) correct of \(p.seen) seen)")
        }
        guard state.history.count < state.epoch else {
            throw .runState(file: file, problem: "run state out of range (\(state.history.count) finished epochs before epoch \(state.epoch))")
        }
        guard state.normalizationMean.count == state.normalizationStd.count,
              state.normalizationMean.allSatisfy(\.isFinite), state.normalizationStd.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw .runState(file: file, problem: "run state holds invalid normalisation statistics "
                + "(\(state.normalizationMean.count) means, \(state.normalizationStd.count) deviations)")
        }
        return state
    }
}
