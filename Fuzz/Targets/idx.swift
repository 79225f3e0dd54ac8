// Fuzz target `idx`: IDX files, raw and gzip-compressed.
//
// The whole input is decoded in memory (`IDX.decode`, which inflates gzip input first) and read
// from a file (`IDX.read`). When the input contains the marker `@LBL`, the bytes before it are
// an image file and the bytes after it a label file for the dataset loader `IDX.load`
// (3-D/1-D checks, count mismatch, label range), as `lfp train --dataset mnist` reads them.
import Foundation
@testable import LFPData

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIDX(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    do {
        let array = try IDX.decode(Data(input), file: "input.idx")
        guard array.dimensions.reduce(1, *) == array.values.count else {
            fatalError("invariant: IDX dimensions \(array.dimensions) with \(array.values.count) values")
        }
    } catch {
        checkRejection(error, file: "input.idx")
    }
    let path = scratchFile("whole.idx", input)
    do { _ = try IDX.read(path) } catch { checkRejection(error, file: path) }

    if let (images, labels) = split(input, at: Array("@LBL".utf8)) {
        let imagePath = scratchFile("images.idx", images)
        let labelPath = scratchFile("labels.idx", labels)
        do {
            let dataset = try IDX.load(images: imagePath, labels: labelPath, name: "fuzz", classCount: 10)
            checkDataset(dataset)
        } catch {
            guard let file = error.file, file == imagePath || file == labelPath else {
                fatalError("contract: IDX.load error names neither input file: \(error)")
            }
            checkRejection(error, file: file)
        }
    }
    return 0
}
