#include "bitmix/support/progress.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>

namespace bitmix {

std::string format_duration(double seconds) {
  if (!(seconds >= 0)) return "?";
  if (seconds < 60) return fmt::format("{:.1f}s", seconds);
  const auto total = static_cast<long long>(seconds + 0.5);
  if (total < 3600) return fmt::format("{}m{:02}s", total / 60, total % 60);
  return fmt::format("{}h{:02}m", total / 3600, (total % 3600) / 60);
}

Progress::Progress(std::string label, int64_t total, std::string unit)
    : Progress(std::move(label), total, std::move(unit), std::cerr) {}

Progress::Progress(std::string label, int64_t total, std::string unit, std::ostream& out, int force_tty)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(std::max<int64_t>(total, 0)),
      out_(&out),
      tty_(force_tty >= 0 ? force_tty != 0 : (&out == &std::cerr && ::isatty(STDERR_FILENO) != 0)),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

Progress::~Progress() {
  if (!finished_ && tty_) *out_ << '\n' << std::flush;  // leave the terminal on a fresh line
}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int64_t done, std::string_view status) {
  done_ = std::clamp<int64_t>(done, 0, total_);
  status_.assign(status);
  if (tty_) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_draw_ < std::chrono::milliseconds(100) && done_ < total_) return;  // ~10 redraws/s
    last_draw_ = now;
    draw(false);
  } else {
    const int decile = total_ > 0 ? static_cast<int>(done_ * 10 / total_) : 10;
    if (decile > last_decile_ && decile < 10) {
      last_decile_ = decile;
      draw(false);
    }
  }
}

void Progress::finish(std::string_view status) {
  if (finished_) return;
  finished_ = true;
  done_ = total_;
  if (!status.empty()) status_.assign(status);
  draw(true);
}

void Progress::draw(bool final_line) {
  const double elapsed = elapsed_seconds();
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  const double fraction = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : 0.0;
  std::string timing = final_line ? fmt::format("{:.1f} {}/s, {}", rate, unit_, format_duration(elapsed))
                                  : fmt::format("{:.1f} {}/s, ETA {}", rate, unit_, format_duration(eta));
  if (tty_) {
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(kWidth, '.');
    *out_ << fmt::format("\r\033[2K{} [{}] {:3.0f}% {} {}", label_, bar, fraction * 100, timing, status_);
    if (final_line) *out_ << '\n';
    *out_ << std::flush;
  } else {
    *out_ << fmt::format("{} {:3.0f}% ({}/{}) {} {}\n", label_, fraction * 100, done_, total_, timing, status_)
          << std::flush;
  }
}

}  // namespace bitmix
