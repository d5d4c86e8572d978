// bitmix quantize: post-training quantization (PTQ) of a trained float network at any BitConfig.
#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/core/timer.hpp"
#include "bitmix/nn/quantization.hpp"
#include "cli.hpp"
#include "model_options.hpp"
#include "post_training.hpp"

namespace bitmix::cli {
namespace {

int run_quantize(int argc, char** argv) {
  ArgParser args("quantize",
                 "Post-training quantization of a trained float checkpoint at a BitConfig, without training: "
                 "symmetric per-channel weights with an MSE-optimal clip, per-tensor activation ranges calibrated on "
                 "--calib-images training images, optional bias correction. Evaluates the result on the test set and "
                 "writes DIR/model.ckpt (accepted by bitmix export, bitmix eval --compare and bitmix train --init "
                 "... --bits DIR/bits.json), DIR/bits.json (the BitConfig applied) and DIR/summary.json.");
  args.common_options(/*with_data=*/false, /*with_out=*/true);
  args.option("data", "SPEC", "dataset: fashion-mnist[:DIR] | mnist:DIR | cifar10:DIR (default: the checkpoint's)");
  args.option("init", "CKPT", "the trained float checkpoint (bitmix train)", "", true);
  args.option("bits", "FILE", "the BitConfig to quantize at (bitmix allocate, bitmix search, or written by hand)", "",
              true);
  add_calibration_options(args, "1024");
  args.flag("bias-correction", "correct the output shift each layer's weight quantization causes (docs/allocation.md)");
  args.option("test-subset", "N", "evaluate on the first N test images only (0 = all)", "0");
  args.option("eval-batch", "B", "evaluation batch size", "256");
  args.flag("no-progress", "no progress bars");
  if (!args.parse(argc, argv)) return 0;
  const uint64_t seed = args.apply_common();
  const int64_t calib_images = args.get_int("calib-images", 1, 1 << 30);
  const int64_t batch = args.get_int("calib-batch", 1, 1 << 16);
  const int64_t eval_batch = args.get_int("eval-batch", 1, 1 << 16);
  nn::PtqOptions options = ptq_options(args);
  options.bias_correction = args.get_flag("bias-correction");
  const std::filesystem::path out = args.get_string("out");
  const std::string float_label = args.get_flag("no-progress") ? "" : "float", ptq_label = float_label.empty() ? "" : "ptq";

  const FloatCheckpoint ckpt = load_float_checkpoint(args.get_string("init"));
  const std::string bits_path = args.get_string("bits");
  const quant::BitConfig requested = quant::BitConfig::load(bits_path);
  std::string data_spec;
  data::DatasetSplits splits = load_checkpoint_data(args, ckpt, &data_spec);
  if (const int64_t n = args.get_int("test-subset", 0, splits.test.size()); n > 0) splits.test = splits.test.slice(0, n);
  const data::Normalization& normalization = ckpt.metadata.normalization;

  Stopwatch watch;
  std::unique_ptr<nn::Module> model = ckpt.make_model();
  const TestResult float_result = evaluate_model(*model, splits.test, normalization, eval_batch, float_label);
  const PostTrainingData sets = draw_post_training_data(splits.train, normalization, calib_images, 0, seed, batch);
  quant::BitConfig config = nn::ptq_bit_config(requested);
  const nn::PtqReport report = nn::quantize_post_training(*model, ckpt.image_shape(), config, sets.calibration, options);
  nn::annotate_bit_config(config, *model, ckpt.image_shape());
  const double calibration_seconds = watch.seconds();
  const TestResult result = evaluate_model(*model, splits.test, normalization, eval_batch, ptq_label);

  const std::string calibrator = args.get_string("calibrator") == "percentile"
                                     ? fmt::format("percentile {:g}", options.activations.percentile)
                                     : args.get_string("calibrator");
  const std::string recipe =
      fmt::format("PTQ of {} at {} ({} activations on {} training images, seed {}{})", ckpt.path, bits_path, calibrator,
                  calib_images, seed, options.bias_correction ? ", bias correction" : "");
  config.notes = recipe;
  nn::RunMetadata run;
  run.model = ckpt.spec;
  run.data = ckpt.metadata.data;
  run.normalization = normalization;
  run.quantization = nn::QuantizationRecipe{recipe, config};
  run.provenance = nn::Provenance::current("quantize", command_line(argc, argv), seed, ckpt.path);
  run.provenance.notes = sets.description;
  nn::Checkpoint checkpoint;
  nn::set_run_metadata(checkpoint, run);
  nn::add_model_state(checkpoint, *model);

  const quant::BitTotals totals = config.compute_totals();
  nlohmann::ordered_json j;
  j["init"] = ckpt.path;
  j["bits"] = bits_path;
  j["data"] = data_spec;
  j["bit_config"] = config.summary();
  j["gbitops_per_image"] = static_cast<double>(totals.bitops.value_or(0)) * 1e-9;
  j["weight_kib"] = static_cast<double>(totals.weight_bits.value_or(0)) / 8.0 / 1024.0;
  j["calibrator"] = calibrator;
  j["calibration_images"] = calib_images;
  j["calibration_batches"] = report.batches;
  j["calibration_set"] = sets.description;
  j["seed"] = seed;
  j["bias_correction"] = options.bias_correction;
  j["bias_corrected_layers"] = report.bias_corrected.size();
  j["not_corrected_layers"] = report.not_corrected;
  j["test_images"] = result.images;
  j["float_test_accuracy"] = float_result.accuracy;
  j["float_test_loss"] = float_result.loss;
  j["test_accuracy"] = result.accuracy;
  j["test_loss"] = result.loss;
  j["calibration_seconds"] = calibration_seconds;
  j["threads"] = num_threads();

  // Everything is computed: only now touch the output directory (each file written atomically).
  std::filesystem::create_directories(out);
  config.save(out / "bits.json");
  nn::save_checkpoint(out / "model.ckpt", checkpoint);
  write_file_atomic(out / "summary.json", j.dump(2) + "\n");

  std::cout << fmt::format("{}\n{:.4g} GBitOPs/image, weights {:.2f} KiB; calibrated {} quantizers on {} images "
                           "({}){} in {:.1f} s, {} threads, {}\n",
                           config.summary(), static_cast<double>(totals.bitops.value_or(0)) * 1e-9,
                           static_cast<double>(totals.weight_bits.value_or(0)) / 8.0 / 1024.0, report.calibrated.size(),
                           calib_images, calibrator,
                           options.bias_correction ? fmt::format(", bias-corrected {} layers", report.bias_corrected.size())
                                                   : std::string(),
                           calibration_seconds, num_threads(), isa_name(active_isa()));
  std::cout << fmt::format("test accuracy {:.2f}% (float {:.2f}%), loss {:.4f} (float {:.4f}) on {} images\nwrote "
                           "{}/model.ckpt, bits.json, summary.json\n",
                           100.0 * result.accuracy, 100.0 * float_result.accuracy, result.loss, float_result.loss,
                           result.images, out.string());
  return 0;
}

const bool registered = register_command(
    {"quantize", "post-training quantization (PTQ) of a float checkpoint at a BitConfig, no training", run_quantize});

}  // namespace
}  // namespace bitmix::cli
