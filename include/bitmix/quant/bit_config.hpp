#pragma once
// BitConfig: per-layer bitwidths and quantizer kinds of a network, stored as a JSON file. It is
// the contract between the search (which writes it), quantization-aware fine-tuning and deploy
// (which read it). docs/quantization.md documents the schema:
//
//   {
//     "format": "bitmix-bitconfig",
//     "version": 1,
//     "model": "resnet20",
//     "policy": {"first_layer_bits": 8, "last_layer_bits": 8},
//     "layers": [
//       {"name": "conv1", "w_bits": 8, "a_bits": 8, "w_quant": "lsq", "a_quant": "lsq",
//        "w_granularity": "per_tensor", "macs": 442368, "params": 432},
//       ...
//     ],
//     "totals": {"macs": 40551424, "params": 268336, "bitops": 812343296, "weight_bits": 1105456},
//     "notes": "EBS search, 3.0 average bits"
//   }
//
// Layers are listed in the model's execution order; "policy" states which layers were pinned
// (the first conv and the last linear at 8 bits by default) and is checked against them.
// Loading validates every field and names the entry at fault (FormatError); in-memory checks
// throw ArgumentError with the same messages.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bitmix/quant/quantizer.hpp"

namespace bitmix::quant {

struct LayerBits {
  std::string name;
  int w_bits = 8;  // 1..8, or kFloatBits with w_quant float
  int a_bits = 8;  // 1..8, or kFloatBits with a_quant float
  QuantizerKind w_quant = QuantizerKind::lsq;
  QuantizerKind a_quant = QuantizerKind::lsq;
  Granularity w_granularity = Granularity::per_tensor;
  // DSConv weights only: input channels per block ("w_block", written for dsconv layers only).
  int64_t w_block = QuantizerSpec{}.block_size;
  std::optional<int64_t> macs;    // multiply-accumulates per example (written by the search)
  std::optional<int64_t> params;  // number of weights

  // The specs of the layer's weight quantizer (per_channel along the out_channels of axis 0) and
  // input-activation quantizer.
  QuantizerSpec weight_spec(int64_t out_channels = 1) const;
  QuantizerSpec activation_spec(bool signed_activations = false) const;
};

struct BitPolicy {
  // Bits (weights and activations) the first and last layers are pinned at; nullopt: not pinned.
  std::optional<int> first_layer_bits = 8;
  std::optional<int> last_layer_bits = 8;

  static BitPolicy none() { return BitPolicy{std::nullopt, std::nullopt}; }
  // "first layer at 8 bits, last layer at 8 bits", "no layer pinned", ...
  std::string describe() const;
};

struct BitTotals {
  std::optional<int64_t> macs;
  std::optional<int64_t> params;
  std::optional<int64_t> bitops;       // sum of macs * w_bits * a_bits
  std::optional<int64_t> weight_bits;  // sum of params * storage bits per weight code
};

class BitConfig {
 public:
  static constexpr std::string_view kFormat = "bitmix-bitconfig";
  static constexpr int kVersion = 1;

  std::string model;
  BitPolicy policy;
  std::vector<LayerBits> layers;  // in the model's execution order
  std::optional<BitTotals> totals;
  std::string notes;

  // Every layer at w_bits / a_bits with the given kinds, then the policy's pins applied.
  static BitConfig uniform(std::string model, const std::vector<std::string>& layer_names, int w_bits, int a_bits,
                           QuantizerKind w_quant, QuantizerKind a_quant, BitPolicy policy = BitPolicy{});

  // Parse and validate; FormatError naming `source` and the entry at fault.
  static BitConfig parse(std::string_view json_text, std::string_view source = "<bitconfig>");
  // IoError if unreadable, FormatError if malformed (both name the file).
  static BitConfig load(const std::filesystem::path& path);
  // Pretty JSON with a stable key order.
  std::string to_json() const;
  // Validates, then writes atomically (a failed write leaves no partial file).
  void save(const std::filesystem::path& path) const;

  // Every field in range, unique non-empty names, at least one layer, the policy's pins honoured.
  // Throws ArgumentError naming the entry.
  void validate() const;
  // validate() plus: exactly the model's layers, in the model's order.
  void validate_for_model(std::span<const std::string> model_layer_names) const;
  // Sets the pinned layers' bits (their kinds must support those bits: ArgumentError otherwise).
  void apply_policy();

  const LayerBits* find(std::string_view name) const noexcept;
  LayerBits* find(std::string_view name) noexcept;
  // ArgumentError naming the layer if absent.
  const LayerBits& at(std::string_view name) const;

  // Totals from the per-layer annotations; a field is absent if any layer lacks what it needs.
  BitTotals compute_totals() const;
  // One line for run summaries: layer count, bit ranges and means, the policy.
  std::string summary() const;
};

}  // namespace bitmix::quant
