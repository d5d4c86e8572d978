#include "bitmix/search/selection.hpp"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "bitmix/core/error.hpp"

namespace bitmix::search {

void validate_candidates(const Candidates& candidates) {
  auto check = [](const std::vector<int>& bits, std::string_view what) {
    if (bits.empty()) throw ArgumentError(fmt::format("{}: no candidate bitwidths", what));
    for (std::size_t i = 0; i < bits.size(); ++i) {
      if (bits[i] < 1 || bits[i] > 8)
        throw ArgumentError(fmt::format("{}: candidate {} outside 1..8", what, bits[i]));
      if (i > 0 && bits[i] <= bits[i - 1])
        throw ArgumentError(fmt::format("{}: candidates must be distinct and ascending, got {}", what,
                                        fmt::join(bits, ",")));
    }
  };
  check(candidates.w_bits, "--wbits");
  check(candidates.a_bits, "--abits");
}

namespace {

void check_shapes(const CostModel& model, const Candidates& candidates,
                  const std::vector<LayerProbabilities>& probabilities) {
  validate_candidates(candidates);
  if (probabilities.size() != model.layers().size())
    throw ArgumentError(fmt::format("strengths for {} layers, the model has {}", probabilities.size(),
                                    model.layers().size()));
  for (std::size_t l = 0; l < probabilities.size(); ++l) {
    if (model.layers()[l].pinned) continue;
    if (probabilities[l].w.size() != candidates.w_bits.size() || probabilities[l].a.size() != candidates.a_bits.size())
      throw ArgumentError(fmt::format("layer {}: {}+{} probabilities for {}+{} candidates", model.layers()[l].name,
                                      probabilities[l].w.size(), probabilities[l].a.size(), candidates.w_bits.size(),
                                      candidates.a_bits.size()));
  }
}

double log_probability(double p) { return std::log(std::max(p, 1e-12)); }

std::size_t argmax(const std::vector<double>& p) {
  std::size_t best = 0;
  for (std::size_t i = 1; i < p.size(); ++i)
    if (p[i] > p[best]) best = i;
  return best;
}

}  // namespace

ExpectedCost expected_cost(const CostModel& model, const Candidates& candidates,
                           const std::vector<LayerProbabilities>& probabilities) {
  check_shapes(model, candidates, probabilities);
  ExpectedCost result;
  result.gradient.resize(probabilities.size());
  for (std::size_t l = 0; l < probabilities.size(); ++l) {
    const LayerInfo& info = model.layers()[l];
    if (info.pinned) {
      result.value += model.layer_cost(l, info.pinned_w_bits, info.pinned_a_bits);
      continue;
    }
    const LayerProbabilities& pq = probabilities[l];
    LayerProbabilities& grad = result.gradient[l];
    grad.w.assign(pq.w.size(), 0.0);
    grad.a.assign(pq.a.size(), 0.0);
    for (std::size_t i = 0; i < pq.w.size(); ++i)
      for (std::size_t j = 0; j < pq.a.size(); ++j) {
        const double f = model.layer_cost(l, candidates.w_bits[i], candidates.a_bits[j]);
        result.value += pq.w[i] * pq.a[j] * f;
        grad.w[i] += pq.a[j] * f;
        grad.a[j] += pq.w[i] * f;
      }
  }
  return result;
}

Selection select_bits(const CostModel& model, const Candidates& candidates,
                      const std::vector<LayerProbabilities>& probabilities, double budget,
                      const SelectionOptions& options) {
  check_shapes(model, candidates, probabilities);
  const std::size_t layers = probabilities.size();
  std::vector<std::size_t> wi(layers, 0), ai(layers, 0);
  for (std::size_t l = 0; l < layers; ++l) {
    if (model.layers()[l].pinned) continue;
    wi[l] = argmax(probabilities[l].w);
    ai[l] = argmax(probabilities[l].a);
  }
  auto bits_of = [&] {
    std::vector<LayerBits> bits(layers);
    for (std::size_t l = 0; l < layers; ++l) {
      const LayerInfo& info = model.layers()[l];
      bits[l] = info.pinned ? LayerBits{info.pinned_w_bits, info.pinned_a_bits}
                            : LayerBits{candidates.w_bits[wi[l]], candidates.a_bits[ai[l]]};
    }
    return bits;
  };
  auto layer_cost = [&](std::size_t l, std::size_t w, std::size_t a) {
    return model.layer_cost(l, candidates.w_bits[w], candidates.a_bits[a]);
  };

  Selection result;
  double cost = model.total(bits_of());
  result.argmax_cost = cost;

  // A move changes one layer's weight (or activation) candidate index by `step`.
  struct Move {
    std::size_t layer = 0;
    bool weights = true;
    double delta_cost = 0;
    double loss = 0;  // log-probability given up
  };
  auto moves = [&](int step) {
    std::vector<Move> list;
    for (std::size_t l = 0; l < layers; ++l) {
      if (model.layers()[l].pinned) continue;
      const double now = layer_cost(l, wi[l], ai[l]);
      for (bool weights : {true, false}) {
        const std::size_t index = weights ? wi[l] : ai[l];
        const std::size_t count = weights ? candidates.w_bits.size() : candidates.a_bits.size();
        if ((step < 0 && index == 0) || (step > 0 && index + 1 >= count)) continue;
        const std::size_t next = index + static_cast<std::size_t>(step);
        const std::vector<double>& p = weights ? probabilities[l].w : probabilities[l].a;
        const double after = weights ? layer_cost(l, next, ai[l]) : layer_cost(l, wi[l], next);
        list.push_back({l, weights, after - now, log_probability(p[index]) - log_probability(p[next])});
      }
    }
    return list;
  };
  auto apply = [&](const Move& m, int step) {
    std::size_t& index = m.weights ? wi[m.layer] : ai[m.layer];
    index = static_cast<std::size_t>(static_cast<long>(index) + step);
    cost += m.delta_cost;
  };

  // Repair: lower bits where it costs the least log-probability per unit of cost saved.
  while (cost > budget) {
    const Move* best = nullptr;
    double best_ratio = std::numeric_limits<double>::infinity();
    const std::vector<Move> candidates_down = moves(-1);
    for (const Move& m : candidates_down) {
      const double saved = -m.delta_cost;
      if (saved <= 0) continue;
      const double ratio = m.loss / saved;
      if (ratio < best_ratio) {
        best_ratio = ratio;
        best = &m;
      }
    }
    if (best == nullptr)
      throw ArgumentError(fmt::format("the budget ({:.6g} {}) is below the lowest cost the candidates reach "
                                      "({:.6g}); lower the candidates or raise the budget",
                                      budget, cost_kind_name(model.kind()), cost));
    apply(*best, -1);
    ++result.lowered;
  }
  // Fill: raise bits where the strengths object least per unit of cost, while within budget.
  while (options.fill) {
    const Move* best = nullptr;
    double best_ratio = std::numeric_limits<double>::infinity();
    const std::vector<Move> candidates_up = moves(+1);
    for (const Move& m : candidates_up) {
      if (cost + m.delta_cost > budget) continue;
      const double ratio = m.loss / std::max(m.delta_cost, 1e-12);
      if (ratio < best_ratio) {
        best_ratio = ratio;
        best = &m;
      }
    }
    if (best == nullptr) break;
    apply(*best, +1);
    ++result.raised;
  }
  result.bits = bits_of();
  result.cost = model.total(result.bits);  // recomputed, not accumulated, to avoid drift
  return result;
}

}  // namespace bitmix::search
