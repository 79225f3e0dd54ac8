import Foundation
import Testing
@testable import LFPData

@Suite("safetensors")
struct SafeTensorsTests {
    static let tensors = [
        TensorRecord(name: "layer.weight", shape: [2, 3], values: [1, -2, 3.5, 0, .pi, -0.25]),
        TensorRecord(name: "a_scalar", shape: [], values: [42]),
        TensorRecord(name: "empty", shape: [0, 4], values: []),
        TensorRecord(name: "bias \"quoted\" ✓", shape: [3], values: [0.1, 0.2, 0.3]),
    ]

    /// Builds a file from a header string and a data buffer (the header is not padded).
    func file(_ header: String, buffer: [UInt8] = [], declaredLength: UInt64? = nil) -> Data {
        let h = Array(header.utf8)
        var length = (declaredLength ?? UInt64(h.count)).littleEndian
        var bytes = withUnsafeBytes(of: &length) { Array($0) }
        bytes += h
        bytes += buffer
        return Data(bytes)
    }

    func decodeError(_ data: Data) -> DataError? {
        dataError { _ = try SafeTensors.decode(data, file: "m.safetensors") }
    }

    @Test func roundTripWithMetadata() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTemporaryDirectory(dir) }
        let path = dir + "/nested/deeper/model.safetensors"
        let metadata = ["format": "pt", "note": "line1\nline2 \"q\""]
        try SafeTensors.write(Self.tensors, metadata: metadata, to: path)
        let (tensors, meta) = try SafeTensors.read(path)
        #expect(meta == metadata)
        #expect(tensors.count == Self.tensors.count)
        for t in Self.tensors {
            #expect(tensors[t.name] == t)
        }
        let bytes = try readBytes(path)
        let headerLength = bytes[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(headerLength % 8 == 0)
        let header = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self)
        #expect(header.hasPrefix("{\"__metadata__\":"))
        // Tensors are laid out in name order.
        let positions = ["a_scalar", "bias", "empty", "layer.weight"].map { header.range(of: $0)!.lowerBound }
        #expect(positions == positions.sorted())
        #expect(header.contains("\"a_scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}"))
        #expect(bytes.count == 8 + headerLength + 4 * (6 + 1 + 3))
    }

    @Test func atomicWriteLeavesNoTemporaryFiles() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTemporaryDirectory(dir) }
        let path = dir + "/model.safetensors"
        try SafeTensors.write(Self.tensors, to: path)
        try SafeTensors.write([TensorRecord(name: "x", shape: [1], values: [7])], to: path)
        #expect(try directoryListing(dir) == ["model.safetensors"])
        #expect(try SafeTensors.read(path).tensors["x"]?.values == [7])
        #expect(try SafeTensors.read(path).metadata.isEmpty)
        // A failed encode writes nothing.
        #expect(throws: DataError.self) {
            try SafeTensors.write([TensorRecord(name: "bad", shape: [2], values: [1])], to: dir + "/bad.safetensors")
        }
        #expect(try directoryListing(dir) == ["model.safetensors"])
    }

    @Test func encodeValidates() {
        #expect(throws: DataError.self) { try SafeTensors.encode([TensorRecord(name: "a", shape: [2, 2], values: [1, 2, 3])]) }
        #expect(throws: DataError.self) { try SafeTensors.encode([TensorRecord(name: "a", shape: [-1], values: [])]) }
        #expect(throws: DataError.self) {
            try SafeTensors.encode([TensorRecord(name: "a", shape: [], values: [1]), TensorRecord(name: "a", shape: [], values: [2])])
        }
        #expect(throws: DataError.self) { try SafeTensors.encode([TensorRecord(name: "__metadata__", shape: [], values: [1])]) }
        #expect((try? SafeTensors.decode(SafeTensors.encode([])))?.tensors.isEmpty == true)
    }

    @Test func headerLengthBounds() {
        #expect(decodeError(Data([1, 2, 3]))?.reason.contains("too short") == true)
        #expect(decodeError(file("{}", declaredLength: 1))?.reason.contains("too small") == true)
        let tooLarge = decodeError(file("{}", declaredLength: 1000))
        #expect(tooLarge?.reason.contains("exceeds the 2 bytes") == true)
        #expect(tooLarge?.file == "m.safetensors")
        #expect(decodeError(file("{}", declaredLength: 200_000_000))?.reason.contains("limit") == true)
        #expect(decodeError(file("{}", declaredLength: UInt64.max)) != nil)
        #expect((try? SafeTensors.decode(file("{}")))?.tensors.isEmpty == true)
    }

    @Test func invalidJSON() {
        for header in ["{\"a\": ", "[]", "{\"a\":1,}", "{'a':1}", "{\"a\":{\"dtype\":\"F32\"} x", "{\"a\":1,\"a\":2}",
                       String(repeating: "[", count: 500), "{\"\\ud800\":1}"] {
            let error = decodeError(file(header))
            guard case .corrupt? = error else {
                Issue.record("header \(header.prefix(20)) should be corrupt, got \(String(describing: error))")
                continue
            }
        }
        #expect(decodeError(file("{\"a\": ")).map { $0.reason.contains("not valid JSON") } == true)
        #expect(decodeError(file("{\"__metadata__\":{\"k\":1}}"))?.reason.contains("__metadata__") == true)
    }

    @Test func offsetsShapesAndOverlap() {
        let buffer = [UInt8](repeating: 0, count: 16)
        let outOfRange = decodeError(file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", buffer: buffer))
        #expect(outOfRange?.reason.contains("tensor 'w'") == true)
        #expect(outOfRange?.reason.contains("exceed") == true)

        let reversed = decodeError(file("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", buffer: buffer))
        #expect(reversed?.reason.contains("reversed") == true)

        let overlap = decodeError(file(
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
            buffer: buffer))
        #expect(overlap?.reason.contains("overlap") == true)

        let mismatch = decodeError(file("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", buffer: buffer))
        #expect(mismatch?.reason.contains("tensor 'w'") == true)
        #expect(mismatch?.reason.contains("needs 12 bytes") == true)

        let huge = decodeError(file(
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", buffer: buffer))
        #expect(huge != nil)
        #expect(decodeError(file("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}")) != nil)
        #expect(decodeError(file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", buffer: buffer)) != nil)
        #expect(decodeError(file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", buffer: buffer)) != nil)
        #expect(decodeError(file("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", buffer: buffer)) != nil)

        // Empty tensors may share offsets, and the buffer need not be fully covered.
        let ok = try? SafeTensors.decode(file(
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
            buffer: buffer))
        #expect(ok?.tensors["a"]?.values == [])
        #expect(ok?.tensors["b"]?.values == [0])
    }

    @Test func dtypes() throws {
        let unknown = try #require(decodeError(file("{\"ids\":{\"dtype\":\"U32\",\"shape\":[1],\"data_offsets\":[0,4]}}", buffer: [0, 0, 0, 0])))
        guard case .unsupported(let file, let reason) = unknown else {
            Issue.record("expected .unsupported, got \(unknown)")
            return
        }
        #expect(file == "m.safetensors")
        #expect(reason.contains("'ids'") && reason.contains("U32"))
        // Integer tensors (labels, num_batches_tracked): I64 -3 and 7, I32 5.
        var ints = [UInt8]()
        for v in [Int64(-3), 7] { withUnsafeBytes(of: v.littleEndian) { ints += $0 } }
        withUnsafeBytes(of: Int32(5).littleEndian) { ints += $0 }
        let integers = try SafeTensors.decode(self.file(
            "{\"l\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]},\"n\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[16,20]}}",
            buffer: ints), file: "i.safetensors")
        #expect(integers.tensors["l"]?.values == [-3, 7] && integers.tensors["n"]?.values == [5])
        #expect(decodeError(self.file("{\"x\":{\"dtype\":\"Q7\",\"shape\":[],\"data_offsets\":[0,1]}}", buffer: [0]))?.reason.contains("unknown dtype 'Q7'") == true)

        // F16: 1.0, -2.0, 0.5, 65504, smallest subnormal; BF16: 1.0, -3.0; F64: 0.1.
        let f16: [UInt16] = [0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001]
        let bf16: [UInt16] = [0x3F80, 0xC040]
        var buffer = [UInt8]()
        for h in f16 + bf16 { buffer += [UInt8(h & 0xFF), UInt8(h >> 8)] }
        let bits = (0.1 as Double).bitPattern
        buffer += (0..<8).map { UInt8((bits >> (8 * UInt64($0))) & 0xFF) }
        let header = """
        {"h":{"dtype":"F16","shape":[5],"data_offsets":[0,10]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[10,14]},\
        "d":{"dtype":"F64","shape":[1,1],"data_offsets":[14,22]}}
        """
        let decoded = try SafeTensors.decode(self.file(header, buffer: buffer)).tensors
        #expect(decoded["h"]?.values == [1, -2, 0.5, 65504, 0x1p-24])
        #expect(decoded["b"]?.values == [1, -3])
        #expect(decoded["d"]?.values == [Float(0.1)])
        #expect(decoded["d"]?.shape == [1, 1])
        #expect(SafeTensors.halfToFloat(0x7C00) == .infinity)
        #expect(SafeTensors.halfToFloat(0x7E00).isNaN)
        #expect(SafeTensors.halfToFloat(0x8000).sign == .minus)
    }

    @Test func readMissingFile() {
        let error = dataError { _ = try SafeTensors.read("/nonexistent/dir/x.safetensors") }
        guard case .notFound? = error else {
            Issue.record("expected .notFound, got \(String(describing: error))")
            return
        }
    }
}
