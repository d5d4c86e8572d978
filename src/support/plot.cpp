#include "bitmix/support/plot.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "bitmix/core/error.hpp"

namespace bitmix {
namespace {

constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr int kPaletteSize = 10;

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A "nice" axis maximum and tick step for values up to `v`.
std::pair<double, double> nice_axis(double v) {
  if (!(v > 0) || !std::isfinite(v)) return {1.0, 0.25};
  const double magnitude = std::pow(10.0, std::floor(std::log10(v)));
  for (double step : {0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0}) {
    const double s = step * magnitude;
    if (v / s <= 8) return {std::ceil(v / s - 1e-9) * s, s};
  }
  return {v, v / 4};
}

struct Frame {
  double width, height, left = 70, right = 160, top = 40, bottom = 90;
  double plot_w() const { return width - left - right; }
  double plot_h() const { return height - top - bottom; }
};

std::string header(const Frame& f, const std::string& title, const std::string& y_label) {
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      f.width, f.height);
  s += fmt::format("<text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n", f.width / 2,
                   escape(title));
  s += fmt::format("<text transform=\"translate(16,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
                   f.top + f.plot_h() / 2, escape(y_label));
  return s;
}

std::string y_axis(const Frame& f, double y_max, double step) {
  std::string s;
  for (double v = 0; v <= y_max + step * 1e-6; v += step) {
    const double y = f.top + f.plot_h() * (1 - v / y_max);
    s += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>\n", f.left, y,
                     f.left + f.plot_w(), y);
    s += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:g}</text>\n", f.left - 6, y + 4, v);
  }
  s += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"black\"/>\n", f.left, f.top,
                   f.top + f.plot_h());
  s += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n", f.left,
                   f.top + f.plot_h(), f.left + f.plot_w());
  return s;
}

std::string legend(const Frame& f, const std::vector<PlotSeries>& series) {
  std::string s;
  for (std::size_t i = 0; i < series.size(); ++i) {
    const double y = f.top + 10 + 18 * static_cast<double>(i);
    s += fmt::format("<rect x=\"{}\" y=\"{:.1f}\" width=\"12\" height=\"12\" fill=\"{}\"/>\n",
                     f.width - f.right + 14, y - 10, kPalette[i % kPaletteSize]);
    s += fmt::format("<text x=\"{}\" y=\"{:.1f}\">{}</text>\n", f.width - f.right + 32, y, escape(series[i].name));
  }
  return s;
}

}  // namespace

std::string render_svg(const BarChart& chart) {
  for (const PlotSeries& s : chart.series)
    if (s.values.size() != chart.categories.size())
      throw ArgumentError(fmt::format("bar chart '{}': series '{}' has {} values for {} categories", chart.title,
                                      s.name, s.values.size(), chart.categories.size()));
  double data_max = 0;
  for (const PlotSeries& s : chart.series)
    for (double v : s.values) data_max = std::max(data_max, v);
  const auto [y_max, step] = nice_axis(chart.y_max > 0 ? chart.y_max : data_max);
  Frame f{std::max(480.0, 70 + 160 + 26.0 * static_cast<double>(chart.categories.size() * std::max<std::size_t>(chart.series.size(), 1))), 400};
  std::string svg = header(f, chart.title, chart.y_label) + y_axis(f, y_max, step);
  const double group_w = f.plot_w() / static_cast<double>(std::max<std::size_t>(chart.categories.size(), 1));
  const double bar_w = group_w * 0.8 / static_cast<double>(std::max<std::size_t>(chart.series.size(), 1));
  for (std::size_t c = 0; c < chart.categories.size(); ++c) {
    const double x0 = f.left + group_w * static_cast<double>(c) + group_w * 0.1;
    for (std::size_t s = 0; s < chart.series.size(); ++s) {
      const double v = std::clamp(chart.series[s].values[c], 0.0, y_max);
      const double h = f.plot_h() * v / y_max;
      svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\">"
                         "<title>{} {}: {:g}</title></rect>\n",
                         x0 + bar_w * static_cast<double>(s), f.top + f.plot_h() - h, bar_w, h,
                         kPalette[s % kPaletteSize], escape(chart.categories[c]), escape(chart.series[s].name),
                         chart.series[s].values[c]);
    }
    const double label_x = x0 + group_w * 0.4;
    svg += fmt::format("<text transform=\"translate({:.1f},{:.1f}) rotate(-45)\" text-anchor=\"end\" "
                       "font-size=\"10\">{}</text>\n",
                       label_x, f.top + f.plot_h() + 12, escape(chart.categories[c]));
  }
  return svg + legend(f, chart.series) + "</svg>\n";
}

std::string render_svg(const LineChart& chart) {
  for (const PlotSeries& s : chart.series)
    if (s.values.size() != chart.x.size())
      throw ArgumentError(fmt::format("line chart '{}': series '{}' has {} values for {} x positions", chart.title,
                                      s.name, s.values.size(), chart.x.size()));
  double data_max = 0;
  for (const PlotSeries& s : chart.series)
    for (double v : s.values)
      if (std::isfinite(v)) data_max = std::max(data_max, v);
  const auto [y_max, step] = nice_axis(data_max);
  const double x_min = chart.x.empty() ? 0 : *std::min_element(chart.x.begin(), chart.x.end());
  double x_max = chart.x.empty() ? 1 : *std::max_element(chart.x.begin(), chart.x.end());
  if (x_max <= x_min) x_max = x_min + 1;
  Frame f{720, 420};
  std::string svg = header(f, chart.title, chart.y_label) + y_axis(f, y_max, step);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", f.left + f.plot_w() / 2,
                     f.height - 40, escape(chart.x_label));
  for (int t = 0; t <= 5; ++t) {
    const double v = x_min + (x_max - x_min) * t / 5.0;
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{:g}</text>\n",
                       f.left + f.plot_w() * t / 5.0, f.top + f.plot_h() + 16, std::round(v * 100) / 100);
  }
  for (std::size_t s = 0; s < chart.series.size(); ++s) {
    std::string points;
    for (std::size_t i = 0; i < chart.x.size(); ++i) {
      const double v = chart.series[s].values[i];
      if (!std::isfinite(v)) continue;
      const double x = f.left + f.plot_w() * (chart.x[i] - x_min) / (x_max - x_min);
      const double y = f.top + f.plot_h() * (1 - std::clamp(v, 0.0, y_max) / y_max);
      points += fmt::format("{:.1f},{:.1f} ", x, y);
    }
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title>"
                       "</polyline>\n",
                       kPalette[s % kPaletteSize], points, escape(chart.series[s].name));
  }
  return svg + legend(f, chart.series) + "</svg>\n";
}

}  // namespace bitmix
