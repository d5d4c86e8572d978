#pragma once
// Cost models for bitwidth search: BitOPs, weight size and measured kernel latency, the budget
// a user states, and the penalty that steers a differentiable search onto that budget.
//
// Every cost is a sum over layers of a per-layer cost f_l(w_bits, a_bits):
//   BitOPs   f_l = MACs_l * w_bits * a_bits                (per image)
//   size     f_l = params_l * w_bits                       (bits of packed weights)
//   latency  f_l = T_l(w_bits, a_bits)                     (milliseconds, from a LatencyTable)
// so the expected cost under strengths p (weights) and q (activations) is
//   E[C] = Σ_l Σ_i Σ_j p_l,i q_l,j f_l(b_i, b_j),
// which for BitOPs equals Σ_l MACs_l E[b_w,l] E[b_a,l], as in the EBS paper.

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bitmix::search {

// One quantizable layer as the search sees it.
struct LayerInfo {
  std::string name;       // "layer1.0.conv1"
  int64_t macs = 0;       // multiply-accumulates per image
  int64_t params = 0;     // weight elements
  bool pinned = false;    // bits fixed by policy (first conv, last linear) instead of searched
  int pinned_w_bits = 8;
  int pinned_a_bits = 8;
};

struct LayerBits {
  int w_bits = 8;
  int a_bits = 8;
  bool operator==(const LayerBits&) const = default;
};

// Measured latency of each layer at each (w_bits, a_bits), in milliseconds per batch of
// `batch` images on `threads` threads. Stored as JSON (docs/search.md); `bitmix latency`
// regenerates it on the user's machine.
class LatencyTable {
 public:
  LatencyTable() = default;
  LatencyTable(std::string machine, int batch, int threads) : machine_(std::move(machine)), batch_(batch), threads_(threads) {}

  void set(const std::string& layer, int w_bits, int a_bits, double milliseconds);
  bool has(const std::string& layer, int w_bits, int a_bits) const;
  // Throws ArgumentError naming the layer and bits when the entry is missing.
  double at(const std::string& layer, int w_bits, int a_bits) const;
  // Throws ArgumentError if any (layer, candidate pair) is missing.
  void require(const std::vector<LayerInfo>& layers, const std::vector<int>& w_bits,
               const std::vector<int>& a_bits) const;

  const std::string& machine() const { return machine_; }
  int batch() const { return batch_; }
  int threads() const { return threads_; }

  void save(const std::filesystem::path& path) const;
  // Validates the file; throws FormatError/IoError naming the file and the entry at fault.
  static LatencyTable load(const std::filesystem::path& path);
  // The same from text in memory; `source` names it in messages.
  static LatencyTable parse(std::string_view text, std::string_view source);

 private:
  std::string machine_;
  int batch_ = 1;
  int threads_ = 1;
  std::map<std::string, std::map<std::pair<int, int>, double>> entries_;
};

enum class CostKind { bitops, size, latency };
std::string_view cost_kind_name(CostKind kind);

// What the user asks for. avg_bits B is turned into the BitOPs of uniform W B A B (with pinned
// layers at their pinned bits) by resolve_budget.
struct Budget {
  enum class Kind { bitops, avg_bits, size_kb, latency_ms };
  Kind kind = Kind::bitops;
  double value = 0;  // GBitOPs per image, bits, KiB, or milliseconds
  std::string describe() const;
};

// The budget in the units of its cost model.
struct ResolvedBudget {
  CostKind kind = CostKind::bitops;
  double value = 0;  // BitOPs per image, weight bits, or ms
};
ResolvedBudget resolve_budget(const Budget& budget, const std::vector<LayerInfo>& layers);

// A per-layer cost function of one kind.
class CostModel {
 public:
  CostModel(CostKind kind, std::vector<LayerInfo> layers, const LatencyTable* latency = nullptr);
  CostKind kind() const { return kind_; }
  const std::vector<LayerInfo>& layers() const { return layers_; }
  double layer_cost(std::size_t layer, int w_bits, int a_bits) const;
  double total(const std::vector<LayerBits>& bits) const;
  // Cost of uniform bits on every searched layer, pinned layers at their pinned bits.
  double uniform(int w_bits, int a_bits) const;

 private:
  CostKind kind_;
  std::vector<LayerInfo> layers_;
  const LatencyTable* latency_;
};

// Uniform bits for every layer, pinned layers at their pinned bits.
std::vector<LayerBits> uniform_bits(const std::vector<LayerInfo>& layers, int w_bits, int a_bits);
double total_bitops(const std::vector<LayerInfo>& layers, const std::vector<LayerBits>& bits);
double total_weight_bits(const std::vector<LayerInfo>& layers, const std::vector<LayerBits>& bits);

// The budget penalty: λ · ln(E[C] / B)². Scale-free (the same λ works for BitOPs, bytes and
// milliseconds), zero exactly on the budget, and two-sided: below the budget it rewards using
// it, above it pushes down; its gradient grows with the relative miss.
struct Penalty {
  double value = 0;
  double d_cost = 0;  // d value / d E[C]
};
Penalty budget_penalty(double expected_cost, double budget, double lambda);

}  // namespace bitmix::search
