#pragma once
// Pieces of `bitmix allocate` kept out of cmd_allocate.cpp so that it reads as the command:
// the artifacts it writes (sensitivity.csv, bits.svg, parts of summary.json) and the validation
// of the cross-layer model on random configurations (--evaluate-random).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bitmix/nn/module.hpp"
#include "bitmix/nn/ptq.hpp"
#include "bitmix/quant/bit_config.hpp"
#include "bitmix/search/allocation.hpp"
#include "bitmix/search/sensitivity.hpp"

namespace bitmix::cli {

// What one allocation measured and chose.
struct AllocationRecord {
  std::string method;
  std::vector<search::LayerInfo> infos;       // per quantizable layer, pins applied
  std::vector<search::LayerOptions> layers;   // options per layer
  std::vector<search::AllocationBudget> budgets;
  std::optional<search::CladoMeasurement> clado;  // clado (with pairs), independent (singles)
  std::optional<search::HawqSensitivity> hawq;
  std::optional<search::PsdProjection> psd;
  std::vector<int> choice;                    // option index per layer
};

// One row per (layer, option): bits, the option's cost in every budget, and what the method
// measured (ΔL_i for clado/independent; trace, perturbation and Ω for hawq).
std::string sensitivity_csv(const AllocationRecord& record);
// Bars of the chosen weight and activation bits per layer.
std::string allocation_bits_svg(const quant::BitConfig& config, const std::string& title);

// The chosen configuration as a BitConfig for `bitmix quantize` and `bitmix train --bits`:
// LSQ kinds, weights per channel (quantize replaces the kinds by its own).
quant::BitConfig allocation_bit_config(const AllocationRecord& record, const std::string& model_name,
                                       const quant::BitPolicy& policy);

// Spearman's rank correlation (ties get their mean rank); 0 when either side is constant.
double spearman(const std::vector<double>& x, const std::vector<double>& y);

// --evaluate-random N: N configurations drawn uniformly (each layer's option independently) among
// those meeting every budget, each quantized by PTQ exactly as the measurement quantizes a layer
// (same calibration set, no bias correction) and evaluated on the sensitivity set; the measured
// loss increase is set beside the CLADO quadratic (raw and PSD-projected) and the independent
// sum. Needs the CLADO measurement with pairs. Returns the JSON summary (Spearman correlations,
// the configurations) and writes the CSV text to `csv_out`.
nlohmann::ordered_json evaluate_random_configs(const AllocationRecord& record, int count, uint64_t seed,
                                               const std::function<std::unique_ptr<nn::Module>()>& make_model,
                                               const Shape& image_shape, const std::string& model_name,
                                               std::span<const Tensor> calibration,
                                               const search::LabelledBatches& sensitivity,
                                               const nn::PtqOptions& ptq, std::string* csv_out);

}  // namespace bitmix::cli
