// The allocation problems built from measured sensitivities, and the small types around them.
#include <fmt/format.h>

#include <algorithm>

#include "bitmix/core/error.hpp"
#include "bitmix/search/sensitivity.hpp"

namespace bitmix::search {

std::vector<LayerOptions> layer_options(const std::vector<LayerInfo>& layers, const Candidates& candidates) {
  validate_candidates(candidates);
  std::vector<LayerOptions> out;
  for (const LayerInfo& layer : layers) {
    LayerOptions o{layer.name, {}};
    if (layer.pinned) {
      o.options.push_back({layer.pinned_w_bits, layer.pinned_a_bits});
    } else {
      for (int w : candidates.w_bits)
        for (int a : candidates.a_bits) o.options.push_back({w, a});
    }
    out.push_back(std::move(o));
  }
  return out;
}

std::vector<std::vector<LayerBits>> option_bits(const std::vector<LayerOptions>& layers) {
  std::vector<std::vector<LayerBits>> out;
  for (const LayerOptions& l : layers) out.push_back(l.options);
  return out;
}

int64_t LabelledBatches::count() const {
  int64_t n = 0;
  for (const auto& l : labels) n += static_cast<int64_t>(l.size());
  return n;
}

void LabelledBatches::validate(std::string_view what) const {
  if (images.empty()) throw ArgumentError(fmt::format("{}: no batches (expected at least one)", what));
  if (images.size() != labels.size())
    throw ArgumentError(fmt::format("{}: {} image batches but {} label batches", what, images.size(), labels.size()));
  for (std::size_t b = 0; b < images.size(); ++b)
    if (images[b].rank() < 1 || images[b].dim(0) != static_cast<int64_t>(labels[b].size()) || labels[b].empty())
      throw ArgumentError(fmt::format("{}: batch {} has {} images and {} labels", what, b,
                                      images[b].rank() < 1 ? 0 : images[b].dim(0), labels[b].size()));
}

int64_t CladoMeasurement::size() const { return static_cast<int64_t>(single.size()); }

namespace {
std::vector<int64_t> offsets(const std::vector<LayerOptions>& layers) {
  std::vector<int64_t> off;
  int64_t n = 0;
  for (const LayerOptions& l : layers) {
    off.push_back(n);
    n += static_cast<int64_t>(l.options.size());
  }
  return off;
}

AllocationProblem skeleton(const std::vector<LayerOptions>& layers, std::vector<AllocationBudget> budgets) {
  AllocationProblem p;
  for (const LayerOptions& l : layers) {
    p.layer_names.push_back(l.name);
    p.option_counts.push_back(static_cast<int>(l.options.size()));
  }
  p.budgets = std::move(budgets);
  return p;
}
}  // namespace

std::vector<double> CladoMeasurement::clado_matrix() const {
  if (pair.empty()) throw ArgumentError("CLADO matrix: the measurement has no pair terms (measured with pairs off)");
  const int64_t n = size();
  const std::vector<int64_t> off = offsets(layers);
  std::vector<int64_t> layer_of(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < layers.size(); ++i)
    for (std::size_t b = 0; b < layers[i].options.size(); ++b) layer_of[static_cast<std::size_t>(off[i]) + b] = static_cast<int64_t>(i);
  std::vector<double> c(static_cast<std::size_t>(n * n), 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t s = 0; s < n; ++s) {
      double& v = c[static_cast<std::size_t>(r * n + s)];
      if (r == s)
        v = 2.0 * single[static_cast<std::size_t>(r)];
      else if (layer_of[static_cast<std::size_t>(r)] != layer_of[static_cast<std::size_t>(s)])
        v = pair[static_cast<std::size_t>(r * n + s)] - single[static_cast<std::size_t>(r)] - single[static_cast<std::size_t>(s)];
    }
  return c;
}

double CladoMeasurement::predicted_clado(std::span<const int> choice) const {
  const std::vector<double> c = clado_matrix();
  const std::vector<int64_t> off = offsets(layers);
  const int64_t n = size();
  double f = 0;
  for (std::size_t i = 0; i < layers.size(); ++i)
    for (std::size_t j = 0; j < layers.size(); ++j)
      f += c[static_cast<std::size_t>((off[i] + choice[i]) * n + off[j] + choice[j])];
  return 0.5 * f;
}

double CladoMeasurement::predicted_independent(std::span<const int> choice) const {
  const std::vector<int64_t> off = offsets(layers);
  double f = 0;
  for (std::size_t i = 0; i < layers.size(); ++i) f += single[static_cast<std::size_t>(off[i] + choice[i])];
  return f;
}

AllocationProblem clado_problem(const CladoMeasurement& measurement, std::vector<AllocationBudget> budgets, bool psd,
                                PsdProjection* projection) {
  AllocationProblem p = skeleton(measurement.layers, std::move(budgets));
  std::vector<double> c = measurement.clado_matrix();
  if (psd) {
    PsdProjection projected = project_psd(c, measurement.size());
    c = projected.matrix;
    if (projection != nullptr) *projection = std::move(projected);
  }
  for (double& v : c) v *= 0.5;  // objective ½ x^T C x: the predicted loss increase
  p.quadratic = std::move(c);
  return p;
}

AllocationProblem independent_problem(const CladoMeasurement& measurement, std::vector<AllocationBudget> budgets) {
  AllocationProblem p = skeleton(measurement.layers, std::move(budgets));
  p.linear = measurement.single;
  return p;
}

AllocationProblem hawq_problem(const HawqSensitivity& sensitivity, const std::vector<LayerOptions>& layers,
                               std::vector<AllocationBudget> budgets) {
  if (sensitivity.layers.size() != layers.size())
    throw ArgumentError(fmt::format("HAWQ problem: sensitivities for {} layers, options for {}", sensitivity.layers.size(),
                                    layers.size()));
  AllocationProblem p = skeleton(layers, std::move(budgets));
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (sensitivity.layers[i].omega.size() != layers[i].options.size())
      throw ArgumentError(fmt::format("HAWQ problem: layer '{}' has {} sensitivities for {} options", layers[i].name,
                                      sensitivity.layers[i].omega.size(), layers[i].options.size()));
    for (double v : sensitivity.layers[i].omega) p.linear.push_back(v);
  }
  return p;
}

std::vector<int> uniform_choice(const std::vector<LayerOptions>& layers, const std::vector<AllocationBudget>& budgets) {
  // The pairs every multi-option layer offers.
  std::vector<LayerBits> shared;
  bool first = true;
  for (const LayerOptions& l : layers) {
    if (l.options.size() < 2) continue;
    if (first) {
      shared = l.options;
      first = false;
      continue;
    }
    std::erase_if(shared, [&](const LayerBits& b) { return std::find(l.options.begin(), l.options.end(), b) == l.options.end(); });
  }
  if (first) {  // nothing to choose: every layer has one option
    return std::vector<int>(layers.size(), 0);
  }
  if (shared.empty()) throw ArgumentError("uniform allocation: the layers share no (w_bits, a_bits) option");
  std::sort(shared.begin(), shared.end(), [](const LayerBits& x, const LayerBits& y) {
    return x.w_bits != y.w_bits ? x.w_bits > y.w_bits : x.a_bits > y.a_bits;
  });
  std::string costs;
  for (const LayerBits& bits : shared) {
    std::vector<int> choice;
    for (const LayerOptions& l : layers) {
      if (l.options.size() < 2) {
        choice.push_back(0);
        continue;
      }
      choice.push_back(static_cast<int>(std::find(l.options.begin(), l.options.end(), bits) - l.options.begin()));
    }
    bool fits = true;
    costs.clear();
    for (const AllocationBudget& budget : budgets) {
      if (budget.cost.size() != layers.size())
        throw ArgumentError(fmt::format("budget '{}': costs for {} layers, expected {}", budget.name, budget.cost.size(),
                                        layers.size()));
      double total = 0;
      for (std::size_t i = 0; i < layers.size(); ++i) total += budget.cost[i].at(static_cast<std::size_t>(choice[i]));
      fits = fits && total <= budget.cap;
      costs += fmt::format("{}{} {} {} (cap {})", costs.empty() ? "" : ", ", budget.name, total, budget.unit, budget.cap);
    }
    if (fits) return choice;
  }
  throw ArgumentError(fmt::format("uniform allocation: no uniform configuration meets the budgets; the cheapest, "
                                  "W{}A{}, costs {}",
                                  shared.back().w_bits, shared.back().a_bits, costs));
}

}  // namespace bitmix::search
