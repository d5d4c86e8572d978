// Shared GoogleTest main: prints which CPU paths this run can exercise, so a log shows whether
// an ISA-specific test ran or was skipped for lack of hardware.
#include <gtest/gtest.h>

#include <iostream>

#include "bitmix/core/cpu.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::cout << bitmix::cpu_summary() << '\n';
  return RUN_ALL_TESTS();
}
