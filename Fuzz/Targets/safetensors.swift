// Fuzz target `safetensors`: safetensors files (8-byte header length, JSON header with
// dtypes, shapes and data offsets, data buffer) decoded by `SafeTensors.decode` and read from
// a file by `SafeTensors.read`, as checkpoints and `--resume` state are.
// A decoded file must re-encode and decode to the same tensors and metadata (bit for bit).
import Foundation
@testable import LFPData

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafeTensors(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let decoded: (tensors: [String: TensorRecord], metadata: [String: String])
    do {
        decoded = try SafeTensors.decode(Data(input), file: "input.safetensors")
    } catch {
        checkRejection(error, file: "input.safetensors")
        return 0
    }
    for (name, record) in decoded.tensors {
        guard record.name == name, record.shape.allSatisfy({ $0 >= 0 }),
              record.shape.reduce(1, *) == record.values.count else {
            fatalError("invariant: tensor '\(name)' has shape \(record.shape) and \(record.values.count) values")
        }
    }
    do {
        let encoded = try SafeTensors.encode(Array(decoded.tensors.values), metadata: decoded.metadata)
        let again = try SafeTensors.decode(encoded, file: "roundtrip.safetensors")
        guard again.metadata == decoded.metadata, again.tensors.count == decoded.tensors.count else {
            fatalError("invariant: safetensors round trip changed the metadata or the tensor names")
        }
        for (name, record) in decoded.tensors {
            guard let other = again.tensors[name], other.shape == record.shape,
                  other.values.map(\.bitPattern) == record.values.map(\.bitPattern) else {
                fatalError("invariant: safetensors round trip changed tensor '\(name)'")
            }
        }
    } catch {
        fatalError("invariant: a decoded file does not re-encode: \(error)")
    }
    if size <= 4096 {
        let path = scratchFile("input.safetensors", input)
        do { _ = try SafeTensors.read(path) } catch { fatalError("invariant: read disagrees with decode: \(error)") }
    }
    return 0
}
