// Fuzz target `gzip`: the gzip decoder (zlib via Gzip.inflate) that every loader runs on
// files starting with 1f 8b, followed by the IDX header parser on the decompressed bytes.
// A successful decompression must survive a compress/decompress round trip unchanged.
import Foundation
@testable import LFPData

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGzip(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let output: Data
    do {
        // The default limit, as every loader uses (inputs up to -max_len cannot reach it).
        output = try Gzip.decompress(Data(input), file: "input.gz")
    } catch {
        checkRejection(error, file: "input.gz")
        return 0
    }
    do {
        let again = try Gzip.decompress(try Gzip.compress(output), file: "roundtrip.gz")
        guard again == output else { fatalError("invariant: gzip round trip changed \(output.count) bytes") }
    } catch {
        fatalError("invariant: gzip round trip failed: \(error)")
    }
    do {
        _ = try IDX.decodeBytes([UInt8](output), file: "input.gz")
    } catch {
        checkRejection(error, file: "input.gz")
    }
    return 0
}
