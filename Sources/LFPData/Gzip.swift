import CZlib
import Foundation

/// gzip compression and decompression backed by the system zlib.
///
/// Decompression accepts concatenated gzip members (as produced by `cat a.gz b.gz`)
/// and trailing zero padding; truncated or corrupt streams throw ``DataError/corrupt(file:reason:)``.
public enum Gzip {
    /// The default cap on decompressed output (16 GiB), a guard against decompression bombs.
    public static let defaultMaxOutputSize = 1 << 34

    /// The largest first allocation made from the size a gzip trailer claims (64 MiB).
    static let maxInitialOutputGuess = 1 << 26

    /// Whether `data` starts with the gzip magic bytes `1f 8b`.
    public static func isGzip(_ data: Data) -> Bool {
        data.count >= 2 && data[data.startIndex] == 0x1F && data[data.startIndex + 1] == 0x8B
    }

    /// Decompresses a complete gzip stream.
    ///
    /// - Parameters:
    ///   - data: The gzip-compressed bytes.
    ///   - file: The file the bytes came from, used in error messages.
    ///   - maxOutputSize: Decompression stops with an error once the output would exceed this many bytes.
    /// - Throws: ``DataError/corrupt(file:reason:)`` for truncated, corrupt or oversized streams.
    public static func decompress(
        _ data: Data, file: String = "<memory>", maxOutputSize: Int = defaultMaxOutputSize
    ) throws(DataError) -> Data {
        let bytes = try data.withBytes { (raw) throws(DataError) in
            try inflate(raw, file: file, maxOutputSize: maxOutputSize)
        }
        return Data(bytes)
    }

    /// Compresses `data` into a single gzip member.
    ///
    /// - Parameter level: zlib compression level, 0 (store) … 9 (best); clamped into that range.
    /// - Throws: ``DataError/io(file:reason:)`` if zlib fails (e.g. out of memory).
    public static func compress(_ data: Data, level: Int = 6) throws(DataError) -> Data {
        let bytes = try data.withBytes { (raw) throws(DataError) in
            try deflate(raw, level: level)
        }
        return Data(bytes)
    }

    /// Reads the file at `path`, transparently decompressing it when it starts with the gzip magic `1f 8b`.
    ///
    /// - Throws: ``DataError/notFound(file:reason:)`` if the file is missing, ``DataError/io(file:reason:)``
    ///   on read failures, ``DataError/corrupt(file:reason:)`` for a broken gzip stream.
    public static func readMaybeGzip(_ path: String) throws(DataError) -> Data {
        Data(try readBytesMaybeGzip(path))
    }

    // MARK: - Internal byte-array API

    /// Like ``readMaybeGzip(_:)`` but returns a byte array (no extra copy).
    static func readBytesMaybeGzip(_ path: String) throws(DataError) -> [UInt8] {
        let raw = try FileIO.read(path)
        guard raw.count >= 2, raw[0] == 0x1F, raw[1] == 0x8B else { return raw }
        return try raw.withBytes { (buffer) throws(DataError) in
            try inflate(buffer, file: path, maxOutputSize: defaultMaxOutputSize)
        }
    }

    /// Compresses a byte array (internal convenience).
    static func compressBytes(_ bytes: [UInt8], level: Int = 6) throws(DataError) -> [UInt8] {
        try bytes.withBytes { (raw) throws(DataError) in try deflate(raw, level: level) }
    }

    /// Inflates gzip data (window bits 16 + MAX_WBITS) into a byte array.
    static func inflate(
        _ input: UnsafeRawBufferPointer, file: String, maxOutputSize: Int
    ) throws(DataError) -> [UInt8] {
        guard input.count > 0, let inputBase = input.baseAddress else {
            throw .corrupt(file: file, reason: "gzip stream is empty")
        }
        let limit = max(maxOutputSize, 0)

        var stream = z_stream()
        var rc = inflateInit2_(&stream, 16 + MAX_WBITS, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard rc == Z_OK else {
            throw .io(file: file, reason: "zlib inflateInit2 failed with code \(rc)")
        }
        defer { inflateEnd(&stream) }

        // The gzip trailer stores the uncompressed size mod 2^32; use it (bounded by the
        // maximum deflate ratio) as a first guess for the output size. The trailer is not
        // verified until the end, so the first allocation trusts it only up to 64 MiB (beyond
        // that the buffer grows as data actually arrives): a corrupt file must not make us
        // allocate gigabytes before its first bad byte.
        var hint = 1 << 16
        if input.count >= 18 {
            let isize = input.loadUnaligned(fromByteOffset: input.count - 4, as: UInt32.self)
            let claimed = Int(UInt32(littleEndian: isize))
            let plausible = input.count.multipliedReportingOverflow(by: 1100)
            let maxPlausible = plausible.overflow ? Int.max : plausible.partialValue
            hint = max(min(claimed, maxPlausible, Self.maxInitialOutputGuess) + 64, 1 << 12)
        }
        var output = [UInt8](repeating: 0, count: min(hint, max(limit, 1)))
        var produced = 0
        var consumed = 0
        let inputStart = UnsafeMutablePointer(mutating: inputBase.assumingMemoryBound(to: UInt8.self))

        decoding: while true {
            if stream.avail_in == 0 && consumed < input.count {
                stream.next_in = inputStart + consumed
                stream.avail_in = UInt32(min(input.count - consumed, Int(UInt32.max)))
            }
            if produced == output.count {
                guard output.count < limit else {
                    throw .corrupt(file: file, reason: "decompressed data exceeds the \(limit)-byte limit")
                }
                let grown = min(max(output.count * 2, 1 << 16), limit)
                output.append(contentsOf: repeatElement(0, count: grown - output.count))
            }
            let availInBefore = Int(stream.avail_in)
            let producedBefore = produced
            rc = output.withUnsafeMutableBufferPointer { buffer -> Int32 in
                let room = min(buffer.count - produced, Int(UInt32.max))
                stream.next_out = buffer.baseAddress! + produced
                stream.avail_out = UInt32(room)
                let code = CZlib.inflate(&stream, Z_NO_FLUSH)
                produced += room - Int(stream.avail_out)
                return code
            }
            consumed += availInBefore - Int(stream.avail_in)

            switch rc {
            case Z_OK:
                continue
            case Z_STREAM_END:
                if consumed >= input.count { break decoding }
                let rest = UnsafeRawBufferPointer(rebasing: input[consumed...])
                if rest.count >= 2 && rest[0] == 0x1F && rest[1] == 0x8B {
                    // Another gzip member follows.
                    guard inflateReset(&stream) == Z_OK else {
                        throw .corrupt(file: file, reason: "cannot reset zlib for the next gzip member")
                    }
                    stream.avail_in = 0
                    continue
                }
                if rest.allSatisfy({ $0 == 0 }) { break decoding }
                throw .corrupt(
                    file: file,
                    reason: "\(rest.count) unexpected bytes after the end of the gzip stream at offset \(consumed)")
            case Z_BUF_ERROR:
                if stream.avail_in == 0 && consumed >= input.count {
                    throw .corrupt(
                        file: file,
                        reason: "truncated gzip stream: input ended after \(input.count) bytes (\(produced) bytes decompressed)")
                }
                if produced == producedBefore && Int(stream.avail_in) == availInBefore {
                    throw .corrupt(file: file, reason: "gzip stream made no progress at compressed offset \(consumed)")
                }
                continue
            case Z_NEED_DICT:
                throw .corrupt(file: file, reason: "gzip stream requires a preset dictionary")
            case Z_MEM_ERROR:
                throw .io(file: file, reason: "zlib ran out of memory while decompressing")
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "zlib error \(rc)"
                throw .corrupt(file: file, reason: "invalid gzip data at compressed offset \(consumed): \(message)")
            }
        }
        output.removeLast(output.count - produced)
        return output
    }

    /// Deflates `input` into a single gzip member.
    static func deflate(_ input: UnsafeRawBufferPointer, level: Int) throws(DataError) -> [UInt8] {
        var stream = z_stream()
        let clamped = Int32(min(max(level, 0), 9))
        var rc = deflateInit2_(
            &stream, clamped, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY,
            zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard rc == Z_OK else {
            throw .io(file: "<memory>", reason: "zlib deflateInit2 failed with code \(rc)")
        }
        defer { deflateEnd(&stream) }

        let bound = Int(deflateBound(&stream, uLong(input.count)))
        var output = [UInt8](repeating: 0, count: bound + 64)
        var produced = 0
        var consumed = 0
        let inputStart = input.baseAddress.map {
            UnsafeMutablePointer(mutating: $0.assumingMemoryBound(to: UInt8.self))
        }

        while true {
            if stream.avail_in == 0 && consumed < input.count, let start = inputStart {
                stream.next_in = start + consumed
                stream.avail_in = UInt32(min(input.count - consumed, Int(UInt32.max)))
            }
            if produced == output.count {
                output.append(contentsOf: repeatElement(0, count: max(output.count, 1 << 16)))
            }
            let availInBefore = Int(stream.avail_in)
            let finishing = consumed + availInBefore >= input.count
            rc = output.withUnsafeMutableBufferPointer { buffer -> Int32 in
                let room = min(buffer.count - produced, Int(UInt32.max))
                stream.next_out = buffer.baseAddress! + produced
                stream.avail_out = UInt32(room)
                let code = CZlib.deflate(&stream, finishing ? Z_FINISH : Z_NO_FLUSH)
                produced += room - Int(stream.avail_out)
                return code
            }
            consumed += availInBefore - Int(stream.avail_in)
            if rc == Z_STREAM_END { break }
            guard rc == Z_OK || rc == Z_BUF_ERROR else {
                throw .io(file: "<memory>", reason: "zlib deflate failed with code \(rc)")
            }
        }
        output.removeLast(output.count - produced)
        return output
    }
}
