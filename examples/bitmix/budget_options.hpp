#pragma once
// The candidate-bit and budget flags shared by `bitmix search` (exactly one budget) and `bitmix allocate` (one or
// several at once): --budget-bitops, --budget-avg-bits, --budget-size-kb, --budget-latency-ms
// and the --latency-table the latter needs.

#include <vector>

#include "bitmix/quant/bit_config.hpp"
#include "bitmix/search/cost.hpp"
#include "cli.hpp"

namespace bitmix::cli {

// A comma-separated list of distinct bitwidths 1..8 in ascending order (--wbits, --abits).
std::vector<int> ascending_bits(const ArgParser& args, const char* name);
// --first-last-bits B: the first conv and the last linear layer pinned at B bits; 0 = none.
quant::BitPolicy first_last_policy(const ArgParser& args);

// Declares the four budget flags and --latency-table.
void add_budget_options(ArgParser& args);
// Every budget given, in the order above, each value range-checked (UsageError naming the
// flag). `exactly_one`: a UsageError unless one budget is given; otherwise at least one.
std::vector<search::Budget> parse_budgets(const ArgParser& args, bool exactly_one);

}  // namespace bitmix::cli
