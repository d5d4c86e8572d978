// bitmix info: what this machine and build can run.
#include <fmt/format.h>

#include <iostream>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/core/version.hpp"
#include "cli.hpp"

namespace bitmix::cli {
namespace {

int run_info(int argc, char** argv) {
  ArgParser args("info", "Print the version, the detected CPU features, the compiled and active kernel paths, "
                         "the table each part of the library uses and the thread count.");
  args.common_options(/*with_data=*/false, /*with_out=*/false);
  if (!args.parse(argc, argv)) return 0;
  args.apply_common();
  const CpuFeatures& f = cpu_features();
  std::cout << fmt::format("bitmix {}\n", version());
  std::cout << fmt::format("cpu:       {}\n", f.model_name.empty() ? "unknown" : f.model_name);
  std::string available;
  for (Isa isa : available_isas()) available += (available.empty() ? "" : " ") + std::string(isa_name(isa));
  std::cout << fmt::format("available: {}\n", available);
  const auto cap = isa_cap();
  std::cout << fmt::format("cap:       {}\n", cap ? isa_name(*cap) : std::string_view("none (BITMIX_MAX_ISA unset)"));
  std::cout << fmt::format("active:    {}\n", isa_name(active_isa()));
  std::string tables;
  for (const IsaTableChoice& t : active_isa_tables())
    tables += fmt::format("{}{}={}", tables.empty() ? "" : " ", t.table, isa_name(t.isa));
  std::cout << fmt::format("tables:    {}\n", tables.empty() ? "none" : tables);
  std::cout << fmt::format("threads:   {} (hardware {})\n", num_threads(), hardware_threads());
  std::cout << cpu_summary() << '\n';
  return 0;
}

const bool registered = register_command({"info", "print version, CPU features and the active kernel path", run_info});

}  // namespace
}  // namespace bitmix::cli
