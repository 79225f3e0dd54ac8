import Foundation

/// A decoded IDX array: its dimensions and raw unsigned-byte values (row-major).
public struct IDXArray: Sendable, Equatable {
    /// The dimensions from the IDX header, e.g. `[10000, 28, 28]`.
    public let dimensions: [Int]
    /// The element values, row-major; `values.count == product(dimensions)`.
    public let values: [UInt8]
}

/// The IDX format used by MNIST, Fashion-MNIST and similar datasets.
///
/// An IDX file is `00 00 <type> <ndims>`, then `ndims` big-endian `UInt32` dimensions, then
/// the row-major payload. Only type `0x08` (unsigned byte) is supported. Files may be
/// gzip-compressed; this is detected from the content, not the file name.
public enum IDX {
    /// Standard file names of one split, in search order: the `-idx3-ubyte` names, their
    /// `.gz` forms, and the dotted `.idx3-ubyte` variant (plain and `.gz`).
    public static func candidateFileNames(split: Split) -> (images: [String], labels: [String]) {
        let prefix = split == .train ? "train" : "t10k"
        func variants(_ kind: String, _ rank: Int) -> [String] {
            let dashed = "\(prefix)-\(kind)-idx\(rank)-ubyte"
            let dotted = "\(prefix)-\(kind).idx\(rank)-ubyte"
            return [dashed, dashed + ".gz", dotted, dotted + ".gz"]
        }
        return (variants("images", 3), variants("labels", 1))
    }

    // MARK: - Generic decoding

    /// Decodes an IDX array from raw or gzip-compressed bytes.
    ///
    /// - Parameter file: The file the bytes came from, used in error messages.
    /// - Throws: ``DataError/corrupt(file:reason:)`` for a bad magic, zero dimensions, a truncated
    ///   header or payload, or trailing bytes; ``DataError/unsupported(file:reason:)`` for element
    ///   types other than unsigned byte.
    public static func decode(_ data: Data, file: String = "<memory>") throws(DataError) -> IDXArray {
        var bytes = [UInt8](data)
        if bytes.count >= 2 && bytes[0] == 0x1F && bytes[1] == 0x8B {
            bytes = try bytes.withBytes { (raw) throws(DataError) in
                try Gzip.inflate(raw, file: file, maxOutputSize: Gzip.defaultMaxOutputSize)
            }
        }
        return try decodeBytes(bytes, file: file)
    }

    /// Reads and decodes the IDX file at `path` (raw or gzip).
    public static func read(_ path: String) throws(DataError) -> IDXArray {
        try decodeBytes(Gzip.readBytesMaybeGzip(path), file: path)
    }

    static func decodeBytes(_ bytes: [UInt8], file: String) throws(DataError) -> IDXArray {
        let header = try bytes.withBytes { (raw) throws(DataError) in try parseHeader(raw, file: file) }
        return IDXArray(dimensions: header.dimensions, values: Array(bytes[header.headerLength...]))
    }

    /// Validates the header and payload size; returns the dimensions and header length.
    static func parseHeader(
        _ raw: UnsafeRawBufferPointer, file: String
    ) throws(DataError) -> (dimensions: [Int], headerLength: Int) {
        guard raw.count >= 4 else {
            throw .corrupt(file: file, reason: "file is \(raw.count) bytes, too short for the 4-byte IDX magic")
        }
        guard raw[0] == 0, raw[1] == 0 else {
            throw .corrupt(
                file: file,
                reason: "bad IDX magic: expected 00 00 <type> <ndims>, found \(hex(raw[0])) \(hex(raw[1])) \(hex(raw[2])) \(hex(raw[3]))")
        }
        switch raw[2] {
        case 0x08:
            break
        case 0x09, 0x0B, 0x0C, 0x0D, 0x0E:
            let names: [UInt8: String] = [
                0x09: "signed byte", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64",
            ]
            throw .unsupported(
                file: file,
                reason: "IDX element type 0x\(hex(raw[2])) (\(names[raw[2]] ?? "?")) is not supported; only 0x08 (unsigned byte) is")
        default:
            throw .corrupt(file: file, reason: "unknown IDX element type code 0x\(hex(raw[2]))")
        }
        let rank = Int(raw[3])
        guard rank >= 1 else {
            throw .corrupt(file: file, reason: "IDX header declares 0 dimensions")
        }
        let headerLength = 4 + 4 * rank
        guard raw.count >= headerLength else {
            throw .corrupt(
                file: file,
                reason: "truncated IDX header: \(rank) dimensions need \(headerLength) header bytes, file has \(raw.count)")
        }
        var dimensions = [Int]()
        dimensions.reserveCapacity(rank)
        for d in 0..<rank {
            let value = UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: 4 + 4 * d, as: UInt32.self))
            dimensions.append(Int(value))
        }
        let payload = raw.count - headerLength
        guard let expected = checkedProduct(dimensions) else {
            throw .corrupt(file: file, reason: "IDX dimensions \(shapeText(dimensions)) overflow")
        }
        if payload < expected {
            throw .corrupt(
                file: file,
                reason: "truncated IDX data: dimensions \(shapeText(dimensions)) need \(expected) bytes, found \(payload)")
        }
        if payload > expected {
            throw .corrupt(
                file: file,
                reason: "\(payload - expected) unexpected trailing bytes after the \(expected) data bytes of dimensions \(shapeText(dimensions))")
        }
        return (dimensions, headerLength)
    }

    // MARK: - Dataset loading

    /// Loads an image/label IDX pair as a ``Dataset`` with pixels scaled to `[0, 1]`
    /// (divided by 255) and `sampleShape == [1, rows, cols]`.
    ///
    /// - Parameters:
    ///   - images: Path of the 3-D `[count, rows, cols]` image file (raw or gzip).
    ///   - labels: Path of the 1-D `[count]` label file (raw or gzip).
    ///   - name: The dataset name.
    ///   - classCount: The number of classes (10 for MNIST and Fashion-MNIST); every label must be below it.
    /// - Throws: ``DataError`` naming the offending file: missing files, corrupt headers or payloads,
    ///   wrong ranks, image/label count mismatches and out-of-range labels.
    public static func load(
        images: String, labels: String, name: String, classCount: Int = 10
    ) throws(DataError) -> Dataset {
        guard classCount >= 1 else {
            throw .invalidArgument(reason: "class count must be at least 1, got \(classCount)")
        }
        let imageBytes = try Gzip.readBytesMaybeGzip(images)
        let labelBytes = try Gzip.readBytesMaybeGzip(labels)

        let imageHeader = try imageBytes.withBytes { (raw) throws(DataError) in
            try parseHeader(raw, file: images)
        }
        let labelHeader = try labelBytes.withBytes { (raw) throws(DataError) in
            try parseHeader(raw, file: labels)
        }
        let imageDims = imageHeader.dimensions
        guard imageDims.count == 3 else {
            throw .mismatch(
                file: images,
                reason: "expected a 3-D image array [count, rows, cols], found dimensions \(shapeText(imageDims))")
        }
        guard labelHeader.dimensions.count == 1 else {
            throw .mismatch(
                file: labels,
                reason: "expected a 1-D label array [count], found dimensions \(shapeText(labelHeader.dimensions))")
        }
        let (count, rows, cols) = (imageDims[0], imageDims[1], imageDims[2])
        guard rows > 0, cols > 0 else {
            throw .corrupt(file: images, reason: "image size \(rows)x\(cols) is empty")
        }
        guard labelHeader.dimensions[0] == count else {
            throw .mismatch(
                file: labels,
                reason: "label file has \(labelHeader.dimensions[0]) labels but image file '\(images)' has \(count) images")
        }

        let labelStart = labelHeader.headerLength
        var labelValues = [Int]()
        labelValues.reserveCapacity(count)
        for i in 0..<count {
            let label = Int(labelBytes[labelStart + i])
            guard label < classCount else {
                throw .corrupt(
                    file: labels,
                    reason: "label \(label) at index \(i) is out of range 0..<\(classCount)")
            }
            labelValues.append(label)
        }

        let features = byteToUnitFloats(imageBytes, from: imageHeader.headerLength, count: count * rows * cols)
        return Dataset(
            unchecked: features, labels: labelValues, sampleShape: [1, rows, cols],
            classCount: classCount, name: name)
    }

    /// Loads one split of an MNIST-style directory.
    ///
    /// Looks in `directory` and then in `directory/raw` (the torchvision layout) for the names
    /// listed by ``candidateFileNames(split:)``, e.g. `t10k-images-idx3-ubyte.gz`.
    ///
    /// - Parameter name: The dataset name; defaults to `"<directory name>-<split>"`.
    /// - Throws: ``DataError/notFound(file:reason:)`` listing every name looked for when a file is missing,
    ///   plus any error of ``load(images:labels:name:classCount:)``.
    public static func loadDirectory(
        _ directory: String, split: Split, name: String? = nil, classCount: Int = 10
    ) throws(DataError) -> Dataset {
        guard FileIO.isDirectory(directory) else {
            throw .notFound(file: directory, reason: "directory does not exist")
        }
        let candidates = candidateFileNames(split: split)
        let searchDirectories = [directory, FileIO.join(directory, "raw")]
        func find(_ names: [String]) -> String? {
            for dir in searchDirectories {
                for name in names where FileIO.isFile(FileIO.join(dir, name)) {
                    return FileIO.join(dir, name)
                }
            }
            return nil
        }
        let imagePath = find(candidates.images)
        let labelPath = find(candidates.labels)
        guard let imagePath, let labelPath else {
            var missing = [String]()
            if imagePath == nil { missing.append("\(split) images (looked for \(candidates.images.joined(separator: ", ")))") }
            if labelPath == nil { missing.append("\(split) labels (looked for \(candidates.labels.joined(separator: ", ")))") }
            throw .notFound(
                file: directory,
                reason: "no MNIST-style \(missing.joined(separator: " and ")) in the directory or its raw/ subfolder")
        }
        let datasetName = name ?? "\(FileIO.split(directory.hasSuffix("/") ? String(directory.dropLast()) : directory).name)-\(split)"
        return try load(images: imagePath, labels: labelPath, name: datasetName, classCount: classCount)
    }

    // MARK: - Writing

    /// Encodes an unsigned-byte IDX array (`00 00 08 <ndims>`, big-endian dimensions, payload).
    ///
    /// - Throws: ``DataError/invalidArgument(reason:)`` if `values.count != product(dimensions)`,
    ///   a dimension is negative or exceeds `UInt32.max`, or there are 0 or more than 255 dimensions.
    public static func encode(values: [UInt8], dimensions: [Int]) throws(DataError) -> Data {
        Data(try encodeBytes(values: values, dimensions: dimensions))
    }

    static func encodeBytes(values: [UInt8], dimensions: [Int]) throws(DataError) -> [UInt8] {
        guard (1...255).contains(dimensions.count),
              dimensions.allSatisfy({ $0 >= 0 && $0 <= Int(UInt32.max) })
        else {
            throw .invalidArgument(reason: "IDX dimensions \(shapeText(dimensions)) are invalid")
        }
        guard checkedProduct(dimensions) == values.count else {
            throw .invalidArgument(
                reason: "IDX dimensions \(shapeText(dimensions)) need \(checkedProduct(dimensions).map(String.init) ?? "overflowing") values, got \(values.count)")
        }
        var bytes: [UInt8] = [0, 0, 0x08, UInt8(dimensions.count)]
        bytes.reserveCapacity(4 + 4 * dimensions.count + values.count)
        for d in dimensions {
            let v = UInt32(d)
            bytes.append(contentsOf: [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)])
        }
        bytes.append(contentsOf: values)
        return bytes
    }

    /// Writes `count` images of `rows x cols` unsigned bytes as an IDX3 file (atomically).
    ///
    /// - Parameter gzip: Compress the file with gzip (conventionally with a `.gz` suffix).
    /// - Throws: ``DataError/invalidArgument(reason:)`` if `images.count != count * rows * cols`,
    ///   ``DataError/io(file:reason:)`` if writing fails.
    public static func write(
        images: [UInt8], count: Int, rows: Int, cols: Int, to path: String, gzip: Bool = false
    ) throws(DataError) {
        try writeFile(encodeBytes(values: images, dimensions: [count, rows, cols]), to: path, gzip: gzip)
    }

    /// Writes labels as an IDX1 file (atomically).
    ///
    /// - Parameter gzip: Compress the file with gzip (conventionally with a `.gz` suffix).
    /// - Throws: ``DataError/io(file:reason:)`` if writing fails.
    public static func writeLabels(_ labels: [UInt8], to path: String, gzip: Bool = false) throws(DataError) {
        try writeFile(encodeBytes(values: labels, dimensions: [labels.count]), to: path, gzip: gzip)
    }

    private static func writeFile(_ bytes: [UInt8], to path: String, gzip: Bool) throws(DataError) {
        let output = gzip ? try Gzip.compressBytes(bytes) : bytes
        try FileIO.writeAtomically(output, to: path)
    }

    private static func hex(_ byte: UInt8) -> String {
        let text = String(byte, radix: 16)
        return text.count == 1 ? "0" + text : text
    }
}

/// Converts `count` bytes starting at `offset` to floats in `[0, 1]` (byte / 255).
func byteToUnitFloats(_ bytes: [UInt8], from offset: Int, count: Int) -> [Float] {
    let table = (0..<256).map { Float($0) / 255 }
    return [Float](unsafeUninitializedCapacity: count) { output, initialized in
        bytes.withUnsafeBufferPointer { input in
            table.withUnsafeBufferPointer { lut in
                guard count > 0, let base = input.baseAddress, let target = output.baseAddress,
                      let table = lut.baseAddress else { return }
                let source = base + offset
                for i in 0..<count {
                    target[i] = table[Int(source[i])]
                }
            }
        }
        initialized = count
    }
}
