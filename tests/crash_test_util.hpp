#pragma once
// Crash-safety trials shared by the suites whose files must survive a killed writer (core's
// atomic writes, nn's checkpoints and training outputs, runtime's .bmx models).
//
// A trial forks a child that writes the version of the file not currently on disk and kills it
// with SIGKILL after a random delay spread over the time such a child needs (fork, write,
// fsync, rename, exit), so kills land before, during and after the write. After each kill the
// file must be byte-for-byte one of the two complete versions. At the end one more write in the
// parent (the "next run") must leave no temporary file beside the target.
//
// The children end with _exit: no atexit handlers, no GoogleTest or LeakSanitizer teardown in
// a forked copy of the test process.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bitmix/core/file_io.hpp"
#include "bitmix/core/rng.hpp"

namespace bitmix::testing {

struct CrashTrialStats {
  int trials = 0;
  int old_version = 0;       // the kill came before the rename
  int new_version = 0;       // the kill came after it (or the child finished)
  int temporaries_left = 0;  // trials after which a killed writer's temporary was on disk
  double child_seconds = 0;  // how long one unkilled child takes (the spread of the delays)
};

// Runs `trials` kills of children calling write(v) for v = 0 or 1, which must produce exactly
// `versions[v]` at `path`. Returns the counts; a non-matching file is a test failure (reported
// with the trial number and the file's size).
inline CrashTrialStats run_crash_trials(const std::filesystem::path& path, const std::vector<uint8_t> (&versions)[2],
                                        const std::function<void(int)>& write, int trials, uint64_t seed) {
  namespace fs = std::filesystem;
  using Clock = std::chrono::steady_clock;
  CrashTrialStats stats;
  const auto run_child = [&](int version) -> pid_t {
    const pid_t pid = ::fork();
    if (pid == 0) {
      int code = 0;
      try {
        write(version);
      } catch (...) {
        code = 3;
      }
      ::_exit(code);
    }
    return pid;
  };
  write(0);
  if (read_file_bytes(path) != versions[0]) {
    ADD_FAILURE() << path << ": the writer does not produce version 0";
    return stats;
  }
  // The duration of an unkilled child (the median of three), the range of the random delays.
  std::vector<double> durations;
  for (int i = 0; i < 3; ++i) {
    const auto start = Clock::now();
    const pid_t pid = run_child(1);
    int status = 0;
    ::waitpid(pid, &status, 0);
    durations.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      ADD_FAILURE() << "the writing child failed (status " << status << ")";
      return stats;
    }
  }
  std::sort(durations.begin(), durations.end());
  stats.child_seconds = durations[1];
  if (read_file_bytes(path) != versions[1]) {
    ADD_FAILURE() << path << ": the writer does not produce version 1";
    return stats;
  }
  int on_disk = 1;
  Rng rng(seed);
  for (int t = 0; t < trials; ++t) {
    const int next = 1 - on_disk;
    const auto delay = std::chrono::duration<double>(stats.child_seconds * 1.2 * rng.uniform_double());
    const pid_t pid = run_child(next);
    std::this_thread::sleep_for(delay);
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ++stats.trials;
    const std::vector<uint8_t> bytes = read_file_bytes(path);
    if (bytes == versions[on_disk]) {
      ++stats.old_version;
    } else if (bytes == versions[next]) {
      ++stats.new_version;
      on_disk = next;
    } else {
      ADD_FAILURE() << "trial " << t << ": " << path << " holds " << bytes.size()
                    << " bytes, neither version (" << versions[0].size() << " or " << versions[1].size() << " bytes)";
      return stats;
    }
    if (!atomic_write_leftovers(path, /*only_dead_writers=*/false).empty()) ++stats.temporaries_left;
  }
  // The next run cleans up after the killed ones.
  write(on_disk);
  const std::vector<fs::path> left = atomic_write_leftovers(path, /*only_dead_writers=*/false);
  EXPECT_TRUE(left.empty()) << left.size() << " temporary files beside " << path << " after the next write, e.g. "
                            << (left.empty() ? fs::path() : left.front());
  return stats;
}

}  // namespace bitmix::testing
