import Foundation
import LFP
#if MPI
import CMPIShim
#endif

/// Errors of distributed training.
public enum DistributedError: Error, CustomStringConvertible, Equatable {
    /// The process was started by mpirun but this build has no MPI support.
    case notBuiltWithMPI
    /// An MPI call failed.
    case mpi(String)
    /// Another rank failed; its message.
    case rankFailed(rank: Int, message: String)

    public var description: String {
        switch self {
        case .notBuiltWithMPI:
            "this process was started by mpirun, but lfp was built without MPI support; build it with `swift build -c release --traits MPI` (needs libopenmpi-dev)"
        case .mpi(let s): "MPI: \(s)"
        case .rankFailed(let rank, let message): "rank \(rank): \(message)"
        }
    }
}

/// The collective operations data-parallel training needs.
public protocol Communicator: AnyObject, Sendable {
    var rank: Int { get }
    var size: Int { get }
    /// Sums `buffer` over all ranks, in place (one call per step: every parameter fused).
    func allreduceSum(_ buffer: inout [Float]) throws
    /// Copies `buffer` from `root` to every rank.
    func broadcast(_ buffer: inout [Float], root: Int) throws
    /// Copies a short message from `root` to every rank.
    func broadcast(message: String, root: Int) throws -> String
    /// The largest of the ranks' values.
    func max(_ value: Int) throws -> Int
}

/// A single process: every collective is the identity.
public final class LocalCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allreduceSum(_ buffer: inout [Float]) throws {}
    public func broadcast(_ buffer: inout [Float], root: Int) throws {}
    public func broadcast(message: String, root: Int) throws -> String { message }
    public func max(_ value: Int) throws -> Int { value }
}

public enum Distributed {
    /// Whether this build can run across processes (built with `--traits MPI`).
    public static var isAvailable: Bool {
        #if MPI
        true
        #else
        false
        #endif
    }

    /// Whether this process was started by an MPI launcher (mpirun / mpiexec / srun with PMI).
    public static var launchedByMPI: Bool {
        let env = ProcessInfo.processInfo.environment
        return ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"].contains { env[$0] != nil }
    }

    /// The communicator for this process: MPI's world when launched by mpirun, else local.
    public static func communicator() throws -> any Communicator {
        guard launchedByMPI else { return LocalCommunicator() }
        #if MPI
        return try MPICommunicator.world()
        #else
        throw DistributedError.notBuiltWithMPI
        #endif
    }

    /// Makes every rank's parameters equal to rank 0's (one fused broadcast).
    public static func broadcastParameters(_ model: inout Sequential, _ comm: any Communicator) throws {
        guard comm.size > 1 else { return }
        var buffer = model.namedParameters.flatMap(\.value.storage)
        try comm.broadcast(&buffer, root: 0)
        var offset = 0
        model.updateParameters { _, p in
            p.storage.withUnsafeMutableBufferPointer { dst in
                buffer.withUnsafeBufferPointer { src in
                    for i in 0..<dst.count { dst[i] = src[offset + i] }
                }
            }
            offset += p.count
        }
    }

    /// Collective agreement on a local failure: if any rank failed, every rank throws the
    /// first failing rank's message (so rank 0 can report it once); otherwise nothing happens.
    public static func agree(localError: (any Error)?, _ comm: any Communicator) throws {
        guard comm.size > 1 else {
            if let localError { throw localError }
            return
        }
        let failing = try comm.max(localError == nil ? -1 : comm.size - comm.rank)  // smallest failing rank wins
        guard failing >= 0 else { return }
        let root = comm.size - failing
        let message = try comm.broadcast(message: localError.map { "\($0)" } ?? "", root: root)
        throw DistributedError.rankFailed(rank: root, message: message)
    }

    /// The data-parallel step hook for `Fit.epoch`, backed by a communicator.
    public static func parallelism(_ comm: any Communicator, stopRequested: @escaping @Sendable () -> Bool) -> DataParallelism {
        DataParallelism(rank: comm.rank, size: comm.size,
                        allreduceSum: { buffer in try comm.allreduceSum(&buffer) },
                        failure: { rank in
                            let message = try comm.broadcast(message: "", root: rank)
                            return DistributedError.rankFailed(rank: rank, message: message)
                        },
                        announce: { message in _ = try comm.broadcast(message: message, root: comm.rank) },
                        stopRequested: stopRequested)
    }
}

#if MPI
/// MPI's world communicator (Open MPI). Initialised once per process; finalised at exit.
public final class MPICommunicator: Communicator, @unchecked Sendable {
    public let rank: Int
    public let size: Int
    nonisolated(unsafe) private static var shared: MPICommunicator?
    private static let lock = NSLock()

    private init(rank: Int, size: Int) {
        self.rank = rank
        self.size = size
    }

    public static func world() throws -> MPICommunicator {
        lock.lock()
        defer { lock.unlock() }
        if let shared { return shared }
        if lfp_mpi_is_initialized() == 0 {
            guard lfp_mpi_init() == 0 else { throw DistributedError.mpi("MPI_Init failed") }
            atexit { if lfp_mpi_is_initialized() != 0 { _ = lfp_mpi_finalize() } }
        }
        let comm = MPICommunicator(rank: Int(lfp_mpi_rank()), size: Int(lfp_mpi_size()))
        shared = comm
        return comm
    }

    public func allreduceSum(_ buffer: inout [Float]) throws {
        let status = buffer.withUnsafeMutableBufferPointer { lfp_mpi_allreduce_sum($0.baseAddress, $0.count) }
        guard status == 0 else { throw DistributedError.mpi("MPI_Allreduce failed") }
    }

    public func broadcast(_ buffer: inout [Float], root: Int) throws {
        let status = buffer.withUnsafeMutableBufferPointer { lfp_mpi_broadcast_floats($0.baseAddress, $0.count, Int32(root)) }
        guard status == 0 else { throw DistributedError.mpi("MPI_Bcast failed") }
    }

    public func broadcast(message: String, root: Int) throws -> String {
        var bytes = [CChar](repeating: 0, count: 1024)
        if rank == root {
            let utf8 = Array(message.utf8.prefix(1023))
            for (i, b) in utf8.enumerated() { bytes[i] = CChar(bitPattern: b) }
        }
        let status = bytes.withUnsafeMutableBufferPointer { lfp_mpi_broadcast_bytes($0.baseAddress, $0.count, Int32(root)) }
        guard status == 0 else { throw DistributedError.mpi("MPI_Bcast failed") }
        return String(decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public func max(_ value: Int) throws -> Int {
        var v = [Int32(value)]
        let status = v.withUnsafeMutableBufferPointer { lfp_mpi_allreduce_max_int($0.baseAddress, 1) }
        guard status == 0 else { throw DistributedError.mpi("MPI_Allreduce failed") }
        return Int(v[0])
    }
}
#endif
