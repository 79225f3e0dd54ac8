import Foundation
import Synchronization

/// The library's worker threads (`Parallel.chunks` runs on them).
///
/// Workers that finish a job keep polling for the next one for a short while (yielding the core
/// between polls) before they park on a condition variable. A step of a small network runs many
/// short parallel regions, and waking a parked thread costs tens of microseconds in a virtual
/// machine, where the idle core has been handed back to the hypervisor: with libdispatch's
/// `concurrentPerform`, whose threads park at once, an MLP step on 2 cores ran no faster than on
/// one (the kernels of each region waiting on the wake-up).
///
/// One job runs at a time. A call while a job is in flight (from another thread, or nested in a
/// job's body) returns false and the caller runs its chunks itself, in order: the same chunks,
/// so the same results.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()

    /// How long an idle worker polls before it parks.
    static let pollingTime: UInt64 = 200_000  // ns

    private let submission = NSLock()
    private let parking = NSCondition()
    /// Incremented (releasing) for every job, after `job` and `participants` are written.
    private let generation = Atomic<Int>(0)
    /// Workers that have not yet checked in for the current job.
    private let pending = Atomic<Int>(0)
    private var job: ((Int) -> Void)?
    private var participants = 0
    /// Workers started so far; worker i (1-based) runs `job(i)` when `i < participants`.
    private var workers = 0

    /// Runs `body(0)` on the calling thread and `body(i)` for `i` in `1..<count` on workers, and
    /// returns when all are done; false (running nothing) when another job is in flight.
    func run(_ count: Int, _ body: (Int) -> Void) -> Bool {
        guard submission.try() else { return false }
        defer { submission.unlock() }
        startWorkers(count - 1)
        withoutActuallyEscaping(body) { body in
            job = body
            participants = count
            pending.store(workers, ordering: .relaxed)
            generation.add(1, ordering: .releasing)
            parking.lock()
            parking.broadcast()
            parking.unlock()
            body(0)
            // Every worker checks in (also those without a chunk: none may read `job` late).
            var polls = 0
            while pending.load(ordering: .acquiring) > 0 {
                polls += 1
                if polls % 64 == 0 { sched_yield() }
            }
            job = nil
        }
        return true
    }

    private func startWorkers(_ needed: Int) {
        while workers < needed {
            workers += 1
            let index = workers, start = generation.load(ordering: .acquiring)
            let thread = Thread { [unowned self] in self.work(index, from: start) }
            thread.name = "lfp-worker-\(index)"
            thread.start()
        }
    }

    private func work(_ index: Int, from start: Int) {
        var seen = start
        while true {
            var current = generation.load(ordering: .acquiring)
            if current == seen {
                let deadline = DispatchTime.now().uptimeNanoseconds + Self.pollingTime
                var polls = 0
                while current == seen {
                    polls += 1
                    if polls % 64 == 0 {
                        if DispatchTime.now().uptimeNanoseconds > deadline {
                            parking.lock()
                            while generation.load(ordering: .acquiring) == seen { parking.wait() }
                            parking.unlock()
                        } else {
                            sched_yield()
                        }
                    }
                    current = generation.load(ordering: .acquiring)
                }
            }
            seen = current
            if index < participants, let job { job(index) }
            pending.subtract(1, ordering: .releasing)
        }
    }
}
