import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Low-level POSIX file helpers shared by all formats (internal).
enum FileIO {
    /// The current `errno` rendered as text.
    static func errnoText(_ code: Int32) -> String {
        String(cString: strerror(code))
    }

    /// Whether `path` exists and is a directory.
    static func isDirectory(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
    }

    /// Whether `path` exists and is a regular file (or a link to one).
    static func isFile(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && !isDir.boolValue
    }

    /// Joins a directory and a file name with exactly one slash.
    static func join(_ directory: String, _ name: String) -> String {
        if directory.isEmpty { return name }
        return directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    /// Splits a path into its directory ("." when there is none) and last component.
    static func split(_ path: String) -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }

    /// Reads the whole file at `path` with POSIX `open`/`read`.
    static func read(_ path: String) throws(DataError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let code = errno
            if code == ENOENT || code == ENOTDIR {
                throw .notFound(file: path, reason: "no such file")
            }
            throw .io(file: path, reason: "cannot open for reading: \(errnoText(code))")
        }
        defer { close(fd) }

        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw .io(file: path, reason: "cannot stat: \(errnoText(errno))")
        }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            throw .io(file: path, reason: "is a directory, expected a file")
        }

        // Read the size reported by fstat straight into uninitialised storage, then keep
        // reading in chunks in case the file grew (or reports no size, like a pipe).
        let expected = max(Int(info.st_size), 0)
        var failure: Int32? = nil
        var bytes = [UInt8](unsafeUninitializedCapacity: expected) { buffer, initialized in
            initialized = 0
            guard let base = buffer.baseAddress else { return }
            while initialized < expected {
                let got = Glibc_read(fd, base + initialized, expected - initialized)
                if got < 0 {
                    if errno == EINTR { continue }
                    failure = errno
                    return
                }
                if got == 0 { return }
                initialized += got
            }
        }
        if let code = failure {
            throw .io(file: path, reason: "read failed: \(errnoText(code))")
        }
        if bytes.count < expected { return bytes }  // the file shrank while reading

        // Most files end at the size fstat reported: probe for more with a small stack buffer
        // before growing the array (growing it reallocates and copies the whole file and
        // zeroes 64 KiB; the checkpoint fuzz target spent most of its time there).
        probing: while true {
            var code: Int32 = 0
            let got = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 4096) { probe -> Int in
                let n = Glibc_read(fd, probe.baseAddress!, probe.count)
                if n < 0 { code = errno }
                if n > 0 { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: probe[..<n])) }
                return n
            }
            if got < 0 {
                if code == EINTR { continue probing }
                throw .io(file: path, reason: "read failed: \(errnoText(code))")
            }
            if got == 0 { return bytes }
            break probing
        }

        let chunk = 1 << 16
        while true {
            let start = bytes.count
            bytes.append(contentsOf: repeatElement(0, count: chunk))
            let got = bytes.withUnsafeMutableBytes { buffer in
                Glibc_read(fd, buffer.baseAddress! + start, chunk)
            }
            if got < 0 {
                let code = errno
                bytes.removeLast(chunk)
                if code == EINTR { continue }
                throw .io(file: path, reason: "read failed: \(errnoText(code))")
            }
            bytes.removeLast(chunk - got)
            if got == 0 { return bytes }
        }
    }

    /// Writes `bytes` to `path` atomically: the data goes to a temporary file in the same
    /// directory, is flushed with `fsync`, and is then renamed over `path`. Missing parent
    /// directories are created. On failure the temporary file is removed.
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws(DataError) {
        guard !path.isEmpty else { throw .invalidArgument(reason: "output path is empty") }
        let (directory, name) = split(path)
        guard !name.isEmpty else {
            throw .io(file: path, reason: "output path names a directory, expected a file")
        }
        if !isDirectory(directory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw .io(file: path, reason: "cannot create directory '\(directory)': \(error.localizedDescription)")
            }
        }

        var rng = SystemRandomNumberGenerator()
        let suffix = String(rng.next() & 0xFFFF_FFFF, radix: 16)
        let temporary = join(directory, ".\(name).tmp-\(getpid())-\(suffix)")
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw .io(file: path, reason: "cannot create temporary file '\(temporary)': \(errnoText(errno))")
        }

        func fail(_ reason: String) -> DataError {
            unlink(temporary)
            return .io(file: path, reason: reason)
        }

        var written = 0
        let total = bytes.count
        let writeError: Int32? = bytes.withUnsafeBytes { buffer -> Int32? in
            while written < total {
                let n = Glibc_write(fd, buffer.baseAddress! + written, min(total - written, 1 << 30))
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                written += n
            }
            return nil
        }
        if let code = writeError {
            close(fd)
            throw fail("write failed: \(errnoText(code))")
        }
        if fsync(fd) != 0 {
            let code = errno
            close(fd)
            throw fail("fsync failed: \(errnoText(code))")
        }
        if close(fd) != 0 {
            throw fail("close failed: \(errnoText(errno))")
        }
        if rename(temporary, path) != 0 {
            throw fail("cannot rename temporary file into place: \(errnoText(errno))")
        }
        // Make the rename itself durable; failure here is not fatal.
        let dirFD = open(directory, O_RDONLY | O_CLOEXEC)
        if dirFD >= 0 {
            _ = fsync(dirFD)
            close(dirFD)
        }
    }
}

// Unambiguous names for the POSIX calls (Foundation also exposes `read`/`write` overloads).
@inline(__always)
private func Glibc_read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
    read(fd, buffer, count)
}

@inline(__always)
private func Glibc_write(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, buffer, count)
}

extension Data {
    /// Runs `body` on the bytes of `self`, propagating a typed ``DataError``.
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(DataError) -> R) throws(DataError) -> R {
        let result: Result<R, DataError> = withUnsafeBytes { raw in
            do throws(DataError) {
                return .success(try body(raw))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }
}

extension Array where Element == UInt8 {
    /// Runs `body` on the bytes of `self`, propagating a typed ``DataError``.
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(DataError) -> R) throws(DataError) -> R {
        let result: Result<R, DataError> = withUnsafeBytes { raw in
            do throws(DataError) {
                return .success(try body(raw))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }
}

/// Multiplies non-negative dimensions, returning `nil` on overflow or a negative dimension.
func checkedProduct(_ dims: [Int]) -> Int? {
    var product = 1
    for d in dims {
        guard d >= 0 else { return nil }
        let (p, overflow) = product.multipliedReportingOverflow(by: d)
        if overflow { return nil }
        product = p
    }
    return product
}

/// Formats a list of integers as `[a, b, c]`.
func shapeText(_ dims: [Int]) -> String {
    "[" + dims.map(String.init).joined(separator: ", ") + "]"
}
