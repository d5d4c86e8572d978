// Atomic writes under a killed writer (SIGKILL at random points: the file is always one complete
// version, and the next write removes what the killed one left) and under a full disk
// (RLIMIT_FSIZE: an error naming the file and the reason, the previous file kept).
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <iostream>
#include <span>
#include <string>
#include <vector>

#include <csignal>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "crash_test_util.hpp"

namespace bitmix {
namespace {
namespace fs = std::filesystem;

class AtomicWriteCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("bitmix_crash_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// Two log files of different lengths and contents (a log.csv that grew by many lines).
std::vector<uint8_t> log_text(int lines) {
  std::string text = "epoch,lr,train_loss,train_acc,test_loss,test_acc,seconds\n";
  for (int i = 1; i <= lines; ++i) text += std::to_string(i) + ",0.1,0.693147,0.512345,0.701234,0.498765,12.345\n";
  return {text.begin(), text.end()};
}

TEST_F(AtomicWriteCrashTest, KilledWriterLeavesTheOldOrTheNewFile) {
  const fs::path path = dir_ / "log.csv";
  const std::vector<uint8_t> versions[2] = {log_text(20000), log_text(30000)};  // ~1.3 and 2 MB
  const testing::CrashTrialStats s = testing::run_crash_trials(
      path, versions, [&](int v) { write_file_atomic(path, std::span<const uint8_t>(versions[v])); }, 200, 21);
  EXPECT_EQ(s.trials, 200);
  // The delays cover the whole write: some kills must come before the rename, some after.
  EXPECT_GT(s.old_version, 0);
  EXPECT_GT(s.new_version, 0);
  std::cout << "[ crash    ] log.csv: " << s.trials << " kills: " << s.old_version << " old, " << s.new_version
            << " new, " << s.temporaries_left << " with a temporary left; child " << s.child_seconds * 1e3 << " ms\n";
}

TEST_F(AtomicWriteCrashTest, LeftoversOfLiveWritersAreKept) {
  // A temporary whose process still runs (this one) is another writer's file in progress.
  const fs::path path = dir_ / "model.ckpt";
  AtomicFileWriter in_progress(path);
  in_progress.write(std::string_view("partial"));
  write_file_atomic(path, std::string_view("complete"));
  EXPECT_TRUE(fs::exists(in_progress.temp_path()));
  EXPECT_EQ(atomic_write_leftovers(path, /*only_dead_writers=*/false).size(), 1u);
  EXPECT_TRUE(atomic_write_leftovers(path).empty());
  // An unrelated file that merely looks similar is never touched.
  write_file_atomic(dir_ / "model.ckpt.tmp-notes.txt", std::string_view("mine"));
  write_file_atomic(path, std::string_view("again"));
  EXPECT_TRUE(fs::exists(dir_ / "model.ckpt.tmp-notes.txt"));
}

// Runs `body` in a child process limited to `limit` bytes per file (SIGXFSZ ignored, as the
// bitmix tool does); returns the IoError message it caught, or "" if none was thrown.
std::string with_file_size_limit(rlim_t limit, const std::function<void()>& body) {
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    std::signal(SIGXFSZ, SIG_IGN);
    const rlimit rl{limit, limit};
    ::setrlimit(RLIMIT_FSIZE, &rl);
    std::string message;
    try {
      body();
    } catch (const IoError& e) {
      message = e.what();
    }
    [[maybe_unused]] const ssize_t n = ::write(fds[1], message.data(), message.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string message;
  char buffer[512];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) message.append(buffer, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  return message;
}

TEST_F(AtomicWriteCrashTest, FullDiskNamesTheFileAndKeepsThePreviousOne) {
  const fs::path path = dir_ / "model.bmx";
  const std::vector<uint8_t> good = log_text(100), big = log_text(10000);
  write_file_atomic(path, std::span<const uint8_t>(good));
  const std::string message =
      with_file_size_limit(64 * 1024, [&] { write_file_atomic(path, std::span<const uint8_t>(big)); });
  ASSERT_FALSE(message.empty()) << "writing past RLIMIT_FSIZE did not throw IoError";
  EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  EXPECT_NE(message.find("file too large"), std::string::npos) << message;
  EXPECT_EQ(read_file_bytes(path), good);
  EXPECT_TRUE(atomic_write_leftovers(path, /*only_dead_writers=*/false).empty()) << "a temporary was left";
  // A write that fits still works in the same limited process.
  const std::string ok = with_file_size_limit(64 * 1024, [&] { write_file_atomic(path, std::span<const uint8_t>(good)); });
  EXPECT_EQ(ok, "");
}

}  // namespace
}  // namespace bitmix
