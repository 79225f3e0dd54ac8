import Foundation
import Synchronization

/// SIGINT / SIGTERM handling: the first signal asks training to stop after the current step
/// (a checkpoint is then written); a second one terminates at once.
enum StopSignal {
    private static let signalNumber = Atomic<Int32>(0)

    /// The name of the signal received, if any.
    static var received: String? {
        switch signalNumber.load(ordering: .relaxed) {
        case 0: nil
        case SIGINT: "SIGINT"
        case SIGTERM: "SIGTERM"
        case let other: "signal \(other)"
        }
    }

    static func install() {
        // A parent may have started us with these signals blocked (the mask is inherited).
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        for sig in [SIGINT, SIGTERM] {
            signal(sig) { number in
                if StopSignal.signalNumber.load(ordering: .relaxed) != 0 {
                    signal(number, SIG_DFL)
                    raise(number)
                }
                StopSignal.signalNumber.store(number, ordering: .relaxed)
            }
        }
    }
}
