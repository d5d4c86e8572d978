#include "budget_options.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace bitmix::cli {

namespace {
struct BudgetFlag {
  const char* name;
  search::Budget::Kind kind;
  double min, max;
};
constexpr BudgetFlag kBudgetFlags[] = {{"budget-bitops", search::Budget::Kind::bitops, 1e-9, 1e9},
                                       {"budget-avg-bits", search::Budget::Kind::avg_bits, 1.0, 8.0},
                                       {"budget-size-kb", search::Budget::Kind::size_kb, 1e-6, 1e12},
                                       {"budget-latency-ms", search::Budget::Kind::latency_ms, 1e-9, 1e9}};
constexpr const char* kBudgetList =
    "--budget-bitops G, --budget-avg-bits B, --budget-size-kb K or --budget-latency-ms T";
}  // namespace

std::vector<int> ascending_bits(const ArgParser& args, const char* name) {
  std::vector<int> bits = args.get_int_list(name, 1, 8);
  for (std::size_t i = 1; i < bits.size(); ++i)
    if (bits[i] <= bits[i - 1])
      throw UsageError(fmt::format("--{} '{}': expected distinct bitwidths in ascending order", name, args.get_string(name)));
  return bits;
}

quant::BitPolicy first_last_policy(const ArgParser& args) {
  const int pin = static_cast<int>(args.get_int("first-last-bits", 0, 8));
  return pin == 0 ? quant::BitPolicy::none() : quant::BitPolicy{pin, pin};
}

void add_budget_options(ArgParser& args) {
  args.option("budget-bitops", "G", "budget in GBitOPs per image (sum of MACs x w_bits x a_bits)");
  args.option("budget-avg-bits", "B", "budget = the BitOPs of uniform W B A B (first/last layers at their pinned bits)");
  args.option("budget-size-kb", "K", "budget in KiB of packed weights");
  args.option("budget-latency-ms", "T", "budget in milliseconds, from --latency-table");
  args.option("latency-table", "FILE", "per-layer kernel latencies (bitmix latency writes one for this machine)");
}

std::vector<search::Budget> parse_budgets(const ArgParser& args, bool exactly_one) {
  std::vector<search::Budget> budgets;
  for (const BudgetFlag& f : kBudgetFlags)
    if (args.given(f.name)) budgets.push_back(search::Budget{f.kind, args.get_double(f.name, f.min, f.max)});
  if (budgets.empty()) throw UsageError(fmt::format("a budget is required: {}", kBudgetList));
  if (exactly_one && budgets.size() > 1) throw UsageError(fmt::format("give exactly one budget ({})", kBudgetList));
  const bool latency = std::any_of(budgets.begin(), budgets.end(),
                                   [](const search::Budget& b) { return b.kind == search::Budget::Kind::latency_ms; });
  if (latency && args.get_string("latency-table").empty())
    throw UsageError("--budget-latency-ms needs --latency-table FILE (write one with `bitmix latency`)");
  return budgets;
}

}  // namespace bitmix::cli
