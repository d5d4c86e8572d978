// bitmix search: find a bitwidth per layer (weights and activations) under a budget.
#include <fmt/format.h>

#include <iostream>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/interrupt.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/run_metadata.hpp"
#include "bitmix/search/search.hpp"
#include "budget_options.hpp"
#include "cli.hpp"
#include "model_options.hpp"

namespace bitmix::cli {
namespace {

int run_search_command(int argc, char** argv) {
  ArgParser args("search",
                 "Search a bitwidth per layer for weights and activations under a budget, starting from a trained "
                 "float checkpoint: EBS (one set of meta weights per layer, quantized to every candidate) or the "
                 "DNAS baseline. Writes DIR/bits.json (the BitConfig), DIR/model.ckpt (ready for `bitmix train "
                 "--bits DIR/bits.json --init DIR/model.ckpt`), DIR/strengths.csv, DIR/bits.svg, DIR/strengths.svg "
                 "and DIR/summary.json.");
  args.common_options();
  add_data_subset_options(args);
  add_model_options(args);
  args.option("init", "CKPT", "float checkpoint to start from (bitmix train); without it the search starts from random weights", "");
  args.choice("method", {"ebs", "dnas", "adaqat"},
              "EBS (shared meta weights), the DNAS baseline (a weight copy and a convolution per candidate pair) or "
              "AdaQAT (a relaxed bitwidth per layer, stepped by finite differences of the loss)",
              "ebs");
  args.option("wbits", "LIST", "candidate weight bitwidths", "2,3,4,5");
  args.option("abits", "LIST", "candidate activation bitwidths", "2,3,4,5");
  args.option("wquant", "KIND", "weight quantizer of every candidate", "lsq");
  args.option("aquant", "KIND", "activation quantizer of every candidate", "lsq");
  args.option("first-last-bits", "B", "bits of the first conv and the last linear layer (0 = search them too)", "8");
  add_budget_options(args);
  args.option("penalty", "LAMBDA", "weight of the budget penalty lambda * ln(E[cost]/budget)^2", "2");
  args.option("strength-lr", "LR", "Adam learning rate of the strengths", "0.01");
  args.option("strength-warmup", "EPOCHS", "keep the strengths fixed for this many epochs", "0");
  args.flag("gumbel", "Gumbel-softmax strengths with an annealed temperature");
  args.option("tau-start", "T", "Gumbel-softmax: initial temperature", "5");
  args.option("tau-end", "T", "Gumbel-softmax: final temperature", "0.5");
  args.flag("bilevel", "first-order bilevel: step the strengths on a held-out part of the training set");
  args.option("holdout", "F", "bilevel: fraction of the training set held out", "0.1");
  args.option("adaqat-init", "B", "adaqat: initial relaxed bitwidth of every searched weight and activation", "8");
  args.option("adaqat-min-bits", "B", "adaqat: lowest bitwidth (the highest is 8)", "2");
  args.option("bit-lr", "LR", "adaqat: Adam step size of the relaxed bitwidths", "0.05");
  args.option("adaqat-every", "N", "adaqat: update the bitwidths every N training steps", "1");
  args.flag("no-fill", "do not spend budget left over after the argmax selection");
  args.option("resume", "CKPT",
              "continue an interrupted search from its DIR/supernet/model.ckpt (same options; SIGINT or SIGTERM stop a "
              "search at the next step with that checkpoint written)",
              "");
  add_training_options(args, {/*epochs=*/5, /*lr=*/0.01, /*wd=*/5e-4});
  if (!args.parse(argc, argv)) return 0;
  const uint64_t seed = args.apply_common();

  search::SearchOptions options;
  options.method = search::parse_search_method(args.get_string("method"));
  options.candidates = {ascending_bits(args, "wbits"), ascending_bits(args, "abits")};
  options.w_quant = quant::parse_quantizer_kind(args.get_string("wquant"));
  options.a_quant = quant::parse_quantizer_kind(args.get_string("aquant"));
  options.policy = first_last_policy(args);
  options.budget = parse_budgets(args, /*exactly_one=*/true).front();
  options.latency_table = args.get_string("latency-table");
  options.penalty_weight = args.get_double("penalty", 0.0, 1e6);
  options.strength_lr = static_cast<float>(args.get_double("strength-lr", 1e-9, 10.0));
  options.gumbel = args.get_flag("gumbel");
  options.temperature_start = args.get_double("tau-start", 1e-3, 1e3);
  options.temperature_end = args.get_double("tau-end", 1e-3, 1e3);
  options.bilevel = args.get_flag("bilevel");
  options.holdout_fraction = args.get_double("holdout", 1e-6, 0.999);
  options.fill = !args.get_flag("no-fill");
  options.adaqat.min_bits = static_cast<int>(args.get_int("adaqat-min-bits", 1, 7));
  options.adaqat.init_bits = args.get_double("adaqat-init", options.adaqat.min_bits, 8.0);
  options.adaqat.bit_lr = args.get_double("bit-lr", 1e-9, 10.0);
  options.adaqat.every = static_cast<int>(args.get_int("adaqat-every", 1, 1000000));
  if (options.method == search::SearchMethod::adaqat)
    for (const char* flag : {"gumbel", "bilevel", "wbits", "abits", "strength-lr", "tau-start", "tau-end", "holdout"})
      if (args.given(flag))
        throw UsageError(fmt::format("--{} applies to --method ebs/dnas, not adaqat (its bits range over "
                                     "--adaqat-min-bits..8)", flag));
  options.out_dir = args.get_string("out");
  options.resume = args.get_string("resume");

  data::DataSpec data_spec;
  const data::DatasetSplits splits = load_data(args, &data_spec);
  const nn::ModelSpec ms = model_spec(args, splits.train, seed, args.get_string("init"));
  options.train = training_options(args, data_spec, seed);
  options.strength_warmup_epochs =
      static_cast<float>(args.get_double("strength-warmup", 0.0, static_cast<double>(options.train.epochs)));
  options.model_name = ms.arch;
  std::unique_ptr<nn::Module> model = nn::make_model(ms);
  const std::string init = args.get_string("init");
  if (options.method == search::SearchMethod::adaqat) {
    options.candidates = {{}, {}};
    for (int b = options.adaqat.min_bits; b <= options.adaqat.max_bits; ++b) {
      options.candidates.w_bits.push_back(b);
      options.candidates.a_bits.push_back(b);
    }
  }
  if (!init.empty()) {
    // The search trains the weights further: on inputs normalized as they were trained on.
    nn::MetadataReadOptions read_options;
    read_options.resolve_bit_config_file = false;
    options.train.normalization = nn::read_run_metadata(nn::load_checkpoint(init), init, read_options).normalization;
    load_initial_weights(*model, init, /*partial=*/false);
  } else {
    std::cerr << "note: no --init checkpoint; searching from randomly initialized weights\n";
  }
  std::cerr << fmt::format("{} search on {} ({} train / {} test images), candidates W{{{}}} A{{{}}}, budget {}, "
                           "{} epochs, {} threads, {}\n",
                           search::search_method_name(options.method), data_spec.to_string(), splits.train.size(),
                           splits.test.size(), fmt::join(options.candidates.w_bits, ","),
                           fmt::join(options.candidates.a_bits, ","), options.budget.describe(), options.train.epochs,
                           num_threads(), isa_name(active_isa()));

  install_stop_handlers();  // SIGINT/SIGTERM: stop at the next step with a resumable checkpoint
  const search::SearchResult result =
      search::run_search(*model, splits, options, run_metadata(ms, data_spec, "search", argc, argv, seed, init));

  // The summary table.
  std::cout << fmt::format("\n{:<22} {:>10} {:>8} {:>6} {:>6}\n", "layer", "MACs", "params", "W", "A");
  for (const quant::LayerBits& l : result.config.layers)
    std::cout << fmt::format("{:<22} {:>10} {:>8} {:>6} {:>6}\n", l.name, l.macs.value_or(0), l.params.value_or(0),
                             l.w_bits, l.a_bits);
  const quant::BitTotals totals = result.config.compute_totals();
  std::cout << fmt::format("\n{}\nselected cost {:.6g} = {:.2f}% of the budget {:.6g} ({}; argmax {:.6g}, {} bits "
                           "lowered, {} raised)\nBitOPs {:.4g} G, weights {:.2f} KiB, supernet test accuracy {:.2f}%, "
                           "{:.1f} s, peak RSS {:.0f} MiB\nwrote {}/bits.json and {}/model.ckpt\n",
                           result.config.summary(), result.selection.cost,
                           100.0 * result.selection.cost / result.budget.value, result.budget.value,
                           search::cost_kind_name(result.budget.kind), result.selection.argmax_cost,
                           result.selection.lowered, result.selection.raised,
                           static_cast<double>(totals.bitops.value_or(0)) / 1e9,
                           static_cast<double>(totals.weight_bits.value_or(0)) / 8.0 / 1024.0,
                           result.history.empty() ? 0.0 : 100.0 * result.history.back().test_accuracy, result.seconds,
                           static_cast<double>(result.peak_rss_bytes) / (1 << 20), options.out_dir.string(),
                           options.out_dir.string());
  return 0;
}

const bool registered = register_command(
    {"search", "search a bitwidth per layer under a BitOPs/size/latency budget (EBS, DNAS or AdaQAT)", run_search_command});

}  // namespace
}  // namespace bitmix::cli
