#pragma once
// The search's human-readable artifacts: strengths.csv (per epoch, every candidate's
// probability and the expected cost), strengths.svg and bits.svg. Kept apart from the search
// loop (search.cpp) so that the loop reads as the algorithm.

#include <filesystem>
#include <string>
#include <vector>

#include "bitmix/quant/bit_config.hpp"
#include "bitmix/search/search.hpp"

namespace bitmix::search::detail {

// "0.1234 GBitOPs", "12.3 KiB" or "1.23 ms" for a cost of that kind.
std::string human_cost(CostKind kind, double value);

// Probability rows of one epoch, for strengths.csv and strengths.svg.
struct StrengthRecord {
  int epoch;
  std::vector<LayerProbabilities> probabilities;
  double expected_cost;
};

std::string strengths_csv(const std::vector<SearchedLayer>& layers, const Candidates& candidates,
                          const std::vector<StrengthRecord>& records, const CostModel& cost_model);
std::string strengths_svg(const std::vector<SearchedLayer>& layers, const Candidates& candidates,
                          const std::vector<StrengthRecord>& records);
// AdaQAT: the relaxed and rounded bits of every layer per epoch.
struct RelaxedBitsRecord {
  int epoch;
  std::vector<double> w, a;
  std::vector<LayerBits> bits;
  double cost;
};
std::string relaxed_bits_csv(const std::vector<SearchedLayer>& layers, const std::vector<RelaxedBitsRecord>& records);
std::string relaxed_bits_svg(const std::vector<SearchedLayer>& layers, const std::vector<RelaxedBitsRecord>& records);
std::string bits_svg(const quant::BitConfig& config, const std::string& title);

// The records at full precision (DIR/supernet/strengths.json), so that a resumed search writes
// the same strengths.csv and strengths.svg as an uninterrupted one.
std::string strength_records_json(const std::vector<StrengthRecord>& records);
// The records of epochs 0 to last_epoch from such a file. FormatError naming `path` if it is
// malformed, does not fit the layers and candidates, or lacks one of those epochs.
std::vector<StrengthRecord> read_strength_records(const std::filesystem::path& path, int last_epoch,
                                                  std::size_t layer_count, const Candidates& candidates);

}  // namespace bitmix::search::detail
