import Foundation
import Testing
@testable import LFPData

let fashionMNISTDirectory = "/usr/share/datasets/fashion-mnist"

@Suite("Fashion-MNIST (real data)")
struct FashionMNISTTests {
    @Test(
        "t10k split loads with the expected shape and classes",
        .enabled(
            if: FileManager.default.fileExists(atPath: fashionMNISTDirectory),
            "skipped: \(fashionMNISTDirectory) is not present on this machine"))
    func loadsTestSplit() throws {
        let data = try IDX.loadDirectory(fashionMNISTDirectory, split: .test, name: "fashion-mnist-test")
        #expect(data.count == 10_000)
        #expect(data.sampleShape == [1, 28, 28])
        #expect(data.classCount == 10)
        #expect(data.classCounts() == [Int](repeating: 1000, count: 10))
        #expect(data.features.count == 10_000 * 784)
        #expect(data.features.allSatisfy { $0 >= 0 && $0 <= 1 })
        #expect(data.describe().contains("samples:   10000"))
    }
}
