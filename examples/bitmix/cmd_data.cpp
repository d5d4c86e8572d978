// bitmix data: load a dataset, validate it, and print what it holds.
#include <fmt/format.h>

#include <iostream>

#include "bitmix/core/timer.hpp"
#include "bitmix/data/dataset.hpp"
#include "bitmix/data/loader.hpp"
#include "cli.hpp"

namespace bitmix::cli {
namespace {

void describe(const data::Dataset& d, std::string_view split) {
  std::vector<int64_t> counts(static_cast<std::size_t>(d.num_classes()), 0);
  for (uint8_t label : d.labels) ++counts[label];
  std::cout << fmt::format("{:<5} {:>6} images of {}x{}x{}; per class:", split, d.size(), d.channels, d.height,
                           d.width);
  for (int64_t c : counts) std::cout << ' ' << c;
  std::cout << '\n';
}

int run_data(int argc, char** argv) {
  ArgParser args("data", "Load a dataset (validating every file), print its size, class balance, per-channel "
                         "statistics and the load time.");
  args.common_options(/*with_data=*/true, /*with_out=*/false);
  if (!args.parse(argc, argv)) return 0;
  args.apply_common();
  const data::DataSpec spec = data::parse_data_spec(args.get_string("data"));
  Stopwatch watch;
  const data::DatasetSplits splits = data::load_dataset(spec);
  const double load_seconds = watch.seconds();
  watch.restart();
  const data::Normalization norm = data::compute_normalization(splits.train);
  const double stats_seconds = watch.seconds();
  std::cout << fmt::format("dataset {} ({} classes: {})\n", spec.to_string(), splits.train.num_classes(),
                           fmt::join(splits.train.class_names, ", "));
  describe(splits.train, "train");
  describe(splits.test, "test");
  std::cout << fmt::format("train mean {:.4f}  std {:.4f}\n", fmt::join(norm.mean, " "), fmt::join(norm.stddev, " "));
  std::cout << fmt::format("loaded train+test in {:.3f} s; statistics in {:.3f} s\n", load_seconds, stats_seconds);
  return 0;
}

const bool registered =
    register_command({"data", "load and validate a dataset, print its statistics and load time", run_data});

}  // namespace
}  // namespace bitmix::cli
