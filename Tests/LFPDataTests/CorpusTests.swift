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
        if let error {
            #expect(error.description.contains(name), "error does not name the file: \(error)")
            #expect(isPrintableLine(error.description), "error is not one printable line: \(error.description.debugDescription)")
        }
    }

    /// One line without control characters (a corrupt file must not write terminal escapes).
    func isPrintableLine(_ text: String) -> Bool {
        !text.unicodeScalars.contains {
            [.control, .lineSeparator, .paragraphSeparator].contains($0.properties.generalCategory)
        }
    }

    @Test func controlCharactersAreEscapedInMessages() {
        let error = DataError.corrupt(file: "f\u{1B}[2J", reason: "tensor 'a\r\nb\u{7}\u{85}'")
        #expect(error.description == "corrupt file 'f\\u{1b}[2J': tensor 'a  b\\u{7} '")
    }
}
