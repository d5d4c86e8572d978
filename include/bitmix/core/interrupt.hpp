#pragma once
// Cooperative interruption of long runs. A program installs the handlers (the bitmix tool does
// for train and search); SIGINT or SIGTERM then only records the request, and the loops that
// can stop cleanly (the trainer, at its next step boundary) poll stop_requested(), write what a
// resumed run needs and stop. A second signal of the same kind while the first is pending ends
// the process the usual way (the default action), for a user who does not want to wait.

namespace bitmix {

// Installs the SIGINT and SIGTERM handlers (idempotent). Not async-signal-safe.
void install_stop_handlers();
// Records a stop request as if `signal` had been received (async-signal-safe; also for tests).
void request_stop(int signal) noexcept;
// 0, or the signal number of the first pending request.
int stop_requested() noexcept;
// Forgets a pending request (after it was acted on, or in tests).
void clear_stop_request() noexcept;

}  // namespace bitmix
