import LFPTensor

/// A leaky integrate-and-fire neuron (LFP-MATH.md section 6), with the reset delayed by one
/// step as in snnTorch's `Leaky(reset_delay=True)`:
///
///     r[t] = H(U[t-1] - theta)                               reset, no signal through it
///     U[t] = beta * U[t-1] + I[t] - theta * r[t]               (.subtract, the default)
///     U[t] = beta * U[t-1] * (1 - r[t]) + I[t]                 (.zero)
///     S[t] = H(U[t] - theta),   H(x) = 1 if x > 0 else 0
///
/// with `U = 0` before the first step. A spike at step t is therefore reset at step t+1.
/// The neuron is a small configuration value; its state (the membrane) is a separate value
/// owned by the caller (``LIFNeuron/State``), reset by starting a new one for every batch.
public struct LIFNeuron: Sendable, Equatable, CustomStringConvertible {
    /// How the membrane is reset after a spike.
    public enum Reset: String, Sendable, Equatable, CaseIterable {
        /// Subtract the threshold (snnTorch's default).
        case subtract
        /// Set the decayed previous membrane to zero: `U[t] = beta U[t-1] (1 - r[t]) + I[t]`.
        case zero
    }

    /// The membrane state of a population of LIF neurons: `U[t-1]` before a step, `U[t]` after.
    public struct State: Sendable, Equatable {
        /// The membrane potential of every neuron.
        public var membrane: Tensor

        /// The resting state (`U = 0`) for neurons of the given shape (batch included).
        public init(shape: [Int]) { membrane = Tensor(shape: shape) }

        /// A state with the given membrane.
        public init(membrane: Tensor) { self.membrane = membrane }
    }

    /// Membrane decay `beta` (snnTorch's `beta`), in `[0, 1]`.
    public var beta: Float
    /// Firing threshold `theta`.
    public var threshold: Float
    /// Reset mechanism.
    public var reset: Reset

    /// A neuron with decay `beta` (default 0.9), threshold (default 1) and reset mechanism.
    public init(beta: Float = 0.9, threshold: Float = 1, reset: Reset = .subtract) {
        self.beta = beta
        self.threshold = threshold
        self.reset = reset
    }

    public var description: String { "LIF(beta: \(beta), threshold: \(threshold), reset: \(reset.rawValue))" }

    /// The Heaviside step `H(x) = 1 if x > 0 else 0`.
    @inlinable public static func heaviside(_ x: Float) -> Float { x > 0 ? 1 : 0 }

    /// The reset `r[t] = H(U[t-1] - theta)` caused by the previous membrane.
    @inlinable public func resetSignal(previous u: Float) -> Float { LIFNeuron.heaviside(u - threshold) }

    /// The decay factor of the previous membrane at a step: `beta` for `.subtract`,
    /// `beta (1 - r[t])` for `.zero`. This is `dU[t]/dU[t-1]` with the reset detached.
    @inlinable public func effectiveDecay(previous u: Float) -> Float {
        reset == .subtract ? beta : beta * (1 - resetSignal(previous: u))
    }

    /// `U[t]` from `U[t-1]` and `I[t]` (LFP-MATH.md section 6).
    @inlinable public func membrane(previous u: Float, current i: Float) -> Float {
        let r = resetSignal(previous: u)
        switch reset {
        case .subtract: return beta * u + i - threshold * r
        case .zero: return beta * u * (1 - r) + i
        }
    }

    /// One time step for a population: reads `U[t-1]` from `state`, stores `U[t]` there and
    /// returns the spikes `S[t]` (same shape as `current`).
    public func step(_ current: Tensor, state: inout State) -> Tensor {
        precondition(current.shape == state.membrane.shape,
                     "LIF current \(current.shape) does not match the state \(state.membrane.shape)")
        var spikes = Tensor(shape: current.shape)
        let theta = threshold
        current.storage.withUnsafeBufferPointer { pi in
            state.membrane.storage.withUnsafeMutableBufferPointer { pu in
                spikes.storage.withUnsafeMutableBufferPointer { ps in
                    for j in pi.indices {
                        let u = membrane(previous: pu[j], current: pi[j])
                        pu[j] = u
                        ps[j] = LIFNeuron.heaviside(u - theta)
                    }
                }
            }
        }
        return spikes
    }

    /// Runs `steps` time steps over time-major stacked currents `[T * N, ...]` (step t occupies
    /// the t-th block of `current.count / steps` elements) from the resting state.
    /// - Parameter spike: the spike function applied to `U - theta` (`H` in a real network; a
    ///   smooth step only in tests of the gradient baseline). The reset always uses `H`.
    /// - Returns: membranes `U[t]` and spikes `S[t]`, stacked like the currents.
    func run(currents: Tensor, steps: Int, spike: SpikeFunction = .heaviside) -> (membranes: Tensor, spikes: Tensor) {
        precondition(steps > 0 && currents.count % steps == 0, "\(currents.shape) is not \(steps) stacked steps")
        let block = currents.count / steps
        var membranes = Tensor(shape: currents.shape)
        var spikes = Tensor(shape: currents.shape)
        let theta = threshold
        currents.storage.withUnsafeBufferPointer { pi in
            membranes.storage.withUnsafeMutableBufferPointer { pu in
                spikes.storage.withUnsafeMutableBufferPointer { ps in
                    for t in 0..<steps {
                        let base = t * block
                        for j in 0..<block {
                            let previous: Float = t > 0 ? pu[base - block + j] : 0
                            let u = membrane(previous: previous, current: pi[base + j])
                            pu[base + j] = u
                            ps[base + j] = spike(u - theta)
                        }
                    }
                }
            }
        }
        return (membranes, spikes)
    }
}

/// The function that turns `U - theta` into a spike in the forward pass.
enum SpikeFunction: Sendable {
    /// The Heaviside step: what a spiking network computes.
    case heaviside
    /// The antiderivative of a surrogate derivative: a smooth spike, so that the surrogate is
    /// the true derivative (used to test back-propagation through time by finite differences).
    case smooth(Surrogate)

    @inline(__always) func callAsFunction(_ x: Float) -> Float {
        switch self {
        case .heaviside: LIFNeuron.heaviside(x)
        case .smooth(let s): Float(s.smoothStep(Double(x)))
        }
    }
}
