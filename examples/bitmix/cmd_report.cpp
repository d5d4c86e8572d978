// bitmix report: one table comparing a float run with quantized runs (accuracy, BitOPs, size,
// measured latency), from the files the other subcommands wrote.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/core/timer.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "core/strict_json.hpp"
#include "cli.hpp"

namespace bitmix::cli {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

json read_json(const fs::path& path) {
  const std::string text = read_file_text(path);
  json j = bitmix::detail::parse_json_strict(text, path.string());
  if (!j.is_object()) throw FormatError(fmt::format("{}: not a JSON object", path.string()));
  return j;
}

double number_at(const json& j, const std::vector<std::string>& keys, const fs::path& source) {
  const json* node = &j;
  std::string path;
  for (const std::string& k : keys) {
    path += (path.empty() ? "" : ".") + k;
    if (!node->is_object() || !node->contains(k))
      throw FormatError(fmt::format("{}: missing \"{}\"", source.string(), path));
    node = &(*node)[k];
  }
  if (!node->is_number()) throw FormatError(fmt::format("{}: \"{}\" is not a number", source.string(), path));
  return node->get<double>();
}

// Median latency of the float model at batch 1 on one thread, with bitmix's fp32 engine.
double float_latency_us(const fs::path& checkpoint) {
  nn::LoadedModel loaded = nn::load_model_checkpoint(checkpoint);
  loaded.model->eval();
  const int previous = num_threads();
  set_num_threads(1);
  Tensor image({1, loaded.spec.in_channels, loaded.spec.image_height, loaded.spec.image_width});
  Rng rng(1);
  for (float& v : image.values()) v = rng.normal();
  for (int i = 0; i < 3; ++i) loaded.model->forward(image);
  std::vector<double> times;
  Stopwatch total;
  while (times.size() < 20 || total.seconds() < 1.0) {
    Stopwatch one;
    loaded.model->forward(image);
    times.push_back(one.seconds() * 1e6);
  }
  set_num_threads(previous);
  std::nth_element(times.begin(), times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2), times.end());
  return times[times.size() / 2];
}

int run_report(int argc, char** argv) {
  ArgParser args("report",
                 "Print a markdown table comparing a float training run with quantized runs: test accuracy of the "
                 "fake-quant model (DIR/summary.json) and of the integer .bmx model (DIR/eval.json), GBitOPs per "
                 "image, weight size, and latency at batch 1 on one thread (DIR/bench.json; the float row is "
                 "timed here with bitmix's fp32 engine).");
  args.option("float", "DIR", "the float run (bitmix train --out DIR)", "", /*required=*/true);
  args.repeated("run", "NAME=DIR",
                 "a quantized run: fine-tuned with bitmix train, then eval --json DIR/eval.json and bench --json "
                 "DIR/bench.json");
  if (!args.parse(argc, argv)) return 0;
  std::vector<std::pair<std::string, fs::path>> runs;
  for (const std::string& spec : args.get_strings("run")) {
    const auto eq = spec.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
      throw UsageError(fmt::format("--run '{}': expected NAME=DIR", spec));
    runs.emplace_back(spec.substr(0, eq), spec.substr(eq + 1));
  }

  const fs::path float_dir = args.get_string("float");
  const json float_summary = read_json(float_dir / "summary.json");
  const double float_accuracy = number_at(float_summary, {"final", "test_accuracy"}, float_dir / "summary.json");
  const double float_us = float_latency_us(float_dir / "model.ckpt");

  std::cout << "| model | test acc. fake-quant | test acc. integer (.bmx) | GBitOPs/image | weights (KiB) | "
               "latency b=1, 1 thread (us) | vs fp32 |\n|---|---|---|---|---|---|---|\n";
  double float_gbitops = 0, float_kib = 0;
  std::vector<std::string> rows;
  for (const auto& [name, dir] : runs) {
    const json summary = read_json(dir / "summary.json");
    const json eval = read_json(dir / "eval.json");
    const json bench = read_json(dir / "bench.json");
    const double fq = number_at(summary, {"final", "test_accuracy"}, dir / "summary.json");
    const double integer = number_at(eval, {"accuracy"}, dir / "eval.json");
    const double gbitops = number_at(summary, {"quantization", "bitops"}, dir / "summary.json") / 1e9;
    const double kib = number_at(summary, {"quantization", "weight_bytes"}, dir / "summary.json") / 1024.0;
    float_gbitops = number_at(summary, {"quantization", "float_bitops"}, dir / "summary.json") / 1e9;
    float_kib = number_at(summary, {"quantization", "float_weight_bytes"}, dir / "summary.json") / 1024.0;
    const double us = number_at(bench, {"median_us"}, dir / "bench.json");
    if (number_at(bench, {"batch"}, dir / "bench.json") != 1 || number_at(bench, {"threads"}, dir / "bench.json") != 1)
      throw FormatError(fmt::format("{}: measured with another batch or thread count than 1 and 1",
                                    (dir / "bench.json").string()));
    rows.push_back(fmt::format("| {} | {:.2f}% | {:.2f}% | {:.3f} | {:.1f} | {:.0f} | {:.1f}x faster |\n", name,
                               100 * fq, 100 * integer, gbitops, kib, us, float_us / us));
  }
  std::cout << fmt::format("| fp32 | {:.2f}% | - | {} | {} | {:.0f} | 1.0x |\n", 100 * float_accuracy,
                           float_gbitops > 0 ? fmt::format("{:.2f}", float_gbitops) : std::string("-"),
                           float_kib > 0 ? fmt::format("{:.1f}", float_kib) : std::string("-"), float_us);
  for (const std::string& row : rows) std::cout << row;
  return 0;
}

const bool registered = register_command(
    {"report", "compare a float run with quantized runs: accuracy, BitOPs, size, latency", run_report});

}  // namespace
}  // namespace bitmix::cli
