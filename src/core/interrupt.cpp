#include "bitmix/core/interrupt.hpp"

#include <atomic>
#include <csignal>

#include <signal.h>

namespace bitmix {
namespace {

// Lock-free, so reading and writing it in a signal handler is safe.
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void on_stop_signal(int signal) {
  int expected = 0;
  if (!g_stop_signal.compare_exchange_strong(expected, signal) && expected == signal) {
    // The same signal again while the first request is pending: the user insists.
    std::signal(signal, SIG_DFL);
    std::raise(signal);
  }
}

}  // namespace

void install_stop_handlers() {
  struct sigaction action{};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // system calls in progress (a write, a read) continue
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

void request_stop(int signal) noexcept {
  int expected = 0;
  g_stop_signal.compare_exchange_strong(expected, signal);
}

int stop_requested() noexcept { return g_stop_signal.load(std::memory_order_relaxed); }

void clear_stop_request() noexcept { g_stop_signal.store(0, std::memory_order_relaxed); }

}  // namespace bitmix
