import Foundation
@testable import LFP
import LFPTensor

/// A slow, independent re-implementation of a spiking network and of LFP through time
/// (LFP-MATH.md section 6) in Double: explicit loops over steps, layers, samples and
/// connections, in the strict reverse-time, top-down order of the reference. Used as the oracle
/// for spiking layers in `FeedbackPropagator`.
struct NaiveSNN {
    enum Layer {
        /// Weight `[out][in]` flattened row-major, bias `[out]`.
        case dense(w: [Double], b: [Double], inputs: Int, outputs: Int)
        /// Stride 1, no padding. Weight `[o][c][ky][kx]` flattened, input `[c][h][w]`.
        case conv(w: [Double], b: [Double], inChannels: Int, outChannels: Int, k: Int, h: Int, width: Int)
        /// Max-pool, kernel = stride = k, over `[c][h][w]`.
        case pool(k: Int, channels: Int, h: Int, w: Int)
        case flatten
    }

    enum Rule { case epsilon(Double), zPlusZMinus(Double) }

    var layers: [Layer]
    var beta: Double
    var threshold: Double
    var zeroReset: Bool

    /// Everything the forward pass recorded, by [layer][t][n].
    struct Record {
        var inputs: [[[[Double]]]] = []     // input of every layer
        var currents: [[[[Double]]]] = []   // synapse layers only (others empty)
        var membranes: [[[[Double]]]] = []
        var spikes: [[[[Double]]]] = []
        var winners: [[[[Int]]]] = []       // pool layers: winner input index per output
        var output: [[[Double]]] = []       // [t][n][k]
    }

    /// Converts a library network (Linear/Conv2d/MaxPool2d/Flatten) for input `[C, H, W]` or `[F]`.
    init(_ network: Sequential, sampleShape: [Int]) {
        var shape = sampleShape
        var layers: [Layer] = []
        var neuron: LIFNeuron?
        for layer in network.layers {
            var layer = layer
            if case .spiking(let s) = layer {
                precondition(neuron == nil || neuron == s.neuron, "the oracle takes one neuron configuration")
                neuron = s.neuron
                layer = s.synapse.layer
            }
            switch layer {
            case .linear(let l):
                layers.append(.dense(w: l.weight.storage.map(Double.init), b: (l.bias?.storage ?? []).map(Double.init),
                                     inputs: l.inFeatures, outputs: l.outFeatures))
                shape = [l.outFeatures]
            case .conv2d(let c):
                let k = c.kernelSize.0
                precondition(c.stride == (1, 1) && c.padding == (0, 0) && c.kernelSize.1 == k)
                layers.append(.conv(w: c.weight.storage.map(Double.init), b: (c.bias?.storage ?? []).map(Double.init),
                                    inChannels: c.inChannels, outChannels: c.outChannels, k: k, h: shape[1], width: shape[2]))
                shape = [c.outChannels, shape[1] - k + 1, shape[2] - k + 1]
            case .maxPool2d(let p):
                precondition(p.stride == p.kernel && p.padding == 0)
                layers.append(.pool(k: p.kernel, channels: shape[0], h: shape[1], w: shape[2]))
                shape = [shape[0], shape[1] / p.kernel, shape[2] / p.kernel]
            case .flatten:
                layers.append(.flatten)
                shape = [shape.reduce(1, *)]
            default:
                fatalError("not a spiking layer")
            }
        }
        self.layers = layers
        self.beta = Double(neuron!.beta)
        self.threshold = Double(neuron!.threshold)
        self.zeroReset = neuron!.reset == .zero
    }

    /// The synaptic current of one sample: `I = W s + b` by explicit loops.
    func current(_ layer: Layer, _ s: [Double]) -> [Double] {
        switch layer {
        case .dense(let w, let b, let inputs, let outputs):
            return (0..<outputs).map { j in
                var z = b.isEmpty ? 0 : b[j]
                for i in 0..<inputs { z += w[j * inputs + i] * s[i] }
                return z
            }
        case .conv(let w, let b, let cin, let cout, let k, let h, let wd):
            let oh = h - k + 1, ow = wd - k + 1
            var out = [Double](repeating: 0, count: cout * oh * ow)
            for o in 0..<cout {
                for y in 0..<oh {
                    for x in 0..<ow {
                        var z = b.isEmpty ? 0 : b[o]
                        for c in 0..<cin {
                            for ky in 0..<k {
                                for kx in 0..<k {
                                    z += w[((o * cin + c) * k + ky) * k + kx] * s[(c * h + y + ky) * wd + x + kx]
                                }
                            }
                        }
                        out[(o * oh + y) * ow + x] = z
                    }
                }
            }
            return out
        default:
            fatalError()
        }
    }

    /// Every connection `(input index, output index, weight index)` of a synapse; `weight
    /// index` addresses `w`. Dense: all pairs; conv: every kernel position.
    func connections(_ layer: Layer) -> [(i: Int, j: Int, w: Int)] {
        switch layer {
        case .dense(_, _, let inputs, let outputs):
            return (0..<outputs).flatMap { j in (0..<inputs).map { i in (i, j, j * inputs + i) } }
        case .conv(_, _, let cin, let cout, let k, let h, let wd):
            let oh = h - k + 1, ow = wd - k + 1
            var result: [(Int, Int, Int)] = []
            for o in 0..<cout {
                for y in 0..<oh {
                    for x in 0..<ow {
                        for c in 0..<cin {
                            for ky in 0..<k {
                                for kx in 0..<k {
                                    result.append(((c * h + y + ky) * wd + x + kx, (o * oh + y) * ow + x, ((o * cin + c) * k + ky) * k + kx))
                                }
                            }
                        }
                    }
                }
            }
            return result
        default:
            fatalError()
        }
    }

    /// Bias index of output `j`.
    func biasIndex(_ layer: Layer, _ j: Int) -> Int {
        switch layer {
        case .dense: return j
        case .conv(_, _, _, _, let k, let h, let wd): return j / ((h - k + 1) * (wd - k + 1))
        default: fatalError()
        }
    }

    /// Steps the network through time, one step at a time, one sample at a time.
    func forward(_ x: [[Double]], steps: Int) -> Record {
        var rec = Record()
        let n = x.count
        let count = layers.count
        rec.inputs = Array(repeating: Array(repeating: [], count: steps), count: count)
        rec.currents = rec.inputs; rec.membranes = rec.inputs; rec.spikes = rec.inputs
        rec.winners = Array(repeating: Array(repeating: [], count: steps), count: count)
        var state: [[[Double]]] = Array(repeating: Array(repeating: [], count: n), count: count)  // U[t-1] per layer, sample
        for t in 0..<steps {
            var a = x
            for (l, layer) in layers.enumerated() {
                rec.inputs[l][t] = a
                switch layer {
                case .dense, .conv:
                    var currents: [[Double]] = [], membranes: [[Double]] = [], spikes: [[Double]] = []
                    for s in 0..<n {
                        let i = current(layer, a[s])
                        if state[l][s].isEmpty { state[l][s] = Array(repeating: 0, count: i.count) }
                        var u = [Double](repeating: 0, count: i.count), spk = u
                        for j in i.indices {
                            let previous = state[l][s][j]
                            let r: Double = previous - threshold > 0 ? 1 : 0
                            u[j] = zeroReset ? beta * previous * (1 - r) + i[j] : beta * previous + i[j] - threshold * r
                            spk[j] = u[j] - threshold > 0 ? 1 : 0
                        }
                        state[l][s] = u
                        currents.append(i); membranes.append(u); spikes.append(spk)
                    }
                    rec.currents[l][t] = currents; rec.membranes[l][t] = membranes; rec.spikes[l][t] = spikes
                    a = spikes
                case .pool(let k, let channels, let h, let w):
                    let oh = h / k, ow = w / k
                    var outs: [[Double]] = [], wins: [[Int]] = []
                    for s in 0..<n {
                        var out = [Double](repeating: 0, count: channels * oh * ow), win = [Int](repeating: 0, count: out.count)
                        for c in 0..<channels {
                            for y in 0..<oh {
                                for xx in 0..<ow {
                                    var best = -Double.infinity, bestIndex = -1
                                    for ky in 0..<k {
                                        for kx in 0..<k {
                                            let idx = (c * h + y * k + ky) * w + xx * k + kx
                                            if a[s][idx] > best { best = a[s][idx]; bestIndex = idx }  // first max wins
                                        }
                                    }
                                    out[(c * oh + y) * ow + xx] = best
                                    win[(c * oh + y) * ow + xx] = bestIndex
                                }
                            }
                        }
                        outs.append(out); wins.append(win)
                    }
                    rec.winners[l][t] = wins
                    a = outs
                case .flatten:
                    break
                }
            }
            rec.output.append(a)
        }
        return rec
    }

    /// The rate-coded feedback (LFP-MATH.md section 4) for output spikes `[t][n][k]`.
    static func rateCodedFeedback(_ out: [[[Double]]], labels: [Int]) -> [[[Double]]] {
        let steps = out.count
        let kappa = Double(steps / 2)
        func sigmoid(_ x: Double) -> Double { 1 / (1 + exp(-x)) }
        var f = out
        for n in labels.indices {
            for k in out[0][n].indices {
                let positive = (0..<steps).reduce(0.0) { $0 + out[$1][n][k] }
                let negative = Double(steps) - positive
                for t in 0..<steps {
                    f[t][n][k] = k == labels[n] ? 1 - sigmoid(positive - kappa) : -out[t][n][k] * (1 - sigmoid(negative - kappa))
                }
            }
        }
        return f
    }

    /// LFP through time in the strict reverse-time, top-down order, connection by connection.
    /// Returns parameter feedback by library name (`layers.<index>.weight` / `.bias`).
    func lfp(_ rec: Record, feedback: [[[Double]]], rule: Rule, normalize: Bool) -> [String: [Double]] {
        let steps = feedback.count, n = feedback[0].count
        var weightFeedback: [Int: [Double]] = [:], biasFeedback: [Int: [Double]] = [:]
        var carry: [Int: [[Double]]] = [:]
        let firstSynapse = layers.firstIndex { if case .pool = $0 { return false }; if case .flatten = $0 { return false }; return true }!
        for t in (0..<steps).reversed() {
            var r = feedback[t]  // feedback arriving at the current layer's output, per sample
            for l in layers.indices.reversed() {
                if l < firstSynapse { break }
                let layer = layers[l]
                switch layer {
                case .dense(let w, let b, _, _), .conv(let w, let b, _, _, _, _, _):
                    let s = rec.inputs[l][t]
                    let width = rec.currents[l][t][0].count
                    if carry[l] == nil { carry[l] = Array(repeating: Array(repeating: 0, count: width), count: n) }
                    var fw = weightFeedback[l] ?? Array(repeating: 0, count: w.count)
                    var fb = biasFeedback[l] ?? Array(repeating: 0, count: b.count)
                    var below = s.map { [Double](repeating: 0, count: $0.count) }
                    let links = connections(layer)
                    for sample in 0..<n {
                        var c = [Double](repeating: 0, count: width)
                        for j in 0..<width {
                            let total = r[sample][j] + carry[l]![sample][j]
                            let previous = t > 0 ? rec.membranes[l][t - 1][sample][j] : 0
                            let current = rec.currents[l][t][sample][j]
                            switch rule {
                            case .epsilon(let eps):
                                let d = abs(previous) + abs(current - (1 - beta) * previous)
                                c[j] = total / (d + eps)
                            case .zPlusZMinus(let eps):
                                var d = beta * abs(previous)
                                for link in links where link.j == j { d += abs(s[sample][link.i] * w[link.w]) }
                                if !b.isEmpty { d += abs(b[biasIndex(layer, j)]) }
                                let z = beta * previous + current
                                c[j] = (z >= 0 ? 1 : -1) * total / (d + eps)
                            }
                            let reset: Double = previous - threshold > 0 ? 1 : 0
                            let decay = zeroReset ? beta * (1 - reset) : beta
                            carry[l]![sample][j] = decay * previous * c[j]
                        }
                        // Connection feedback f_ij = z_ij c_j; F(w) += f_ij sign(w); the input gets sum_j f_ij.
                        for link in links {
                            let fij = s[sample][link.i] * w[link.w] * c[link.j]
                            fw[link.w] += fij * (w[link.w] > 0 ? 1 : (w[link.w] < 0 ? -1 : 0))
                            below[sample][link.i] += fij
                        }
                        if !b.isEmpty {
                            for j in 0..<width {
                                let bi = biasIndex(layer, j)
                                fb[bi] += b[bi] * c[j] * (b[bi] > 0 ? 1 : (b[bi] < 0 ? -1 : 0))
                            }
                        }
                    }
                    weightFeedback[l] = fw
                    biasFeedback[l] = fb
                    if normalize {
                        let m = below.flatMap { $0 }.map(abs).max() ?? 0
                        if m > 0 { below = below.map { $0.map { $0 / m } } }
                    }
                    r = below
                case .pool:
                    let wins = rec.winners[l][t]
                    var below = rec.inputs[l][t].map { [Double](repeating: 0, count: $0.count) }
                    for sample in 0..<n {
                        for (o, idx) in wins[sample].enumerated() { below[sample][idx] += r[sample][o] }
                    }
                    r = below
                case .flatten:
                    break
                }
            }
        }
        var result: [String: [Double]] = [:]
        for (l, fw) in weightFeedback { result["layers.\(l).weight"] = fw }
        for (l, fb) in biasFeedback where !fb.isEmpty { result["layers.\(l).bias"] = fb }
        return result
    }
}
