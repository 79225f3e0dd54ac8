import Foundation
import Testing
@testable import LFPData

/// The limits of the safetensors header parser that Foundation's JSON parsers lack
/// (docs/fuzzing.md says why LFPData keeps its own parser).
@Suite("JSON header parser")
struct JSONTests {
    func message(_ text: String, maxValues: Int = JSONParser.defaultMaxValues) -> String? {
        do {
            _ = try JSONParser.parse(Array(text.utf8), maxValues: maxValues)
            return nil
        } catch {
            return error.message
        }
    }

    @Test func valueCountIsBounded() {
        #expect(message("[1,2,3,4]", maxValues: 5) == nil)
        #expect(message("[1,2,3,4,5]", maxValues: 5) == "more than 5 values")
        #expect(message("{\"a\":{\"b\":[0,0]}}", maxValues: 4) == "more than 4 values")
    }

    @Test func depthIsBounded() {
        let ok = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        let deep = String(repeating: "[", count: 66) + String(repeating: "]", count: 66)
        #expect(message(ok) == nil)
        #expect(message(deep) == "nesting deeper than 64 levels")
        #expect(message(String(repeating: "[", count: 1_000_000)) == "nesting deeper than 64 levels")
    }

    @Test func duplicateKeysAndInexactNumbersAreKeptApart() throws {
        #expect(message("{\"a\":1,\"a\":2}") == "duplicate key 'a'")
        // Numbers stay text: offsets are exact integers or rejected, never rounded through Double.
        guard case .array(let values) = try JSONParser.parse(Array("[9007199254740993, 1e3, 18446744073709551616]".utf8)) else {
            Issue.record("not an array")
            return
        }
        #expect(values.map(\.nonNegativeInt) == [9_007_199_254_740_993, nil, nil])
    }
}
