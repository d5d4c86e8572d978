#include "bitmix/support/progress.hpp"

#include <gtest/gtest.h>

#include <sstream>
#include <string>

namespace bitmix {
namespace {

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

TEST(Progress, PlainOutputPrintsAboutEveryTenPercent) {
  std::ostringstream out;
  {
    Progress progress("train", 1000, "img", out, /*force_tty=*/0);
    for (int i = 1; i <= 1000; ++i) progress.update(i, "loss 0.5");
    progress.finish("done");
  }
  const std::string text = out.str();
  EXPECT_EQ(text.find('\r'), std::string::npos);  // no terminal control in logs
  const int lines = count_lines(text);
  EXPECT_GE(lines, 9);
  EXPECT_LE(lines, 11);
  EXPECT_NE(text.find("100%"), std::string::npos);
  EXPECT_NE(text.find("done"), std::string::npos);
}

TEST(Progress, TerminalOutputRedrawsOneLine) {
  std::ostringstream out;
  {
    Progress progress("eval", 10, "batch", out, /*force_tty=*/1);
    for (int i = 1; i <= 10; ++i) progress.update(i);
    progress.finish();
  }
  const std::string text = out.str();
  EXPECT_NE(text.find('\r'), std::string::npos);
  EXPECT_EQ(count_lines(text), 1);
}

TEST(Progress, FormatDuration) {
  EXPECT_EQ(format_duration(12.34), "12.3s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(3720), "1h02m");
}

}  // namespace
}  // namespace bitmix
