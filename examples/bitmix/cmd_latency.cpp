// bitmix latency: measure the per-layer kernel latency table a latency budget searches against.
#include <fmt/format.h>

#include <iostream>

#include "bitmix/core/cpu.hpp"
#include "bitmix/support/progress.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/deploy/layer_timing.hpp"
#include "bitmix/runtime/layer_timing.hpp"
#include "bitmix/search/cost.hpp"
#include "cli.hpp"
#include "model_options.hpp"

namespace bitmix::cli {
namespace {

int run_latency(int argc, char** argv) {
  ArgParser args("latency",
                 "Time every quantizable layer of a model as the inference session runs it at every (w_bits, "
                 "a_bits) pair, on this machine with the active ISA and thread count, and write the latency table "
                 "`bitmix search --budget-latency-ms T --latency-table FILE` uses. --data sets the input shape "
                 "and class count.");
  args.common_options(/*with_data=*/true, /*with_out=*/false);
  add_model_options(args);
  args.option("wbits", "LIST", "weight bitwidths to time", "1,2,3,4,5,6,7,8");
  args.option("abits", "LIST", "activation bitwidths to time", "1,2,3,4,5,6,7,8");
  args.option("batch", "B", "images per call", "1");
  args.option("min-time", "S", "seconds per entry (repeats until reached; the median is kept)", "0.02");
  args.option("output", "FILE", "where to write the table (JSON)", "", /*required=*/true);
  if (!args.parse(argc, argv)) return 0;
  const uint64_t seed = args.apply_common();

  const data::DataSpec spec = data::parse_data_spec(args.get_string("data"));
  const data::DatasetSplits splits = data::load_dataset(spec);
  const nn::ModelSpec ms = model_spec(args, splits.train, seed);
  const std::unique_ptr<nn::Module> model = nn::make_model(ms);
  const std::vector<nn::LayerInfo> layers =
      model->quantizable_layers({splits.train.channels, splits.train.height, splits.train.width});

  const std::vector<int> w_bits = args.get_int_list("wbits", 1, 8);
  const std::vector<int> a_bits = args.get_int_list("abits", 1, 8);
  const int batch = static_cast<int>(args.get_int("batch", 1, 4096));
  runtime::TimingOptions options;
  options.min_seconds = args.get_double("min-time", 0.0, 60.0);
  options.seed = seed;
  // Each layer as the runtime will run it (deploy maps nn layers to runtime shapes), timed by
  // runtime's session; search only reads the table.
  const std::vector<runtime::LayerShape> shapes = deploy::timing_shapes(layers, batch);
  const std::string machine = fmt::format("{}, {}, {} threads", cpu_features().model_name, isa_name(active_isa()),
                                          num_threads());
  Progress progress("latency", static_cast<int64_t>(layers.size()), "layer");
  search::LatencyTable table(machine, batch, num_threads());
  for (std::size_t i = 0; i < layers.size(); ++i) {
    for (int w : w_bits)
      for (int a : a_bits) table.set(layers[i].name, w, a, runtime::time_layer_ms(shapes[i], w, a, options));
    progress.update(static_cast<int64_t>(i + 1), layers[i].name);
  }
  progress.finish();
  table.save(args.get_string("output"));
  double w2a2 = 0, w8a8 = 0;
  for (const nn::LayerInfo& l : layers) {
    if (table.has(l.name, 2, 2)) w2a2 += table.at(l.name, 2, 2);
    if (table.has(l.name, 8, 8)) w8a8 += table.at(l.name, 8, 8);
  }
  std::cout << fmt::format("{} layers x {} pairs on {} (batch {}); sum over layers: W2A2 {:.3f} ms, W8A8 {:.3f} ms; "
                           "wrote {}\n",
                           layers.size(), w_bits.size() * a_bits.size(), machine, batch, w2a2,
                           w8a8, args.get_string("output"));
  return 0;
}

const bool registered =
    register_command({"latency", "measure the per-layer kernel latency table for latency budgets", run_latency});

}  // namespace
}  // namespace bitmix::cli
