// bitmix: the command-line tool. Each subcommand lives in its own cmd_<name>.cpp and registers
// itself; this file only dispatches and turns exceptions into exit codes:
//   0 success, 1 runtime failure (a bitmix::Error), 2 bad command line.
#include <fmt/format.h>

#include <csignal>
#include <exception>
#include <filesystem>
#include <iostream>
#include <string>
#include <string_view>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/error.hpp"
#include "bitmix/core/version.hpp"
#include "bitmix/nn/trainer.hpp"
#include "cli.hpp"

namespace {

void print_usage(std::ostream& out) {
  out << fmt::format("bitmix {} - mixed-precision quantized CNNs on the CPU\n\n", bitmix::version())
      << "usage: bitmix <command> [options]     (bitmix <command> --help for its options)\n\n"
      << "commands:\n";
  for (const auto& [name, command] : bitmix::cli::commands())
    out << fmt::format("  {:<10} {}\n", name, command.summary);
  out << "\nenvironment:\n"
      << "  BITMIX_NUM_THREADS=N                 default thread count\n"
      << "  BITMIX_MAX_ISA=scalar|avx2|avx512|neon  cap the instruction set the kernels use\n";
}

// A word as the shell reads it back: quoted unless it is plainly safe.
std::string shell_word(std::string_view word) {
  const bool plain = !word.empty() && word.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                             "0123456789-_./=,:+@%") == std::string_view::npos;
  if (plain) return std::string(word);
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// The command that continues an interrupted run: the same one with --resume CHECKPOINT (any
// earlier --resume replaced; for train, --init dropped, which --resume excludes).
std::string resume_command(int argc, char** argv, const std::filesystem::path& checkpoint) {
  const std::string_view command = argv[1];
  std::string line = "bitmix";
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const bool drop = arg == "--resume" || (command == "train" && arg == "--init");
    if (drop) {
      ++i;  // and its value
      continue;
    }
    if (arg.starts_with("--resume=") || (command == "train" && arg.starts_with("--init="))) continue;
    line += ' ' + shell_word(arg);
  }
  return line + " --resume " + shell_word(checkpoint.string());
}

}  // namespace

int main(int argc, char** argv) {
  // Writing past a file size limit (ulimit -f) then fails with an error naming the file, and
  // the previous version of it is kept, instead of the process being killed mid-write.
  std::signal(SIGXFSZ, SIG_IGN);
  if (argc < 2) {
    print_usage(std::cerr);
    return 2;
  }
  const std::string_view first = argv[1];
  if (first == "--help" || first == "-h" || first == "help") {
    print_usage(std::cout);
    return 0;
  }
  if (first == "--version") {
    try {
      std::cout << fmt::format("bitmix {}\n{}\n", bitmix::version(), bitmix::cpu_summary());
    } catch (const bitmix::Error& e) {
      std::cerr << "bitmix: " << e.what() << '\n';
      return 2;
    }
    return 0;
  }
  const auto& commands = bitmix::cli::commands();
  const auto it = commands.find(std::string(first));
  if (it == commands.end()) {
    std::string names;
    for (const auto& [name, command] : commands) names += (names.empty() ? "" : ", ") + name;
    std::cerr << fmt::format("bitmix: unknown command '{}' (accepted: {})\n", first, names);
    return 2;
  }
  try {
    return it->second.run(argc - 1, argv + 1);
  } catch (const bitmix::nn::TrainingInterrupted& e) {
    std::cerr << fmt::format("bitmix {}: {}\n", first, e.what());
    if (!e.checkpoint().empty())
      std::cerr << fmt::format("to continue exactly where it stopped:\n  {}\n", resume_command(argc, argv, e.checkpoint()));
    return 128 + e.signal();  // the shell's convention: 130 for SIGINT, 143 for SIGTERM
  } catch (const bitmix::cli::UsageError& e) {
    std::cerr << fmt::format("bitmix {}: {}\n", first, e.what());
    return 2;
  } catch (const bitmix::ArgumentError& e) {
    // Invalid values found while acting on the flags (bit lists, budgets, environment).
    std::cerr << fmt::format("bitmix {}: {}\n", first, e.what());
    return 2;
  } catch (const bitmix::Error& e) {
    std::cerr << fmt::format("bitmix {}: error: {}\n", first, e.what());
    return 1;
  } catch (const std::exception& e) {
    std::cerr << fmt::format("bitmix {}: internal error: {}\n", first, e.what());
    return 1;
  }
}
