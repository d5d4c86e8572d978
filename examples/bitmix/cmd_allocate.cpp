// bitmix allocate: choose bits per layer for a trained float network after training, under one
// or several budgets: CLADO (cross-layer), HAWQ-style (Hessian traces), independent, uniform.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "allocate.hpp"
#include "bitmix/core/cpu.hpp"
#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/core/timer.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/support/progress.hpp"
#include "budget_options.hpp"
#include "cli.hpp"
#include "model_options.hpp"
#include "post_training.hpp"

namespace bitmix::cli {
namespace {

// The search's view of the model's layers, the first and last pinned by the policy.
std::vector<search::LayerInfo> layer_infos(const nn::Module& model, const Shape& image, const quant::BitPolicy& policy) {
  const std::vector<nn::LayerInfo> layers = model.quantizable_layers(image);
  std::vector<search::LayerInfo> out;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    search::LayerInfo info{layers[i].name, layers[i].macs_per_image, layers[i].weight_count, false, 8, 8};
    const std::optional<int> pin = i == 0 ? policy.first_layer_bits
                                   : i + 1 == layers.size() ? policy.last_layer_bits
                                                            : std::nullopt;
    if (pin) {
      info.pinned = true;
      info.pinned_w_bits = info.pinned_a_bits = *pin;
    }
    out.push_back(info);
  }
  return out;
}

// The user's budgets as costs per (layer, option) with caps in the cost models' units.
std::vector<search::AllocationBudget> allocation_budgets(const std::vector<search::Budget>& budgets,
                                                         const std::vector<search::LayerInfo>& infos,
                                                         const std::vector<search::LayerOptions>& layers,
                                                         const std::optional<search::LatencyTable>& latency) {
  std::vector<search::AllocationBudget> out;
  for (const search::Budget& b : budgets) {
    const search::ResolvedBudget resolved = search::resolve_budget(b, infos);
    const search::CostModel model(resolved.kind, infos, latency ? &*latency : nullptr);
    search::AllocationBudget budget = search::allocation_budget(model, search::option_bits(layers), resolved.value);
    if (b.kind == search::Budget::Kind::avg_bits) budget.name = "avg-bits";
    out.push_back(std::move(budget));
  }
  return out;
}

std::string human(const search::AllocationBudget& b, double value) {
  if (b.unit == "bits") return fmt::format("{:.4g} KiB", value / 8.0 / 1024.0);
  if (b.unit == "BitOPs") return fmt::format("{:.4g} GBitOPs", value / 1e9);
  return fmt::format("{:.4g} {}", value, b.unit);
}

int run_allocate(int argc, char** argv) {
  ArgParser args("allocate",
                 "Choose a bitwidth per layer for a trained float checkpoint without training, under one or several "
                 "budgets at once: clado (measured single-layer and pairwise loss increases, an exact integer "
                 "quadratic program), hawq (Hessian traces by Hutchinson's method, an exact integer program), "
                 "independent (CLADO's single-layer terms alone) or uniform (the largest uniform bits inside the "
                 "budgets). Writes DIR/bits.json (for bitmix quantize --bits or bitmix train --bits), "
                 "DIR/summary.json, DIR/sensitivity.csv and DIR/bits.svg; clado and independent keep their "
                 "measurements in --cache, so an interrupted run resumes and other budgets reuse them.");
  args.common_options(/*with_data=*/false, /*with_out=*/true);
  args.option("data", "SPEC", "dataset: fashion-mnist[:DIR] | mnist:DIR | cifar10:DIR (default: the checkpoint's)");
  args.option("init", "CKPT", "the trained float checkpoint (bitmix train)", "", true);
  args.choice("method", {"clado", "hawq", "independent", "uniform"}, "allocator", "clado");
  args.option("wbits", "LIST", "candidate weight bitwidths", "2,3,4,8");
  args.option("abits", "LIST", "candidate activation bitwidths", "8");
  args.option("first-last-bits", "B", "bits of the first conv and the last linear layer (0 = allocate them too)", "8");
  add_budget_options(args);
  add_calibration_options(args, "1024");
  args.option("sens-images", "N", "training images the sensitivities are measured on (disjoint from the calibration images)",
              "1024");
  args.option("cache", "FILE", "clado/independent: measurement cache (default DIR/clado-cache.txt)");
  args.flag("no-psd", "clado: solve with the measured matrix as it is, without projecting it onto the PSD cone");
  args.option("hawq-iterations", "N", "hawq: Hutchinson probes at most", "100");
  args.option("hawq-tolerance", "T", "hawq: stop when every trace moves by less than this, relatively", "1e-3");
  args.option("time-limit", "S", "give up the exact solve after S seconds with the best configuration found (0 = none)", "0");
  args.option("evaluate-random", "N",
              "clado: also quantize N random configurations within the budgets and compare their measured loss increase "
              "with the CLADO and independent predictions (DIR/random_configs.csv, Spearman in summary.json)",
              "0");
  args.flag("no-progress", "no progress bar");
  if (!args.parse(argc, argv)) return 0;
  const uint64_t seed = args.apply_common();
  const std::string method = args.get_string("method");
  const search::Candidates candidates{ascending_bits(args, "wbits"), ascending_bits(args, "abits")};
  const quant::BitPolicy policy = first_last_policy(args);
  const std::vector<search::Budget> user_budgets = parse_budgets(args, /*exactly_one=*/false);
  const int64_t calib_images = args.get_int("calib-images", 1, 1 << 30);
  const bool measures = method != "uniform";
  const int64_t sens_images = measures ? args.get_int("sens-images", 1, 1 << 30) : 0;
  const int64_t batch = args.get_int("calib-batch", 1, 1 << 16);
  const int random_configs = static_cast<int>(args.get_int("evaluate-random", 0, 100000));
  if (random_configs > 0 && method != "clado") throw UsageError("--evaluate-random needs --method clado");
  search::SolverOptions solver;
  solver.time_limit_seconds = args.get_double("time-limit", 0.0, 1e9);
  const nn::PtqOptions ptq = ptq_options(args);
  const std::filesystem::path out = args.get_string("out");
  const std::filesystem::path cache = args.given("cache") ? std::filesystem::path(args.get_string("cache")) : out / "clado-cache.txt";
  const bool progress_bar = !args.get_flag("no-progress");

  const FloatCheckpoint ckpt = load_float_checkpoint(args.get_string("init"));
  std::optional<search::LatencyTable> latency;
  if (!args.get_string("latency-table").empty()) latency = search::LatencyTable::load(args.get_string("latency-table"));
  std::string data_spec;
  const data::DatasetSplits splits = load_checkpoint_data(args, ckpt, &data_spec);
  const Shape image = ckpt.image_shape();

  AllocationRecord record;
  record.method = method;
  {
    const std::unique_ptr<nn::Module> probe = ckpt.make_model();
    record.infos = layer_infos(*probe, image, policy);
  }
  record.layers = search::layer_options(record.infos, candidates);
  record.budgets = allocation_budgets(user_budgets, record.infos, record.layers, latency);

  // The budgets are checked before anything is measured: an infeasible one is an error naming
  // the smallest achievable cost (solve_allocation's), not a surprise after the measurement.
  // (Each budget alone; budgets that can each be met but not together are reported by the
  // solver.) Not by solving with a zero objective: every node's bound would tie the incumbent.
  search::AllocationProblem skeleton;
  for (const search::LayerOptions& l : record.layers) {
    skeleton.layer_names.push_back(l.name);
    skeleton.option_counts.push_back(static_cast<int>(l.options.size()));
  }
  skeleton.budgets = record.budgets;
  std::vector<search::BudgetReport> reports;
  for (std::size_t k = 0; k < record.budgets.size(); ++k) {
    const search::AllocationBudget& b = record.budgets[k];
    search::BudgetReport report{b.name, b.unit, b.cap, 0, 0, 0, false};
    for (const std::vector<double>& row : b.cost) {
      report.min_achievable += *std::min_element(row.begin(), row.end());
      report.max_achievable += *std::max_element(row.begin(), row.end());
    }
    report.always_met = report.max_achievable <= b.cap;
    if (b.cap < report.min_achievable)
      throw ArgumentError(fmt::format("budget {} ({}) cannot be met: the smallest achievable is {} (every layer at its "
                                      "lowest candidate, {})",
                                      user_budgets[k].describe(), human(b, b.cap), human(b, report.min_achievable),
                                      policy.describe()));
    if (report.always_met)
      std::cerr << fmt::format("note: every configuration meets the budget {} (the most expensive costs {})\n",
                               user_budgets[k].describe(), human(b, report.max_achievable));
    reports.push_back(report);
  }

  std::cerr << fmt::format("{} allocation of {} ({} layers) on {}, candidates W{{{}}} A{{{}}}, {}; {} threads, {}\n",
                           method, ckpt.path, record.layers.size(), data_spec, fmt::join(candidates.w_bits, ","),
                           fmt::join(candidates.a_bits, ","), policy.describe(), num_threads(), isa_name(active_isa()));
  const PostTrainingData sets = draw_post_training_data(splits.train, ckpt.metadata.normalization, calib_images,
                                                        sens_images, seed, batch);
  std::filesystem::create_directories(out);  // the cache lives there by default

  Stopwatch measure_watch;
  search::AllocationProblem problem = skeleton;
  const search::ModelFactory factory = [&ckpt] { return ckpt.make_model(); };
  if (method == "clado" || method == "independent") {
    search::CladoOptions o;
    o.quantization = ptq;
    o.pairs = method == "clado";
    o.cache = cache;
    o.sensitivity_seed = seed;
    std::optional<Progress> bar;
    o.progress = [&](int64_t done, int64_t total) {
      if (!progress_bar) return;
      if (!bar) bar.emplace(method, total, "eval");
      bar->update(done);
    };
    record.clado = search::measure_clado(factory, image, record.layers, sets.sensitivity, sets.calibration, o);
    if (bar) bar->finish();
    if (method == "clado") {
      search::PsdProjection psd;
      problem = search::clado_problem(*record.clado, record.budgets, !args.get_flag("no-psd"), &psd);
      if (!args.get_flag("no-psd")) record.psd = psd;
    } else {
      problem = search::independent_problem(*record.clado, record.budgets);
    }
  } else if (method == "hawq") {
    search::HawqOptions o;
    o.max_iterations = static_cast<int>(args.get_int("hawq-iterations", 1, 100000));
    o.tolerance = args.get_double("hawq-tolerance", 0.0, 1.0);
    o.seed = seed;
    o.weights = ptq.weights;
    std::optional<Progress> bar;
    if (progress_bar) bar.emplace("hawq", o.max_iterations, "probe");
    o.progress = [&](int64_t done, int64_t) {
      if (bar) bar->update(done);
    };
    const std::unique_ptr<nn::Module> model = ckpt.make_model();
    record.hawq = search::hawq_sensitivity(*model, image, record.layers, sets.sensitivity, o);
    if (bar) bar->finish();
    problem = search::hawq_problem(*record.hawq, record.layers, record.budgets);
  }
  const double measure_seconds = measures ? measure_watch.seconds() : 0.0;

  search::AllocationSolution solution;
  if (method == "uniform") {
    Stopwatch w;
    solution.choice = search::uniform_choice(record.layers, record.budgets);
    solution.seconds = w.seconds();
    solution.budgets = reports;
    for (std::size_t k = 0; k < solution.budgets.size(); ++k)
      solution.budgets[k].achieved = skeleton.budget_cost(k, solution.choice);
  } else {
    solution = search::solve_allocation(problem, solver);
  }
  record.choice = solution.choice;

  quant::BitConfig config = allocation_bit_config(record, ckpt.spec.arch, policy);
  std::string budget_text;
  for (const search::AllocationBudget& b : record.budgets)
    budget_text += fmt::format("{}{} <= {}", budget_text.empty() ? "" : ", ", b.name, human(b, b.cap));
  config.notes = fmt::format("{} allocation of {}, budgets {}, seed {}", method, ckpt.path, budget_text, seed);

  nlohmann::ordered_json j;
  j["method"] = method;
  j["init"] = ckpt.path;
  j["data"] = data_spec;
  j["candidates"] = {{"w_bits", candidates.w_bits}, {"a_bits", candidates.a_bits}};
  j["policy"] = policy.describe();
  j["seed"] = seed;
  j["calibration_images"] = calib_images;
  j["sensitivity_images"] = sens_images;
  j["images"] = sets.description;
  j["calibrator"] = args.get_string("calibrator");
  nlohmann::ordered_json budgets = nlohmann::ordered_json::array();
  for (std::size_t k = 0; k < record.budgets.size(); ++k) {
    const search::BudgetReport& b = solution.budgets.at(k);
    budgets.push_back({{"name", b.name},
                       {"given", user_budgets[k].describe()},
                       {"unit", b.unit},
                       {"cap", b.cap},
                       {"achieved", b.achieved},
                       {"min_achievable", b.min_achievable},
                       {"max_achievable", b.max_achievable},
                       {"always_met", b.always_met}});
  }
  j["budgets"] = budgets;
  j["bit_config"] = config.summary();
  j["gbitops_per_image"] = static_cast<double>(config.totals->bitops.value_or(0)) * 1e-9;
  j["weight_kib"] = static_cast<double>(config.totals->weight_bits.value_or(0)) / 8.0 / 1024.0;
  j["solver"] = {{"status", method == "uniform" ? "uniform (no solve)" : std::string(search::to_string(solution.status))},
                 {"objective", solution.objective},
                 {"lower_bound", solution.lower_bound},
                 {"nodes", solution.nodes},
                 {"seconds", solution.seconds}};
  if (record.clado) {
    j["base_loss"] = record.clado->base_loss;
    j["predicted_delta_loss_independent"] = record.clado->predicted_independent(record.choice);
    if (!record.clado->pair.empty()) j["predicted_delta_loss_clado"] = record.clado->predicted_clado(record.choice);
    j["measurement"] = {{"evaluations", record.clado->evaluations},
                        {"from_cache", record.clado->from_cache},
                        {"cache", cache.string()},
                        {"seconds", measure_seconds}};
  }
  if (record.psd)
    j["psd_projection"] = {{"removed_frobenius", record.psd->removed},
                           {"relative_removed", record.psd->relative_removed},
                           {"min_eigenvalue", record.psd->min_eigenvalue},
                           {"negative_eigenvalues", record.psd->negative_eigenvalues}};
  if (record.hawq)
    j["measurement"] = {{"hutchinson_iterations", record.hawq->iterations},
                        {"converged", record.hawq->converged},
                        {"seconds", measure_seconds}};
  j["threads"] = num_threads();

  std::string random_csv;
  if (random_configs > 0) {
    Stopwatch w;
    j["random_configs"] = evaluate_random_configs(record, random_configs, seed, factory, image, ckpt.spec.arch,
                                                  sets.calibration, sets.sensitivity, ptq, &random_csv);
    j["random_configs"]["seconds"] = w.seconds();
  }

  config.save(out / "bits.json");
  write_file_atomic(out / "sensitivity.csv", sensitivity_csv(record));
  write_file_atomic(out / "bits.svg", allocation_bits_svg(config, fmt::format("{}: bits per layer ({}, {})",
                                                                               ckpt.spec.arch, method, budget_text)));
  if (!random_csv.empty()) write_file_atomic(out / "random_configs.csv", random_csv);
  write_file_atomic(out / "summary.json", j.dump(2) + "\n");

  std::cout << fmt::format("\n{:<22} {:>10} {:>8} {:>4} {:>4}\n", "layer", "MACs", "params", "W", "A");
  for (const quant::LayerBits& l : config.layers)
    std::cout << fmt::format("{:<22} {:>10} {:>8} {:>4} {:>4}\n", l.name, l.macs.value_or(0), l.params.value_or(0),
                             l.w_bits, l.a_bits);
  std::cout << fmt::format("\n{}\n", config.summary());
  for (const search::BudgetReport& b : solution.budgets) {
    const search::AllocationBudget& ab = record.budgets[static_cast<std::size_t>(&b - solution.budgets.data())];
    std::cout << fmt::format("budget {}: {} of {} ({:.2f}%)\n", b.name, human(ab, b.achieved), human(ab, b.cap),
                             100.0 * b.achieved / b.cap);
  }
  if (method != "uniform")
    std::cout << fmt::format("solver: {}, objective {:.6g}, {} nodes, {:.3f} s; measurement {:.1f} s\n",
                             search::to_string(solution.status), solution.objective, solution.nodes, solution.seconds,
                             measure_seconds);
  if (j.contains("random_configs") && j["random_configs"].contains("spearman_clado"))
    std::cout << fmt::format("random configurations: Spearman vs measured: clado {:.3f} (PSD {:.3f}), independent {:.3f}\n",
                             j["random_configs"]["spearman_clado"].get<double>(),
                             j["random_configs"]["spearman_clado_psd"].get<double>(),
                             j["random_configs"]["spearman_independent"].get<double>());
  std::cout << fmt::format("wrote {}/bits.json, summary.json, sensitivity.csv, bits.svg\n", out.string());
  return 0;
}

const bool registered = register_command(
    {"allocate", "choose bits per layer after training under budgets (clado, hawq, independent, uniform)", run_allocate});

}  // namespace
}  // namespace bitmix::cli
