// swift-tools-version: 6.1
import PackageDescription

// On Linux the BLAS is OpenBLAS (found with pkg-config) and gzip comes from zlib;
// on macOS both come from the system (Accelerate, libz).
let package = Package(
    name: "swift-lfp",
    platforms: [.macOS(.v15)],  // Synchronization.Atomic (signal handling) needs macOS 15
    products: [
        .library(name: "LFP", targets: ["LFP"]),
        .library(name: "LFPData", targets: ["LFPData"]),
        .executable(name: "lfp", targets: ["lfp"]),
    ],
    traits: [
        .trait(name: "MPI", description: "Data-parallel training across processes with Open MPI (mpirun -np N lfp train ...)."),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CBLAS",
            path: "Sources/CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .systemLibrary(
            name: "CZlib",
            path: "Sources/CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"]), .brew(["zlib"])]
        ),
        // Kernels in C: the direct convolution and short-batch dense kernels (one source compiled
        // per instruction set: AVX-512, AVX2, baseline; picked at run time) and the library's
        // AVX-512 sgemm (gemm.c); optimised in debug builds too, so tests stay fast.
        .target(name: "CLFPKernels", cSettings: [.unsafeFlags(["-O2"])]),
        .target(
            name: "LFPTensor",
            dependencies: ["CLFPKernels", .target(name: "CBLAS", condition: .when(platforms: [.linux]))],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        .target(name: "LFP", dependencies: ["LFPTensor", "LFPData"]),
        .target(name: "LFPData", dependencies: ["CZlib"]),
        // Optional: only built with `--traits MPI` (needs Debian's libopenmpi-dev).
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        .target(name: "CMPIShim", dependencies: ["CMPI"], cSettings: [.define("LFP_MPI_TRAIT", .when(traits: ["MPI"]))]),
        .target(name: "LFPDistributed", dependencies: ["LFP", .target(name: "CMPIShim", condition: .when(traits: ["MPI"]))]),
        .target(name: "LFPExperiments", dependencies: ["LFP"]),
        .target(
            name: "LFPCommands",
            dependencies: [
                "LFP", "LFPData", "LFPTensor", "LFPExperiments", "LFPDistributed",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "lfp", dependencies: ["LFPCommands"]),
        .testTarget(name: "LFPTensorTests", dependencies: ["LFPTensor"]),
        .testTarget(name: "LFPTests", dependencies: ["LFP", "LFPTensor", "LFPData"], resources: [.copy("Conformance")]),
        .testTarget(name: "LFPDataTests", dependencies: ["LFPData"], resources: [.copy("Corpus")]),
        .testTarget(name: "LFPCommandsTests", dependencies: ["LFPCommands", "LFP", "LFPData"]),
    ],
    swiftLanguageModes: [.v6]
)
