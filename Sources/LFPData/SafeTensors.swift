import Foundation

/// A named tensor of `Float` values, as stored in a safetensors file.
public struct TensorRecord: Sendable, Equatable {
    /// The tensor's name (the key in the safetensors header).
    public var name: String
    /// The dimensions; `[]` is a scalar (one value), and any zero dimension makes it empty.
    public var shape: [Int]
    /// The values, row-major; `values.count` must equal the product of `shape`.
    public var values: [Float]

    /// Creates a record. Consistency of `shape` and `values` is checked when encoding.
    public init(name: String, shape: [Int], values: [Float]) {
        self.name = name
        self.shape = shape
        self.values = values
    }
}

/// Reading and writing the safetensors format (https://huggingface.co/docs/safetensors).
///
/// Layout: an 8-byte little-endian `UInt64` header length `N`, then `N` bytes of UTF-8 JSON
/// `{"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ..., "__metadata__": {...}}`,
/// then the data buffer; offsets are relative to the start of the buffer.
///
/// Written files use `F32`, little-endian, with tensors in byte-wise name order and the header
/// padded with spaces to a multiple of 8 bytes. Reading also accepts `F64`, `F16` and `BF16`
/// (converted to `Float`), and the integer dtypes `I64` and `I32` (labels, BatchNorm's
/// `num_batches_tracked`; converted to `Float`, exact up to 2^24).
public enum SafeTensors {
    /// The largest header accepted when reading (100 MB), as in the reference implementation.
    public static let maxHeaderLength = 100_000_000

    /// The dtypes that can be read, with their element sizes in bytes.
    public static let readableDTypes: [String: Int] = ["F32": 4, "F64": 8, "F16": 2, "BF16": 2, "I64": 8, "I32": 4]

    private static let knownUnsupportedDTypes: Set<String> = [
        "BOOL", "U8", "I8", "I16", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2",
        "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64", "C128",
    ]

    // MARK: - Writing

    /// Encodes tensors and metadata into safetensors bytes.
    ///
    /// - Throws: ``DataError/invalidArgument(reason:)`` for a duplicate or reserved (`__metadata__`)
    ///   name, a negative dimension, or `values.count` differing from the product of `shape`.
    public static func encode(_ tensors: [TensorRecord], metadata: [String: String] = [:]) throws(DataError) -> Data {
        Data(try encodeBytes(tensors, metadata: metadata))
    }

    /// Writes tensors and metadata to `path` atomically: a temporary file in the same directory is
    /// written, `fsync`ed and renamed over `path`. Missing parent directories are created.
    ///
    /// - Throws: the errors of ``encode(_:metadata:)``, and ``DataError/io(file:reason:)`` if writing fails.
    public static func write(_ tensors: [TensorRecord], metadata: [String: String] = [:], to path: String) throws(DataError) {
        try FileIO.writeAtomically(encodeBytes(tensors, metadata: metadata), to: path)
    }

    static func encodeBytes(_ tensors: [TensorRecord], metadata: [String: String]) throws(DataError) -> [UInt8] {
        let sorted = tensors.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        var entries = [String]()
        if !metadata.isEmpty {
            let pairs = metadata.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
                .map { JSONWriter.quoted($0.key) + ":" + JSONWriter.quoted($0.value) }
            entries.append("\"__metadata__\":{" + pairs.joined(separator: ",") + "}")
        }
        var offset = 0
        var previous: String? = nil
        for tensor in sorted {
            guard tensor.name != "__metadata__" else {
                throw .invalidArgument(reason: "safetensors: '__metadata__' is reserved and cannot name a tensor")
            }
            guard tensor.name != previous else {
                throw .invalidArgument(reason: "safetensors: duplicate tensor name '\(tensor.name)'")
            }
            previous = tensor.name
            guard let elements = checkedProduct(tensor.shape), elements == tensor.values.count else {
                throw .invalidArgument(
                    reason: "safetensors: tensor '\(tensor.name)' has shape \(shapeText(tensor.shape)) but \(tensor.values.count) values")
            }
            let end = offset + 4 * elements
            entries.append(
                JSONWriter.quoted(tensor.name) + ":{\"dtype\":\"F32\",\"shape\":\(shapeText(tensor.shape).filter { $0 != " " }),\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
        while header.count % 8 != 0 { header.append(0x20) }

        var bytes = [UInt8]()
        bytes.reserveCapacity(8 + header.count + offset)
        var length = UInt64(header.count).littleEndian
        withUnsafeBytes(of: &length) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: header)
        for tensor in sorted {
            appendLittleEndian(tensor.values, to: &bytes)
        }
        return bytes
    }

    private static func appendLittleEndian(_ values: [Float], to bytes: inout [UInt8]) {
        if 1.littleEndian == 1 {
            let start = bytes.count
            let size = values.count * 4
            bytes.append(contentsOf: repeatElement(0, count: size))
            bytes.withUnsafeMutableBytes { target in
                values.withUnsafeBytes { source in
                    guard size > 0 else { return }
                    (target.baseAddress! + start).copyMemory(from: source.baseAddress!, byteCount: size)
                }
            }
        } else {
            for v in values {
                var bits = v.bitPattern.littleEndian
                withUnsafeBytes(of: &bits) { bytes.append(contentsOf: $0) }
            }
        }
    }

    // MARK: - Reading

    /// Reads and validates a safetensors file, converting every tensor to `Float`.
    ///
    /// - Throws: ``DataError/notFound(file:reason:)`` / ``DataError/io(file:reason:)`` for file
    ///   problems, and the errors of ``decode(_:file:)``.
    public static func read(_ path: String) throws(DataError) -> (tensors: [String: TensorRecord], metadata: [String: String]) {
        let bytes = try FileIO.read(path)
        return try bytes.withBytes { (raw) throws(DataError) in try decode(raw, file: path) }
    }

    /// Decodes and validates safetensors bytes, converting every tensor to `Float`.
    ///
    /// Checks: header length within `2 ... min(size - 8, 100 MB)`; the header is a JSON object
    /// without duplicate keys; `__metadata__`, if present, maps strings to strings; every tensor
    /// entry has a string `dtype`, a `shape` of non-negative integers and two `data_offsets`
    /// `begin <= end` inside the buffer; `product(shape) * dtype size == end - begin`; no two
    /// tensors overlap. The buffer need not be fully covered.
    ///
    /// - Parameter file: The file the bytes came from, used in error messages.
    /// - Throws: ``DataError/corrupt(file:reason:)`` naming the tensor for any failed check, and
    ///   ``DataError/unsupported(file:reason:)`` for dtypes other than F32, F64, F16, BF16, I64 and I32.
    public static func decode(_ data: Data, file: String = "<memory>") throws(DataError) -> (tensors: [String: TensorRecord], metadata: [String: String]) {
        try data.withBytes { (raw) throws(DataError) in try decode(raw, file: file) }
    }

    private struct Entry {
        let name: String
        let dtype: String
        let shape: [Int]
        let begin: Int
        let end: Int
    }

    static func decode(_ raw: UnsafeRawBufferPointer, file: String) throws(DataError) -> (tensors: [String: TensorRecord], metadata: [String: String]) {
        guard raw.count >= 8 else {
            throw .corrupt(file: file, reason: "file is \(raw.count) bytes, too short for the 8-byte safetensors header length")
        }
        let declared = UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self))
        let available = raw.count - 8
        guard declared >= 2 else {
            throw .corrupt(file: file, reason: "safetensors header length \(declared) is too small (minimum 2)")
        }
        guard declared <= UInt64(maxHeaderLength) else {
            throw .corrupt(file: file, reason: "safetensors header length \(declared) exceeds the \(maxHeaderLength)-byte limit")
        }
        guard declared <= UInt64(available) else {
            throw .corrupt(
                file: file,
                reason: "safetensors header length \(declared) exceeds the \(available) bytes that follow the length prefix")
        }
        let headerLength = Int(declared)
        let header = [UInt8](UnsafeRawBufferPointer(rebasing: raw[8..<(8 + headerLength)]))
        let json: JSONValue
        do throws(JSONSyntaxError) {
            json = try JSONParser.parse(header)
        } catch {
            throw .corrupt(file: file, reason: "safetensors header is not valid JSON: \(error.message) at header byte \(error.offset)")
        }
        guard case .object(let members) = json else {
            throw .corrupt(file: file, reason: "safetensors header must be a JSON object, found \(json.kind)")
        }

        let bufferStart = 8 + headerLength
        let bufferLength = raw.count - bufferStart
        var metadata = [String: String]()
        var entries = [Entry]()
        for (key, value) in members {
            if key == "__metadata__" {
                guard case .object(let pairs) = value else {
                    throw .corrupt(file: file, reason: "__metadata__ must be an object of strings, found \(value.kind)")
                }
                for (metaKey, metaValue) in pairs {
                    guard case .string(let text) = metaValue else {
                        throw .corrupt(file: file, reason: "__metadata__ value for '\(metaKey)' must be a string, found \(metaValue.kind)")
                    }
                    metadata[metaKey] = text
                }
                continue
            }
            entries.append(try parseEntry(name: key, value: value, bufferLength: bufferLength, file: file))
        }

        // Reject overlapping data ranges (empty tensors cannot overlap anything).
        let ranged = entries.filter { $0.end > $0.begin }.sorted { ($0.begin, $0.end) < ($1.begin, $1.end) }
        for (a, b) in zip(ranged, ranged.dropFirst()) where b.begin < a.end {
            throw .corrupt(
                file: file,
                reason: "tensors '\(a.name)' [\(a.begin), \(a.end)) and '\(b.name)' [\(b.begin), \(b.end)) overlap in the data buffer")
        }

        var tensors = [String: TensorRecord]()
        tensors.reserveCapacity(entries.count)
        for entry in entries {
            let bytes = UnsafeRawBufferPointer(rebasing: raw[(bufferStart + entry.begin)..<(bufferStart + entry.end)])
            tensors[entry.name] = TensorRecord(name: entry.name, shape: entry.shape, values: convert(bytes, dtype: entry.dtype))
        }
        return (tensors, metadata)
    }

    private static func parseEntry(name: String, value: JSONValue, bufferLength: Int, file: String) throws(DataError) -> Entry {
        guard case .object(let fields) = value else {
            throw .corrupt(file: file, reason: "tensor '\(name)': header entry must be an object, found \(value.kind)")
        }
        func field(_ key: String) -> JSONValue? { fields.first { $0.key == key }?.value }

        guard case .string(let dtype)? = field("dtype") else {
            throw .corrupt(file: file, reason: "tensor '\(name)': missing or non-string \"dtype\"")
        }
        guard case .array(let shapeValues)? = field("shape") else {
            throw .corrupt(file: file, reason: "tensor '\(name)': missing or non-array \"shape\"")
        }
        var shape = [Int]()
        for dim in shapeValues {
            guard let d = dim.nonNegativeInt else {
                throw .corrupt(file: file, reason: "tensor '\(name)': shape entries must be non-negative integers")
            }
            shape.append(d)
        }
        guard case .array(let offsetValues)? = field("data_offsets"), offsetValues.count == 2,
              let begin = offsetValues[0].nonNegativeInt, let end = offsetValues[1].nonNegativeInt
        else {
            throw .corrupt(file: file, reason: "tensor '\(name)': \"data_offsets\" must be two non-negative integers")
        }
        guard let size = readableDTypes[dtype] else {
            let known = knownUnsupportedDTypes.contains(dtype) ? "dtype \(dtype)" : "unknown dtype '\(dtype)'"
            throw .unsupported(
                file: file,
                reason: "tensor '\(name)' has \(known); readable dtypes are F32, F64, F16, BF16, I64, I32")
        }
        guard begin <= end else {
            throw .corrupt(file: file, reason: "tensor '\(name)': data_offsets [\(begin), \(end)] are reversed")
        }
        guard end <= bufferLength else {
            throw .corrupt(
                file: file,
                reason: "tensor '\(name)': data_offsets [\(begin), \(end)] exceed the \(bufferLength)-byte data buffer")
        }
        guard let elements = checkedProduct(shape) else {
            throw .corrupt(file: file, reason: "tensor '\(name)': shape \(shapeText(shape)) overflows")
        }
        let (byteCount, overflow) = elements.multipliedReportingOverflow(by: size)
        guard !overflow, byteCount == end - begin else {
            throw .corrupt(
                file: file,
                reason: "tensor '\(name)': shape \(shapeText(shape)) of \(dtype) needs \(overflow ? "too many" : String(byteCount)) bytes but data_offsets span \(end - begin)")
        }
        return Entry(name: name, dtype: dtype, shape: shape, begin: begin, end: end)
    }

    /// Converts little-endian elements of a readable dtype to `Float`.
    private static func convert(_ bytes: UnsafeRawBufferPointer, dtype: String) -> [Float] {
        switch dtype {
        case "F32":
            let n = bytes.count / 4
            if 1.littleEndian == 1 {
                return [Float](unsafeUninitializedCapacity: n) { buffer, initialized in
                    if n > 0 { UnsafeMutableRawBufferPointer(buffer).copyMemory(from: bytes) }
                    initialized = n
                }
            }
            return (0..<n).map {
                Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)))
            }
        case "F64":
            return (0..<(bytes.count / 8)).map {
                Float(Double(bitPattern: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self))))
            }
        case "F16":
            return (0..<(bytes.count / 2)).map {
                halfToFloat(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)))
            }
        case "BF16":
            return (0..<(bytes.count / 2)).map {
                Float(bitPattern: UInt32(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) << 16)
            }
        case "I64":
            return (0..<(bytes.count / 8)).map {
                Float(Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)))
            }
        case "I32":
            return (0..<(bytes.count / 4)).map {
                Float(Int32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)))
            }
        default:
            return []
        }
    }

    /// Converts IEEE 754 binary16 bits to `Float` (exact, including subnormals, infinities and NaN).
    static func halfToFloat(_ bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let exponent = UInt32((bits >> 10) & 0x1F)
        let mantissa = UInt32(bits & 0x03FF)
        if exponent == 0 {
            let magnitude = Float(mantissa) * 0x1.0p-24
            return sign == 0 ? magnitude : -magnitude
        }
        if exponent == 0x1F {
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        }
        return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
    }
}
