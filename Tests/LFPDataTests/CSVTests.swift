import Foundation
import Testing
@testable import LFPData

@Suite("CSV")
struct CSVTests {
    func load(_ text: String, labelColumn: Int = 0, hasHeader: Bool? = nil) throws(DataError) -> Dataset {
        try CSVDataset.parse(text, file: "t.csv", labelColumn: labelColumn, hasHeader: hasHeader)
    }

    /// Found by fuzzing: 1e300 is a finite Double but an infinite Float feature.
    @Test func featureBeyondFloatRangeIsRejected() {
        let error = dataError { _ = try load("0,1e300\n1,2\n") }
        #expect(error?.reason == "line 1, column 2: '1e300' is outside the range of a 32-bit float")
        #expect(dataError { _ = try load("0,3.4e38\n1,-3.4e38\n") } == nil)
    }

    @Test func goodFile() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTemporaryDirectory(dir) }
        let path = dir + "/d.csv"
        try Data("0,1.5,2\n1,3,4e-1\r\n\n2, -1 ,\"0.5\"\n".utf8).write(to: URL(fileURLWithPath: path))
        let data = try CSVDataset.load(path: path)
        #expect(data.count == 3)
        #expect(data.sampleShape == [2])
        #expect(data.classCount == 3)
        #expect(data.labels == [0, 1, 2])
        #expect(data.features == [1.5, 2, 3, 0.4, -1, 0.5])
        #expect(data.name == "d.csv")
    }

    @Test func headerAutodetectAndLabelColumn() throws {
        let text = "x,y,class\n0.5,1,1\n2,3,0\n"
        let data = try load(text, labelColumn: -1)
        #expect(data.count == 2)
        #expect(data.labels == [1, 0])
        #expect(data.features == [0.5, 1, 2, 3])
        #expect(data.classCount == 2)

        let numericFirstRow = try load("1,2,3\n0,5,6\n")
        #expect(numericFirstRow.count == 2)
        let forced = try load("1,2,3\n0,5,6\n", hasHeader: true)
        #expect(forced.count == 1)

        let notHeaderResult = dataError { _ = try load(text, hasHeader: false) }
        let notHeader = try #require(notHeaderResult)
        #expect(notHeader.reason.contains("line 1"))
        #expect(throws: DataError.self) { try load("0,1\n", labelColumn: 5) }
    }

    @Test func raggedRowNamesLine() throws {
        let errorResult = dataError { _ = try load("a,b,c\n0,1,2\n1,2\n") }
        let error = try #require(errorResult)
        #expect(error.reason.contains("line 3"))
        #expect(error.reason.contains("expected 3 fields, found 2"))
        #expect(error.file == "t.csv")
    }

    @Test func nonNumberNamesLineColumnAndToken() throws {
        let errorResult = dataError { _ = try load("0,1,2\n1,abc,2\n") }
        let error = try #require(errorResult)
        #expect(error.reason.contains("line 2, column 2"))
        #expect(error.reason.contains("'abc'"))
        #expect(throws: DataError.self) { try load("0,1,2\n1,nan,2\n") }
        #expect(throws: DataError.self) { try load("0,1,2\n1,0x10,2\n") }
        #expect(throws: DataError.self) { try load("0,1,2\n1,,2\n") }
    }

    @Test func badLabels() throws {
        let negativeResult = dataError { _ = try load("0,1\n-1,2\n") }
        let negative = try #require(negativeResult)
        #expect(negative.reason.contains("label '-1'"))
        let fractionalResult = dataError { _ = try load("0,1\n1.5,2\n") }
        let fractional = try #require(fractionalResult)
        #expect(fractional.reason.contains("label '1.5'"))
        #expect(try load("2.0,1\n").labels == [2])
    }

    @Test func emptyInputs() throws {
        for text in ["", "\n\n", "a,b\n", "   \n"] {
            let errorResult = dataError { _ = try load(text) }
            let error = try #require(errorResult, "'\(text)' should fail")
            #expect(error.reason.contains("no data rows"))
        }
        #expect(throws: DataError.self) { try load("1\n2\n") }
        #expect(throws: DataError.self) { try load("0,\"1\n") }
        let dir = try makeTemporaryDirectory()
        defer { removeTemporaryDirectory(dir) }
        try writeBytes([0x30, 0x2C, 0xFF, 0x0A], to: dir + "/bad.csv")
        let caught1 = dataError { _ = try CSVDataset.load(path: dir + "/bad.csv") }
        #expect(caught1?.reason.contains("UTF-8") == true)
        #expect(throws: DataError.self) { try CSVDataset.load(path: dir + "/missing.csv") }
    }
}
