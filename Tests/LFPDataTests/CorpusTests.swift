import Foundation
import Testing
@testable import LFPData

/// Replays the committed corpus of corrupt files (`scripts/make-corrupt-corpus.py`): each must
/// be rejected with a `DataError` that names the file, never a crash or a silent success.
@Suite struct CorruptCorpusTests {
    static func corpus() -> [String] {
        guard let dir = Bundle.module.url(forResource: "Corpus", withExtension: nil),
              let names = try? FileManager.default.contentsOfDirectory(atPath: dir.path) else { return [] }
        return names.sorted().map { dir.appendingPathComponent($0).path }
    }

    @Test func corpusIsPresent() {
        #expect(Self.corpus().count >= 25)
    }

    @Test(arguments: corpus())
    func corruptFileIsRejectedWithANamedError(_ path: String) {
        let name = URL(fileURLWithPath: path).lastPathComponent
        let error = dataError {
            if name.hasPrefix("idx-") { _ = try IDX.read(path) }
            else if name.hasPrefix("cifar-") { _ = try CIFAR10.load(files: [path]) }
            else if name.hasPrefix("safetensors-") { _ = try SafeTensors.read(path) }
            else if name.hasPrefix("csv-") { _ = try CSVDataset.load(path: path) }
            else { Issue.record("corpus file \(name) names no loader") }
        }
        #expect(error != nil, "\(name) was accepted")
        if let error { #expect(error.description.contains(name), "error does not name the file: \(error)") }
    }
}
