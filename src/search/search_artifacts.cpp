#include "search/search_artifacts.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "core/strict_json.hpp"

#include "bitmix/support/plot.hpp"

namespace bitmix::search::detail {

std::string human_cost(CostKind kind, double value) {
  switch (kind) {
    case CostKind::bitops: return fmt::format("{:.4g} GBitOPs", value / 1e9);
    case CostKind::size: return fmt::format("{:.4g} KiB", value / 8.0 / 1024.0);
    case CostKind::latency: return fmt::format("{:.4g} ms", value);
  }
  return "?";
}

std::string strengths_csv(const std::vector<SearchedLayer>& layers, const Candidates& candidates,
                          const std::vector<StrengthRecord>& records, const CostModel& cost_model) {
  std::string csv = "epoch,layer,pinned";
  for (int b : candidates.w_bits) csv += fmt::format(",p_w{}", b);
  for (int b : candidates.a_bits) csv += fmt::format(",q_a{}", b);
  csv += ",expected_w_bits,expected_a_bits,expected_layer_cost,expected_total_cost\n";
  for (const StrengthRecord& r : records) {
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const LayerProbabilities& pq = r.probabilities[l];
      csv += fmt::format("{},{},{}", r.epoch, layers[l].info.name, layers[l].pinned ? 1 : 0);
      double ew = 0, ea = 0, cost = 0;
      if (layers[l].pinned) {
        for (std::size_t i = 0; i < candidates.w_bits.size() + candidates.a_bits.size(); ++i) csv += ",";
        ew = layers[l].w_bits()[0];
        ea = layers[l].a_bits()[0];
        cost = cost_model.layer_cost(l, static_cast<int>(ew), static_cast<int>(ea));
      } else {
        for (double p : pq.w) csv += fmt::format(",{:.6f}", p);
        for (double q : pq.a) csv += fmt::format(",{:.6f}", q);
        for (std::size_t i = 0; i < pq.w.size(); ++i) ew += pq.w[i] * candidates.w_bits[i];
        for (std::size_t j = 0; j < pq.a.size(); ++j) ea += pq.a[j] * candidates.a_bits[j];
        for (std::size_t i = 0; i < pq.w.size(); ++i)
          for (std::size_t j = 0; j < pq.a.size(); ++j)
            cost += pq.w[i] * pq.a[j] * cost_model.layer_cost(l, candidates.w_bits[i], candidates.a_bits[j]);
      }
      csv += fmt::format(",{:.4f},{:.4f},{:.6g},{:.6g}\n", ew, ea, cost, r.expected_cost);
    }
  }
  return csv;
}

// Two charts stacked in one SVG document (nested <svg> elements).
namespace {

std::string stack_svgs(const std::vector<std::string>& charts) {
  double height = 0, width = 0;
  std::string body;
  for (const std::string& chart : charts) {
    auto number_after = [&](const std::string& key) {
      const auto pos = chart.find(key);
      return pos == std::string::npos ? 0.0 : std::stod(chart.substr(pos + key.size()));
    };
    const double w = number_after("width=\""), h = number_after("height=\"");
    body += fmt::format("<svg y=\"{}\"{}", height, chart.substr(4));
    height += h;
    width = std::max(width, w);
  }
  return fmt::format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\">\n{2}</svg>\n",
                     width, height, body);
}

}  // namespace

std::string strengths_svg(const std::vector<SearchedLayer>& layers, const Candidates& candidates,
                          const std::vector<StrengthRecord>& records) {
  LineChart w_chart, a_chart;
  w_chart.title = "expected weight bits per layer during the search";
  a_chart.title = "expected activation bits per layer during the search";
  w_chart.x_label = a_chart.x_label = "epoch";
  w_chart.y_label = a_chart.y_label = "E[bits]";
  for (const StrengthRecord& r : records) {
    w_chart.x.push_back(r.epoch);
    a_chart.x.push_back(r.epoch);
  }
  for (std::size_t l = 0; l < layers.size(); ++l) {
    if (layers[l].pinned) continue;
    PlotSeries ws{layers[l].info.name, {}}, as{layers[l].info.name, {}};
    for (const StrengthRecord& r : records) {
      double ew = 0, ea = 0;
      for (std::size_t i = 0; i < r.probabilities[l].w.size(); ++i) ew += r.probabilities[l].w[i] * candidates.w_bits[i];
      for (std::size_t j = 0; j < r.probabilities[l].a.size(); ++j) ea += r.probabilities[l].a[j] * candidates.a_bits[j];
      ws.values.push_back(ew);
      as.values.push_back(ea);
    }
    w_chart.series.push_back(std::move(ws));
    a_chart.series.push_back(std::move(as));
  }
  return stack_svgs({render_svg(w_chart), render_svg(a_chart)});
}

std::string relaxed_bits_csv(const std::vector<SearchedLayer>& layers, const std::vector<RelaxedBitsRecord>& records) {
  std::string csv = "epoch,layer,pinned,relaxed_w_bits,relaxed_a_bits,w_bits,a_bits,total_cost\n";
  for (const RelaxedBitsRecord& r : records)
    for (std::size_t l = 0; l < layers.size(); ++l)
      csv += fmt::format("{},{},{},{:.4f},{:.4f},{},{},{:.6g}\n", r.epoch, layers[l].info.name, layers[l].pinned ? 1 : 0,
                         r.w[l], r.a[l], r.bits[l].w_bits, r.bits[l].a_bits, r.cost);
  return csv;
}

std::string relaxed_bits_svg(const std::vector<SearchedLayer>& layers, const std::vector<RelaxedBitsRecord>& records) {
  LineChart w_chart, a_chart;
  w_chart.title = "relaxed weight bits per layer (AdaQAT)";
  a_chart.title = "relaxed activation bits per layer (AdaQAT)";
  w_chart.x_label = a_chart.x_label = "epoch";
  w_chart.y_label = a_chart.y_label = "bits";
  for (const RelaxedBitsRecord& r : records) {
    w_chart.x.push_back(r.epoch);
    a_chart.x.push_back(r.epoch);
  }
  for (std::size_t l = 0; l < layers.size(); ++l) {
    if (layers[l].pinned) continue;
    PlotSeries ws{layers[l].info.name, {}}, as{layers[l].info.name, {}};
    for (const RelaxedBitsRecord& r : records) {
      ws.values.push_back(r.w[l]);
      as.values.push_back(r.a[l]);
    }
    w_chart.series.push_back(std::move(ws));
    a_chart.series.push_back(std::move(as));
  }
  return stack_svgs({render_svg(w_chart), render_svg(a_chart)});
}

std::string bits_svg(const quant::BitConfig& config, const std::string& title) {
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

// A candidate's local name without its candidate prefix: "b4.step" (EBS), "w4.step" / "a3.step"
// (DNAS) -> "step".

std::string strength_records_json(const std::vector<StrengthRecord>& records) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const StrengthRecord& r : records) {
    nlohmann::ordered_json layers = nlohmann::ordered_json::array();
    for (const LayerProbabilities& p : r.probabilities) layers.push_back({{"w", p.w}, {"a", p.a}});
    list.push_back({{"epoch", r.epoch}, {"expected_cost", r.expected_cost}, {"layers", layers}});
  }
  return nlohmann::ordered_json{{"format", "bitmix-strength-records"}, {"records", list}}.dump() + "\n";
}

std::vector<StrengthRecord> read_strength_records(const std::filesystem::path& path, int last_epoch,
                                                  std::size_t layer_count, const Candidates& candidates) {
  const std::string where = path.string();
  auto fail = [&](const std::string& what) -> FormatError {
    return FormatError(fmt::format("{}: {} (the search's record of its strengths, needed to resume it)", where, what));
  };
  std::vector<StrengthRecord> records;
  try {
    const nlohmann::json root = bitmix::detail::parse_json_strict(read_file_text(path), where);
    if (!root.is_object() || !root.contains("format") || root.at("format") != "bitmix-strength-records" ||
        !root.contains("records") || !root.at("records").is_array())
      throw fail("not a strength record file");
    auto doubles = [&](const nlohmann::json& j, std::size_t n, const char* what) {
      if (!j.is_array() || j.size() != n) throw fail(fmt::format("{}: expected {} numbers", what, n));
      std::vector<double> v;
      for (const nlohmann::json& x : j) {
        if (!x.is_number()) throw fail(fmt::format("{}: expected numbers", what));
        v.push_back(x.get<double>());
      }
      return v;
    };
    for (const nlohmann::json& r : root.at("records")) {
      if (!r.is_object() || !r.contains("epoch") || !r.at("epoch").is_number_integer() || !r.contains("expected_cost") ||
          !r.at("expected_cost").is_number() || !r.contains("layers") || !r.at("layers").is_array())
        throw fail(fmt::format("record {}: expected epoch, expected_cost and layers", records.size()));
      const int64_t epoch = r.at("epoch").get<int64_t>();
      if (epoch != static_cast<int64_t>(records.size()))
        throw fail(fmt::format("record {} is of epoch {}: expected consecutive epochs from 0", records.size(), epoch));
      if (epoch > last_epoch) break;  // written after the checkpoint the search resumes from
      const nlohmann::json& layers = r.at("layers");
      if (layers.size() != layer_count)
        throw fail(fmt::format("epoch {}: {} layers, the searched model has {}", epoch, layers.size(), layer_count));
      StrengthRecord record{static_cast<int>(epoch), {}, r.at("expected_cost").get<double>()};
      for (const nlohmann::json& l : layers) {
        if (!l.is_object() || !l.contains("w") || !l.contains("a") || !l.at("w").is_array() || !l.at("a").is_array())
          throw fail(fmt::format("epoch {}: a layer without the lists w and a", epoch));
        // Pinned layers have no probabilities (empty lists).
        const std::size_t nw = l.at("w").empty() ? 0 : candidates.w_bits.size();
        const std::size_t na = l.at("a").empty() ? 0 : candidates.a_bits.size();
        record.probabilities.push_back({doubles(l.at("w"), nw, "w"), doubles(l.at("a"), na, "a")});
      }
      records.push_back(std::move(record));
    }
  } catch (const nlohmann::json::exception& e) {
    throw fail(bitmix::detail::json_error_text(e));
  }
  if (static_cast<int>(records.size()) != last_epoch + 1)
    throw fail(fmt::format("records of epochs 0 to {} expected, found {}", last_epoch, records.size()));
  return records;
}

}  // namespace bitmix::search::detail
