// Fuzz target `csv`: CSV files (raw or gzip) read by `CSVDataset.load(path:...)`.
// The first input byte chooses the options (label column, header detection, delimiter) so that
// every combination the command line allows is exercised; the rest is the file.
import Foundation
@testable import LFPData

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCSV(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let options = input[0]
    let labelColumn = [0, -1, 1, 2][Int(options & 3)]
    let hasHeader: Bool? = [nil, true, false, nil][Int((options >> 2) & 3)]
    let delimiter: Character = [",", ";", "\t", " "][Int((options >> 4) & 3)]
    let path = scratchFile("input.csv", UnsafeRawBufferPointer(rebasing: input[1...]))
    do {
        let dataset = try CSVDataset.load(path: path, labelColumn: labelColumn, hasHeader: hasHeader, delimiter: delimiter)
        checkDataset(dataset)
        guard dataset.sampleShape.count == 1 else { fatalError("invariant: CSV sample shape \(dataset.sampleShape)") }
    } catch {
        checkRejection(error, file: path)
    }
    return 0
}
