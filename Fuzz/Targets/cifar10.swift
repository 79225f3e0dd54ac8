// Fuzz target `cifar10`: CIFAR-10 binary batch files (raw or gzip), read from a file by
// `CIFAR10.load(files:)`. When the input contains the marker `@BIN`, it is split into two batch
// files loaded together (as the five training batches are).
import Foundation
@testable import LFPData

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCIFAR10(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    var files = [String]()
    if let (first, second) = split(input, at: Array("@BIN".utf8)) {
        files = [scratchFile("data_batch_1.bin", first), scratchFile("data_batch_2.bin", second)]
    } else {
        files = [scratchFile("test_batch.bin", input)]
    }
    do {
        let dataset = try CIFAR10.load(files: files, name: "fuzz")
        checkDataset(dataset)
        guard dataset.sampleShape == [3, 32, 32] else { fatalError("invariant: CIFAR-10 sample shape \(dataset.sampleShape)") }
    } catch {
        guard let file = error.file, files.contains(file) else {
            fatalError("contract: CIFAR-10 error names no input file: \(error)")
        }
        checkRejection(error, file: file)
    }
    return 0
}
