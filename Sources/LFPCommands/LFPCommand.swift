import ArgumentParser

/// The `lfp` command line.
public struct LFPCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "lfp",
        abstract: "Train and study neural networks with Layer-wise Feedback Propagation (LFP).",
        subcommands: [Train.self, Evaluate.self, DataCommand.self, Doctor.self, Bench.self, ExperimentCommand.self, Explain.self, Propagate.self],
        defaultSubcommand: nil
    )

    public init() {}
}
