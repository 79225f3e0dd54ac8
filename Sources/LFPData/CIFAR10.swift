import Foundation

/// The CIFAR-10 binary format: fixed-size records of one label byte followed by
/// 3072 pixel bytes (3 x 32 x 32, channel-major: all red, then green, then blue).
public enum CIFAR10 {
    /// Pixel bytes per image (3 * 32 * 32).
    public static let imageByteCount = 3 * 32 * 32
    /// Bytes per record: 1 label byte + ``imageByteCount`` pixel bytes.
    public static let recordByteCount = 1 + imageByteCount
    /// The number of classes.
    public static let classCount = 10
    /// The class names, indexed by label.
    public static let classNames = [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ]
    /// The sample shape of a loaded image.
    public static let sampleShape = [3, 32, 32]

    /// The standard file names of a split: `data_batch_1.bin` … `data_batch_5.bin`, or `test_batch.bin`.
    public static func fileNames(split: Split) -> [String] {
        switch split {
        case .train: return (1...5).map { "data_batch_\($0).bin" }
        case .test: return ["test_batch.bin"]
        }
    }

    /// Loads one split from `directory`, or from its `cifar-10-batches-bin` subfolder (the
    /// layout of the official tarball).
    ///
    /// - Parameter name: The dataset name; defaults to `"cifar10-<split>"`.
    /// - Throws: ``DataError/notFound(file:reason:)`` listing the missing files, plus any error of
    ///   ``load(files:name:)``.
    public static func loadDirectory(_ directory: String, split: Split, name: String? = nil) throws(DataError) -> Dataset {
        guard FileIO.isDirectory(directory) else {
            throw .notFound(file: directory, reason: "directory does not exist")
        }
        let names = fileNames(split: split)
        let searchDirectories = [directory, FileIO.join(directory, "cifar-10-batches-bin")]
        var bestMissing = names
        for dir in searchDirectories {
            let missing = names.filter { !FileIO.isFile(FileIO.join(dir, $0)) }
            if missing.isEmpty {
                return try load(files: names.map { FileIO.join(dir, $0) }, name: name ?? "cifar10-\(split)")
            }
            if missing.count < bestMissing.count { bestMissing = missing }
        }
        throw .notFound(
            file: directory,
            reason: "CIFAR-10 \(split) split needs \(names.joined(separator: ", ")) in the directory or its cifar-10-batches-bin/ subfolder; missing \(bestMissing.joined(separator: ", "))")
    }

    /// Loads and concatenates CIFAR-10 binary batch files (raw or gzip), scaling pixels to `[0, 1]`.
    ///
    /// - Throws: ``DataError/corrupt(file:reason:)`` if a file is empty, its size is not a multiple of
    ///   3073 bytes, or a label is 10 or more; ``DataError/invalidArgument(reason:)`` for an empty list.
    public static func load(files: [String], name: String = "cifar10") throws(DataError) -> Dataset {
        guard !files.isEmpty else {
            throw .invalidArgument(reason: "CIFAR-10: no batch files given")
        }
        // Pass 1: read and validate every file, collecting labels.
        var contents = [[UInt8]]()
        var labels = [Int]()
        for file in files {
            let bytes = try Gzip.readBytesMaybeGzip(file)
            guard !bytes.isEmpty else {
                throw .corrupt(file: file, reason: "CIFAR-10 batch file is empty")
            }
            guard bytes.count % recordByteCount == 0 else {
                throw .corrupt(
                    file: file,
                    reason: "size \(bytes.count) is not a multiple of the \(recordByteCount)-byte CIFAR-10 record (\(bytes.count / recordByteCount) whole records + \(bytes.count % recordByteCount) extra bytes)")
            }
            for r in 0..<(bytes.count / recordByteCount) {
                let label = Int(bytes[r * recordByteCount])
                guard label < classCount else {
                    throw .corrupt(file: file, reason: "record \(r) has label \(label), expected 0..<\(classCount)")
                }
                labels.append(label)
            }
            contents.append(bytes)
        }
        // Pass 2: convert pixels to [0, 1] into one allocation.
        let table = (0..<256).map { Float($0) / 255 }
        let total = labels.count * imageByteCount
        let features = [Float](unsafeUninitializedCapacity: total) { output, initialized in
            guard let target = output.baseAddress else { return }
            var written = 0
            table.withUnsafeBufferPointer { lut in
                for bytes in contents {
                    bytes.withUnsafeBufferPointer { input in
                        for r in 0..<(input.count / recordByteCount) {
                            let source = input.baseAddress! + r * recordByteCount + 1
                            for j in 0..<imageByteCount {
                                target[written + j] = lut[Int(source[j])]
                            }
                            written += imageByteCount
                        }
                    }
                }
            }
            initialized = written
        }
        return Dataset(unchecked: features, labels: labels, sampleShape: sampleShape, classCount: classCount, name: name)
    }

    /// Writes images and labels as a CIFAR-10 binary batch file (atomically).
    ///
    /// - Parameters:
    ///   - images: `labels.count * 3072` pixel bytes, channel-major per image.
    ///   - labels: One label per image, each below 10.
    /// - Throws: ``DataError/invalidArgument(reason:)`` for inconsistent sizes or labels,
    ///   ``DataError/io(file:reason:)`` if writing fails.
    public static func write(images: [UInt8], labels: [UInt8], to path: String) throws(DataError) {
        guard images.count == labels.count * imageByteCount else {
            throw .invalidArgument(
                reason: "CIFAR-10 write: \(labels.count) labels need \(labels.count * imageByteCount) pixel bytes, got \(images.count)")
        }
        if let bad = labels.firstIndex(where: { Int($0) >= classCount }) {
            throw .invalidArgument(reason: "CIFAR-10 write: label \(labels[bad]) at index \(bad) is not below \(classCount)")
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity(labels.count * recordByteCount)
        for (i, label) in labels.enumerated() {
            bytes.append(label)
            bytes.append(contentsOf: images[(i * imageByteCount)..<((i + 1) * imageByteCount)])
        }
        try FileIO.writeAtomically(bytes, to: path)
    }
}
