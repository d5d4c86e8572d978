#pragma once
// Minimal SVG charts for the artifacts long runs leave behind (bits per layer, strength
// trajectories, training curves). Self-contained SVG text, no dependencies, viewable in any
// browser.

#include <string>
#include <vector>

namespace bitmix {

struct PlotSeries {
  std::string name;
  std::vector<double> values;
};

// Grouped bars: one group per category, one bar per series.
struct BarChart {
  std::string title;
  std::string y_label;
  std::vector<std::string> categories;
  std::vector<PlotSeries> series;  // each with one value per category
  double y_max = 0;                // 0 = from the data
};
std::string render_svg(const BarChart& chart);

// Lines over a shared x axis.
struct LineChart {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<double> x;
  std::vector<PlotSeries> series;  // each with one value per x
};
std::string render_svg(const LineChart& chart);

}  // namespace bitmix
