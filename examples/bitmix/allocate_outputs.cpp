// Artifacts and validation of `bitmix allocate`: see allocate.hpp.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "allocate.hpp"
#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/nn/functional.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/support/plot.hpp"

namespace bitmix::cli {

std::string sensitivity_csv(const AllocationRecord& r) {
  std::string csv = "layer,w_bits,a_bits,chosen";
  for (const search::AllocationBudget& b : r.budgets) csv += fmt::format(",cost_{}_{}", b.name, b.unit);
  if (r.clado) csv += ",delta_loss";
  if (r.hawq) csv += ",hessian_trace,params,perturbation,omega";
  csv += '\n';
  std::size_t flat = 0;
  for (std::size_t i = 0; i < r.layers.size(); ++i)
    for (std::size_t b = 0; b < r.layers[i].options.size(); ++b, ++flat) {
      const search::LayerBits& bits = r.layers[i].options[b];
      csv += fmt::format("{},{},{},{}", r.layers[i].name, bits.w_bits, bits.a_bits,
                         r.choice.at(i) == static_cast<int>(b) ? 1 : 0);
      for (const search::AllocationBudget& budget : r.budgets) csv += fmt::format(",{:.10g}", budget.cost[i][b]);
      if (r.clado) csv += fmt::format(",{:.10g}", r.clado->single[flat]);
      if (r.hawq) {
        const search::HawqLayer& h = r.hawq->layers[i];
        csv += fmt::format(",{:.10g},{},{:.10g},{:.10g}", h.trace, h.params, h.perturbation[b], h.omega[b]);
      }
      csv += '\n';
    }
  return csv;
}

std::string allocation_bits_svg(const quant::BitConfig& config, const std::string& title) {
  BarChart chart;
  chart.title = title;
  chart.y_label = "bits";
  chart.y_max = 8;
  PlotSeries w{"weights", {}}, a{"activations", {}};
  for (const quant::LayerBits& l : config.layers) {
    chart.categories.push_back(l.name);
    w.values.push_back(l.w_bits);
    a.values.push_back(l.a_bits);
  }
  chart.series = {std::move(w), std::move(a)};
  return render_svg(chart);
}

quant::BitConfig allocation_bit_config(const AllocationRecord& r, const std::string& model_name,
                                       const quant::BitPolicy& policy) {
  quant::BitConfig config;
  config.model = model_name;
  config.policy = policy;
  for (std::size_t i = 0; i < r.layers.size(); ++i) {
    quant::LayerBits lb;
    lb.name = r.layers[i].name;
    const search::LayerBits& bits = r.layers[i].options.at(static_cast<std::size_t>(r.choice.at(i)));
    lb.w_bits = bits.w_bits;
    lb.a_bits = bits.a_bits;
    lb.w_quant = lb.a_quant = quant::QuantizerKind::lsq;
    lb.w_granularity = quant::Granularity::per_channel;
    lb.macs = r.infos[i].macs;
    lb.params = r.infos[i].params;
    config.layers.push_back(lb);
  }
  config.totals = config.compute_totals();
  return config;
}

namespace {
std::vector<double> ranks(const std::vector<double>& v) {
  std::vector<std::size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return v[a] < v[b]; });
  std::vector<double> r(v.size());
  for (std::size_t i = 0; i < order.size();) {
    std::size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    const double mean_rank = 0.5 * static_cast<double>(i + j) + 1.0;
    for (std::size_t k = i; k <= j; ++k) r[order[k]] = mean_rank;
    i = j + 1;
  }
  return r;
}
}  // namespace

double spearman(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size() || x.size() < 2) throw ArgumentError("spearman: needs two series of equal length >= 2");
  const std::vector<double> rx = ranks(x), ry = ranks(y);
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(rx.begin(), rx.end(), 0.0) / n, my = std::accumulate(ry.begin(), ry.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (std::size_t i = 0; i < rx.size(); ++i) {
    sxy += (rx[i] - mx) * (ry[i] - my);
    sxx += (rx[i] - mx) * (rx[i] - mx);
    syy += (ry[i] - my) * (ry[i] - my);
  }
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : 0.0;
}

nlohmann::ordered_json evaluate_random_configs(const AllocationRecord& r, int count, uint64_t seed,
                                               const std::function<std::unique_ptr<nn::Module>()>& make_model,
                                               const Shape& image_shape, const std::string& model_name,
                                               std::span<const Tensor> calibration,
                                               const search::LabelledBatches& sensitivity, const nn::PtqOptions& ptq,
                                               std::string* csv_out) {
  if (!r.clado || r.clado->pair.empty())
    throw ArgumentError("--evaluate-random needs the CLADO measurement with pairs (--method clado)");
  const search::CladoMeasurement& m = *r.clado;
  // The PSD-projected quadratic the solver minimized, for its own prediction.
  const search::AllocationProblem projected = search::clado_problem(m, r.budgets, /*psd=*/true);
  search::AllocationProblem feasibility;
  for (const search::LayerOptions& l : r.layers) {
    feasibility.layer_names.push_back(l.name);
    feasibility.option_counts.push_back(static_cast<int>(l.options.size()));
  }
  feasibility.budgets = r.budgets;

  Rng rng(seed ^ 0x52414e44ULL);
  std::vector<std::vector<int>> choices;
  for (int64_t attempt = 0; static_cast<int>(choices.size()) < count; ++attempt) {
    if (attempt > 1000000)
      throw ArgumentError(fmt::format("--evaluate-random: found only {} of {} random configurations within the budgets "
                                      "in 10^6 draws",
                                      choices.size(), count));
    std::vector<int> c;
    for (const search::LayerOptions& l : r.layers) c.push_back(static_cast<int>(rng.below(l.options.size())));
    bool fits = true;
    for (std::size_t k = 0; k < r.budgets.size(); ++k) fits = fits && feasibility.budget_cost(k, c) <= r.budgets[k].cap;
    if (fits) choices.push_back(std::move(c));
  }

  std::vector<double> measured, clado, clado_psd, independent;
  std::string csv = "config,measured_delta_loss,clado_predicted,clado_psd_predicted,independent_predicted";
  for (std::size_t k = 0; k < r.budgets.size(); ++k) csv += fmt::format(",cost_{}_{}", r.budgets[k].name, r.budgets[k].unit);
  csv += ",bits\n";
  for (std::size_t n = 0; n < choices.size(); ++n) {
    AllocationRecord one = r;
    one.choice = choices[n];
    quant::BitConfig config = nn::ptq_bit_config(allocation_bit_config(one, model_name, quant::BitPolicy::none()));
    std::unique_ptr<nn::Module> model = make_model();
    nn::quantize_post_training(*model, image_shape, config, calibration, ptq);
    double loss = 0;
    for (std::size_t b = 0; b < sensitivity.images.size(); ++b) {
      const Tensor& logits = model->forward(sensitivity.images[b]);
      loss += nn::softmax_cross_entropy(logits, sensitivity.labels[b], 0.0f, nullptr).loss *
              static_cast<double>(sensitivity.labels[b].size());
    }
    measured.push_back(loss / static_cast<double>(sensitivity.count()) - m.base_loss);
    clado.push_back(m.predicted_clado(choices[n]));
    clado_psd.push_back(projected.objective(choices[n]));
    independent.push_back(m.predicted_independent(choices[n]));
    std::string bits;
    for (std::size_t i = 0; i < r.layers.size(); ++i) {
      const search::LayerBits& lb = r.layers[i].options[static_cast<std::size_t>(choices[n][i])];
      bits += fmt::format("{}{}/{}", i == 0 ? "" : " ", lb.w_bits, lb.a_bits);
    }
    csv += fmt::format("{},{:.8g},{:.8g},{:.8g},{:.8g}", n, measured.back(), clado.back(), clado_psd.back(),
                       independent.back());
    for (std::size_t k = 0; k < r.budgets.size(); ++k) csv += fmt::format(",{:.10g}", feasibility.budget_cost(k, choices[n]));
    csv += fmt::format(",{}\n", bits);
  }
  if (csv_out != nullptr) *csv_out = std::move(csv);
  nlohmann::ordered_json j;
  j["configurations"] = choices.size();
  j["seed"] = seed;
  j["measured_on"] = "the sensitivity set";
  if (choices.size() >= 2) {
    j["spearman_clado"] = spearman(measured, clado);
    j["spearman_clado_psd"] = spearman(measured, clado_psd);
    j["spearman_independent"] = spearman(measured, independent);
  }
  return j;
}

}  // namespace bitmix::cli
