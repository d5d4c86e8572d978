// Shared GoogleTest main: prints which CPU paths this run can exercise, so a log shows whether
// an ISA-specific test ran or was skipped for lack of hardware.
//
// Every suite also runs in a temporary directory of its own: tests name their scratch files
// under std::filesystem::temp_directory_path() with fixed names, and two runs of one suite at
// once (two build trees tested side by side) would otherwise delete each other's files.
// temp_directory_path() reads TMPDIR, so pointing TMPDIR at a fresh mkdtemp directory
// isolates every run without touching the tests.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>

#include "bitmix/core/cpu.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::cout << bitmix::cpu_summary() << '\n';

  std::error_code ec;
  std::string pattern = (std::filesystem::temp_directory_path(ec) / "bitmix-tests-XXXXXX").string();
  const char* dir = ec ? nullptr : ::mkdtemp(pattern.data());
  if (dir != nullptr) ::setenv("TMPDIR", dir, 1);
  const int status = RUN_ALL_TESTS();
  // A failed run keeps its scratch files for inspection; a passing one leaves nothing behind.
  if (dir != nullptr && status == 0) std::filesystem::remove_all(dir, ec);
  return status;
}
