// Fuzz target `json`: the hand-written JSON parser of safetensors headers
// (`LFPData/JSON.swift`), differentially against Foundation's `JSONDecoder` on the same bytes
// (which is what reads `run.json`, a JSON array of strings): when both accept an array of
// strings they must agree on every string.
import Foundation
@testable import LFPData

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = [UInt8](UnsafeRawBufferPointer(start: data, count: size))
    var ours: JSONValue? = nil
    do {
        ours = try JSONParser.parse(bytes)
    } catch {
        guard error.offset >= 0, error.offset <= bytes.count else {
            fatalError("contract: JSON error at offset \(error.offset) of \(bytes.count): \(error.message)")
        }
        // As SafeTensors reports it.
        checkRejection(.corrupt(file: "header.json", reason: "\(error.message) at header byte \(error.offset)"), file: "header.json")
    }
    if let ours { visit(ours) }
    let foundation = try? JSONDecoder().decode([String].self, from: Data(bytes))
    if let foundation, case .array(let elements)? = ours {
        let strings = elements.compactMap { value -> String? in
            if case .string(let text) = value { return text }
            return nil
        }
        guard strings.count == elements.count else {
            fatalError("differential: Foundation decoded [String] where ours has non-strings")
        }
        guard strings.map({ Array($0.unicodeScalars) }) == foundation.map({ Array($0.unicodeScalars) }) else {
            fatalError("differential: strings differ: ours \(strings.map { Array($0.unicodeScalars) }) Foundation \(foundation.map { Array($0.unicodeScalars) })")
        }
    }
    return 0
}

private func visit(_ value: JSONValue) {
    switch value {
    case .object(let members):
        var keys = Set<String>()
        for (key, member) in members {
            guard keys.insert(key).inserted else { fatalError("invariant: duplicate key '\(key)' accepted") }
            visit(member)
        }
    case .array(let elements):
        for element in elements { visit(element) }
    case .number(let text):
        if let n = value.nonNegativeInt, String(n) != text.drop(while: { $0 == "0" }).description, n != 0 {
            fatalError("invariant: \(text) read as \(n)")
        }
    default:
        break
    }
}
