import LFPTensor

/// A residual block: `activation(main(x) + shortcut(x))`, the shortcut the identity when nil.
///
/// Parameter names follow torchvision: the main branch's children are named inside the block
/// (`conv1`, `bn1`, ...) and the shortcut's under their own prefix (`downsample.0`, ...).
public struct Residual: Sendable, Equatable {
    public var main: Sequential
    public var shortcut: Sequential?
    /// Applied after the add (ReLU in ResNets); nil for none.
    public var activation: Activation?
    /// How LFP passes the feedback of the add to its operands: split in proportion to each
    /// operand's share (the reference's `Sum` module in its ResNets), or copied to both as the
    /// gradient is (the reference's plain tensor adds in its Vision Transformers, which no rule
    /// owns). docs/MATH-MODELS.md section 3.
    public var splitsFeedback: Bool

    public init(main: Sequential, shortcut: Sequential? = nil, activation: Activation? = .relu, splitsFeedback: Bool = true) {
        self.main = main
        self.shortcut = shortcut
        self.activation = activation
        self.splitsFeedback = splitsFeedback
    }
}
