#pragma once
// Progress display for long work. On a terminal it redraws one line (bar, rate, ETA and a
// caller-supplied status); when the stream is not a terminal (CI logs, pipes) it prints a
// plain line roughly every 10% instead, so logs stay readable.

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>

namespace bitmix {

class Progress {
 public:
  // `unit` names what is counted ("img", "batch"); it appears in the rate.
  Progress(std::string label, int64_t total, std::string unit = "it");
  // Same, on a given stream; `force_tty` overrides the terminal detection (for tests).
  Progress(std::string label, int64_t total, std::string unit, std::ostream& out, int force_tty = -1);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Sets the count done so far and the status text shown after the bar.
  void update(int64_t done, std::string_view status = {});
  // Ends the line (prints the final state once).
  void finish(std::string_view status = {});

  double elapsed_seconds() const;

 private:
  void draw(bool final_line);

  std::string label_;
  std::string unit_;
  int64_t total_;
  int64_t done_ = 0;
  std::string status_;
  std::ostream* out_;
  bool tty_;
  bool finished_ = false;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

// Formats seconds as "1h02m", "3m05s" or "12.3s".
std::string format_duration(double seconds);

}  // namespace bitmix
