// bitmix: the command-line tool. Each subcommand lives in its own cmd_<name>.cpp and registers
// itself; this file only dispatches and turns exceptions into exit codes:
//   0 success, 1 runtime failure (a bitmix::Error), 2 bad command line.
#include <fmt/format.h>

#include <exception>
#include <iostream>
#include <string_view>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/error.hpp"
#include "bitmix/core/version.hpp"
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

}  // namespace

int main(int argc, char** argv) {
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
