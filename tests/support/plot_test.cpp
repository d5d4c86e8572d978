#include "bitmix/support/plot.hpp"

#include <gtest/gtest.h>

#include "bitmix/core/error.hpp"

namespace bitmix {
namespace {

int count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

TEST(Plot, BarChartHasOneBarPerValueAndEscapesText) {
  BarChart chart;
  chart.title = "bits <per> layer & more";
  chart.y_label = "bits";
  chart.categories = {"conv1", "layer1.0.conv1", "fc"};
  chart.series = {{"weights", {8, 3, 8}}, {"activations", {8, 4, 8}}};
  const std::string svg = render_svg(chart);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(count(svg, "<title>"), 6);  // one tooltip per bar
  EXPECT_NE(svg.find("bits &lt;per&gt; layer &amp; more"), std::string::npos);
  EXPECT_EQ(svg.find("<per>"), std::string::npos);
  EXPECT_NE(svg.find("layer1.0.conv1 activations: 4"), std::string::npos);
}

TEST(Plot, LineChartDrawsOnePolylinePerSeries) {
  LineChart chart;
  chart.title = "strengths";
  chart.x = {0, 1, 2, 3};
  chart.series = {{"a", {0.1, 0.2, 0.4, 0.8}}, {"b", {0.9, 0.8, 0.6, 0.2}}, {"c", {0.5, 0.5, 0.5, 0.5}}};
  const std::string svg = render_svg(chart);
  EXPECT_EQ(count(svg, "<polyline"), 3);
  EXPECT_EQ(count(svg, "</polyline>"), 3);
}

TEST(Plot, MismatchedSeriesAreRejected) {
  BarChart bars;
  bars.categories = {"x", "y"};
  bars.series = {{"s", {1}}};
  EXPECT_THROW(render_svg(bars), ArgumentError);
  LineChart lines;
  lines.x = {1, 2};
  lines.series = {{"s", {1, 2, 3}}};
  EXPECT_THROW(render_svg(lines), ArgumentError);
}

}  // namespace
}  // namespace bitmix
