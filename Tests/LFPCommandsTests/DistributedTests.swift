import Foundation
import Testing
@testable import LFPCommands
import LFP

/// `mpirun`, when installed.
let mpirunPath: String? = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }

/// Whether the built `lfp` has MPI support (built with `--traits MPI`).
func lfpHasMPI() -> Bool {
    guard let lfp = lfpExecutable(), let r = try? runProcess(lfp, ["doctor", "--json", "--sizes", "8"]),
          let json = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else { return false }
    return json["mpi"] as? Bool ?? false
}

/// Runs `mpirun` on this machine only (shared memory), as root if need be.
func mpirun(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    try runProcess(URL(fileURLWithPath: mpirunPath!), ["--oversubscribe", "--mca", "btl", "self,vader"] + arguments,
                   environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1"])
}

func maxDifference(_ a: URL, _ b: URL) throws -> Float {
    let (ta, _) = try SafeTensors.read(a.path), (tb, _) = try SafeTensors.read(b.path)
    #expect(Set(ta.keys) == Set(tb.keys))
    var worst: Float = 0
    for (name, ra) in ta {
        guard let rb = tb[name] else { continue }
        for (x, y) in zip(ra.values, rb.values) { worst = max(worst, abs(x - y)) }
    }
    return worst
}

@Suite(.enabled(if: mpirunPath != nil, "mpirun not found: install openmpi-bin and libopenmpi-dev (scripts/install-deps.sh does) to run the MPI tests"),
       .enabled(if: lfpHasMPI(), "lfp was built without MPI: run the tests with `swift build --build-tests --traits MPI` (scripts/test.sh does when MPI is installed)"))
struct DistributedTests {
    @Test(arguments: ["lfp", "gradient"])
    func twoRanksGiveTheWeightsOfOneProcess(method: String) throws {
        let lfp = lfpExecutable()!
        let base = temporaryDirectory("mpi-\(method)")
        defer { try? FileManager.default.removeItem(at: base) }
        let args = ["train", "--model", "toy", "--dataset", "blobs", "--epochs", "2", "--batch-size", "32", "--lr", "0.01",
                    "--method", method, "--quiet", "--threads", "1"]
        let single = try runProcess(lfp, args + ["--output", base.appendingPathComponent("one").path])
        #expect(single.status == 0, "\(single.stderr)")
        let two = try mpirun(["-np", "2", lfp.path] + args + ["--output", base.appendingPathComponent("two").path])
        #expect(two.status == 0, "\(two.stderr)")
        let diff = try maxDifference(base.appendingPathComponent("one/model.safetensors"), base.appendingPathComponent("two/model.safetensors"))
        #expect(diff < 1e-4, "weights differ by \(diff)")
        // Rank 0 alone wrote the metrics: one header and one row per epoch.
        let rows = try String(contentsOf: base.appendingPathComponent("two/metrics.csv"), encoding: .utf8).split(separator: "\n")
        #expect(rows.count == 3)
    }

    @Test func aFailingRankStopsEveryRankWithOneReport() throws {
        let lfp = lfpExecutable()!
        let base = temporaryDirectory("mpi-fail")
        defer { try? FileManager.default.removeItem(at: base) }
        let good = ["train", "--model", "toy", "--dataset", "blobs", "--epochs", "2", "--quiet", "--threads", "1", "--output", base.path]
        // Rank 1 cannot read its data.
        let badPath = try mpirun(["-np", "1", lfp.path] + good + [":", "-np", "1", lfp.path, "train", "--model", "toy", "--dataset", "mnist",
                                                                  "--data-dir", "/nonexistent-shard", "--quiet", "--threads", "1", "--output", base.path])
        #expect(badPath.status != 0)
        #expect(badPath.stderr.components(separatedBy: "error: rank 1:").count == 2, "\(badPath.stderr)")
        #expect(badPath.stderr.contains("/nonexistent-shard"))
        // Rank 1 diverges to NaN (its learning rate is absurd): every rank stops, no hang.
        let nan = try mpirun(["-np", "1", lfp.path] + good + [":", "-np", "1", lfp.path] + good + ["--lr", "1e30"])
        #expect(nan.status != 0)
        #expect(nan.stderr.contains("error: rank 1: non-finite"), "\(nan.stderr)")
    }

    @Test func aTwoRankRunResumesOnOneRank() throws {
        let lfp = lfpExecutable()!
        let base = temporaryDirectory("mpi-resume")
        defer { try? FileManager.default.removeItem(at: base) }
        let args = ["train", "--model", "toy", "--dataset", "blobs", "--epochs", "2", "--batch-size", "32", "--lr", "0.01", "--quiet", "--threads", "1"]
        let straight = try runProcess(lfp, args + ["--output", base.appendingPathComponent("straight").path])
        #expect(straight.status == 0)
        let resumed = base.appendingPathComponent("resumed")
        let stopped = try mpirun(["-np", "2", lfp.path] + args + ["--output", resumed.path, "--stop-after", "30"])
        #expect(stopped.status != 0)  // 130: stopped, checkpoint written
        let finished = try runProcess(lfp, ["train", "--resume", resumed.path, "--quiet"])
        #expect(finished.status == 0, "\(finished.stderr)")
        let diff = try maxDifference(base.appendingPathComponent("straight/model.safetensors"), resumed.appendingPathComponent("model.safetensors"))
        #expect(diff < 1e-4, "weights differ by \(diff)")
    }
}
