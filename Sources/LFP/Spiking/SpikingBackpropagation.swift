import LFPTensor

/// Back-propagation through time with a surrogate spike derivative: the gradient baseline
/// LFP is compared with on spiking networks (LFP-MATH.md section 6).
///
/// With the reset detached (snnTorch's default), for every spiking layer and step t = T..1:
///
///     dL/dU[t]   = dL/dS[t] * surrogate(U[t] - theta) + decay[t+1] * dL/dU[t+1]
///     dL/dI[t]   = dL/dU[t]
///     dL/dW     += dL/dI[t]^T s_in[t],   dL/db += sum dL/dI[t]
///     dL/ds_in[t] = dL/dI[t] W                                  (transposed conv for Conv2d)
///
/// where `decay[t] = dU[t]/dU[t-1]` is `beta` (`.subtract`) or `beta (1 - r[t])` (`.zero`).
/// Max-pooling routes to the winners, flatten reshapes. With ``Surrogate/heaviside`` every
/// gradient is exactly zero.
public enum SpikingBackpropagation {
    /// Back-propagates `outputGradient` (`dL/dS` of the output spikes, `[T, N, C]`) through the
    /// traced network. Gradients are not divided by anything: the loss's own reduction applies.
    public static func gradients(network: SpikingNetwork, trace: SpikingTrace, outputGradient: Tensor,
                                 surrogate: Surrogate) -> ParameterSignals {
        let steps = trace.steps
        let parameters = TemporalBackward.run(network: network, trace: trace, top: outputGradient, lfp: false,
                                              normalize: false) { _, k, _, g in
            let neuron = network.neurons[k]
            let membrane = trace.membranes[k]
            let block = membrane.count / steps
            var gradient = Tensor(shape: membrane.shape)
            var carry = [Float](repeating: 0, count: block)
            let theta = neuron.threshold
            g.storage.withUnsafeBufferPointer { pg in
                membrane.storage.withUnsafeBufferPointer { pu in
                    gradient.storage.withUnsafeMutableBufferPointer { pd in
                        for t in (0..<steps).reversed() {
                            let base = t * block
                            for j in 0..<block {
                                let du = pg[base + j] * surrogate.derivative(pu[base + j] - theta) + carry[j]
                                pd[base + j] = du
                                carry[j] = t > 0 ? neuron.effectiveDecay(previous: pu[base - block + j]) * du : 0
                            }
                        }
                    }
                }
            }
            return gradient
        }
        return ParameterSignals(parameters: parameters, input: nil, layerOutputs: nil)
    }
}
