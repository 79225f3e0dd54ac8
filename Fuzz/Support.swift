// Shared by every fuzz target (compiled into each target's module by scripts/fuzz.sh).
//
// The contract checked on every input: a loader either succeeds with a consistent result or
// throws a `DataError` whose one-line description names the file. Anything else (a trap, an
// ASan report, a leak, a single allocation over -malloc_limit_mb, more than -timeout seconds
// on one input) is a finding.
import Foundation
import LFPData

#if canImport(Glibc)
import Glibc
#endif

/// A per-process scratch directory (tmpfs when available) for the loaders that take paths.
let scratchDirectory: String = {
    let environment = ProcessInfo.processInfo.environment
    let base = environment["LFP_FUZZ_TMP"] ?? (FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : "/tmp")
    let directory = "\(base)/lfp-fuzz-\(getpid())"
    mkdir(directory, 0o700)
    atexit { removeScratch() }
    return directory
}()

private func removeScratch() {
    try? FileManager.default.removeItem(atPath: "/dev/shm/lfp-fuzz-\(getpid())")
    if let base = ProcessInfo.processInfo.environment["LFP_FUZZ_TMP"] {
        try? FileManager.default.removeItem(atPath: "\(base)/lfp-fuzz-\(getpid())")
    }
    try? FileManager.default.removeItem(atPath: "/tmp/lfp-fuzz-\(getpid())")
}

/// Writes `bytes` to `name` in the scratch directory and returns its path.
func scratchFile(_ name: String, _ bytes: UnsafeRawBufferPointer) -> String {
    let path = scratchDirectory + "/" + name
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { fatalError("fuzz harness: cannot create \(path): errno \(errno)") }
    var written = 0
    while written < bytes.count {
        let n = write(fd, bytes.baseAddress! + written, bytes.count - written)
        guard n > 0 else { fatalError("fuzz harness: cannot write \(path): errno \(errno)") }
        written += n
    }
    close(fd)
    return path
}

/// Checks the contract on a rejected input: the message is one line and names `file`.
func checkRejection(_ error: DataError, file: String) {
    let text = error.description
    if text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0.properties.generalCategory == .lineSeparator || $0.properties.generalCategory == .paragraphSeparator }) {
        fatalError("contract: error message is not one printable line: \(text.debugDescription)")
    }
    if !text.contains(file) {
        fatalError("contract: error message does not name the file '\(file)': \(text)")
    }
}

/// Checks the invariants of a loaded dataset.
func checkDataset(_ dataset: Dataset) {
    let perSample = dataset.sampleShape.reduce(1, *)
    guard !dataset.sampleShape.isEmpty, dataset.sampleShape.allSatisfy({ $0 > 0 }),
          dataset.features.count == dataset.labels.count * perSample else {
        fatalError("invariant: \(dataset.features.count) features for \(dataset.labels.count) samples of shape \(dataset.sampleShape)")
    }
    if let bad = dataset.labels.first(where: { $0 < 0 || $0 >= dataset.classCount }) {
        fatalError("invariant: label \(bad) outside 0..<\(dataset.classCount)")
    }
    if let bad = dataset.features.first(where: { !$0.isFinite }) {
        fatalError("invariant: loaded a non-finite feature \(bad)")
    }
}

/// Splits `input` at the first occurrence of `marker` (for targets that need two files).
func split(_ input: UnsafeRawBufferPointer, at marker: [UInt8]) -> (UnsafeRawBufferPointer, UnsafeRawBufferPointer)? {
    guard input.count >= marker.count else { return nil }
    var i = 0
    while i + marker.count <= input.count {
        if input[i] == marker[0] && (1..<marker.count).allSatisfy({ input[i + $0] == marker[$0] }) {
            return (UnsafeRawBufferPointer(rebasing: input[..<i]),
                    UnsafeRawBufferPointer(rebasing: input[(i + marker.count)...]))
        }
        i += 1
    }
    return nil
}
