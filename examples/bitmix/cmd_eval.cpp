// bitmix eval: accuracy, size and latency of an integer .bmx model on a test set; with
// --compare, its parity with the fake-quant model it was compiled from.
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/support/progress.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/core/timer.hpp"
#include "bitmix/data/dataset.hpp"
#include "bitmix/data/loader.hpp"
#include "bitmix/deploy/compiler.hpp"
#include "bitmix/runtime/session.hpp"
#include "cli.hpp"

namespace bitmix::cli {
namespace {

int run_eval(int argc, char** argv) {
  ArgParser args("eval",
                 "Evaluate an integer .bmx model on a test set: top-1 accuracy, model size (packed parameters and "
                 "file, against fp32) and mean latency. With --compare CKPT, also run the fake-quant model the file "
                 "was compiled from on the same images and report its accuracy and the top-1 agreement of the two.");
  args.option("model", "FILE", "the .bmx model", "", true);
  args.option("data", "SPEC", "dataset: fashion-mnist[:DIR] | mnist:DIR | cifar10:DIR", "fashion-mnist");
  args.option("batch", "N", "images per run", "256");
  args.option("test-subset", "N", "use only the first N test images (0 = all)", "0");
  args.option("compare", "CKPT", "the fine-tuned checkpoint the model was exported from (fake-quant parity)", "");
  args.option("bits", "FILE", "with --compare: its BitConfig (default: the one the checkpoint records)", "");
  args.option("threads", "N", "worker threads (default: BITMIX_NUM_THREADS or all hardware threads)");
  args.option("json", "FILE", "also write the results as JSON", "");
  args.flag("no-progress", "no progress bar");
  if (!args.parse(argc, argv)) return 0;
  if (args.given("threads")) set_num_threads(static_cast<int>(args.get_int("threads", 1, 1024)));
  const int64_t batch_size = args.get_int("batch", 1, 1 << 16);

  const std::string model_path = args.get_string("model");
  const runtime::Model model = runtime::Model::load(model_path);
  const runtime::ModelInfo& info = model.info();
  const data::DataSpec spec = data::parse_data_spec(args.get_string("data"));
  data::Dataset test = data::load_dataset(spec).test;
  if (const int64_t n = args.get_int("test-subset", 0, test.size()); n > 0) test = test.slice(0, n);
  if (Shape{test.channels, test.height, test.width} != info.input_shape)
    throw UsageError(fmt::format("--data {}: images are {}x{}x{}, the model takes {}", spec.to_string(), test.channels,
                                 test.height, test.width, runtime::shape_text(info.input_shape)));
  if (test.num_classes() != model.num_classes())
    throw UsageError(fmt::format("--data {}: {} classes, the model has {} outputs", spec.to_string(),
                                 test.num_classes(), model.num_classes()));

  // The loader normalizes exactly as training did, with the model's stored statistics (no
  // normalization: mean 0, std 1), and the session takes the normalized images.
  data::LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.normalization.mean = info.mean.empty() ? std::vector<float>(static_cast<std::size_t>(test.channels), 0.0f) : info.mean;
  lo.normalization.stddev =
      info.stddev.empty() ? std::vector<float>(static_cast<std::size_t>(test.channels), 1.0f) : info.stddev;
  data::BatchLoader loader(test, lo);

  std::optional<deploy::QatModel> qat;
  if (const std::string ckpt = args.get_string("compare"); !ckpt.empty()) {
    std::optional<std::filesystem::path> bits;
    if (!args.get_string("bits").empty()) bits = args.get_string("bits");
    qat = deploy::load_qat_model(ckpt, bits);
    if (qat->image_shape() != info.input_shape)
      throw UsageError(fmt::format("--compare {}: the checkpoint's model takes {}, the .bmx {}", ckpt,
                                   shape_to_string(qat->image_shape()), runtime::shape_text(info.input_shape)));
    if (qat->mean != info.mean || qat->stddev != info.stddev)
      std::cerr << "warning: the checkpoint's input normalization differs from the model file's; both models see "
                   "the file's\n";
  }

  runtime::Session session(model);
  int64_t correct = 0, fake_correct = 0, agree = 0, images = 0;
  double max_diff = 0, sum_diff = 0, sum_abs_logit = 0, run_seconds = 0;
  int64_t logit_count = 0;
  std::optional<Progress> progress;
  if (!args.get_flag("no-progress")) progress.emplace("eval", loader.num_batches(), "batch");
  data::Batch batch;
  Tensor logits;
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    loader.fill_batch(b, batch);
    session.run_normalized(batch.images, logits);
    run_seconds += session.last_run_seconds();
    const std::vector<int> pred = runtime::predictions(logits);
    std::vector<int> fake_pred;
    if (qat) {
      const Tensor& fake = qat->model->forward(batch.images);
      fake_pred = runtime::predictions(fake);
      for (int64_t i = 0; i < fake.numel(); ++i) {
        const double d = std::fabs(static_cast<double>(fake[i]) - static_cast<double>(logits[i]));
        max_diff = std::max(max_diff, d);
        sum_diff += d;
        sum_abs_logit += std::fabs(static_cast<double>(fake[i]));
      }
      logit_count += fake.numel();
    }
    for (std::size_t i = 0; i < pred.size(); ++i) {
      correct += pred[i] == batch.labels[i];
      if (qat) {
        fake_correct += fake_pred[i] == batch.labels[i];
        agree += fake_pred[i] == pred[i];
      }
    }
    images += static_cast<int64_t>(pred.size());
    if (progress) progress->update(b + 1, fmt::format("acc {:.2f}%", 100.0 * static_cast<double>(correct) / static_cast<double>(images)));
  }
  if (progress) progress->finish();

  const runtime::ModelStats s = model.stats();
  const double accuracy = static_cast<double>(correct) / static_cast<double>(images);
  const double params_kib = static_cast<double>(s.packed_weight_bytes + s.epilogue_bytes) / 1024.0;
  const double float_kib = static_cast<double>(s.float_parameter_bytes) / 1024.0;
  const double file_kib = static_cast<double>(std::filesystem::file_size(model_path)) / 1024.0;
  const double per_batch_ms = 1e3 * run_seconds / static_cast<double>(loader.num_batches());
  const double per_image_us = 1e6 * run_seconds / static_cast<double>(images);
  std::cout << fmt::format("{} on {} ({} images): top-1 accuracy {:.2f}%\n", info.name, spec.to_string(), images,
                           100.0 * accuracy);
  std::cout << fmt::format("size: parameters {:.1f} KiB packed vs {:.1f} KiB fp32 ({:.1f}x smaller); file {:.1f} KiB\n",
                           params_kib, float_kib, float_kib / params_kib, file_kib);
  std::cout << fmt::format("latency: {:.2f} ms per batch of {} ({:.1f} us per image), {} threads, {} path\n",
                           per_batch_ms, batch_size, per_image_us, num_threads(), isa_name(active_isa()));
  nlohmann::ordered_json j;
  j["model"] = info.name;
  j["file"] = model_path;
  j["data"] = spec.to_string();
  j["images"] = images;
  j["accuracy"] = accuracy;
  j["parameter_kib"] = params_kib;
  j["float_parameter_kib"] = float_kib;
  j["file_kib"] = file_kib;
  j["gbitops_per_image"] = static_cast<double>(s.bitops) * 1e-9;
  j["batch"] = batch_size;
  j["threads"] = num_threads();
  j["ms_per_batch"] = per_batch_ms;
  j["us_per_image"] = per_image_us;
  if (qat) {
    const double fake_accuracy = static_cast<double>(fake_correct) / static_cast<double>(images);
    const double agreement = static_cast<double>(agree) / static_cast<double>(images);
    std::cout << fmt::format("fake-quant model ({}): top-1 accuracy {:.2f}%; difference {:+.2f} points\n",
                             qat->source, 100.0 * fake_accuracy, 100.0 * (accuracy - fake_accuracy));
    std::cout << fmt::format("top-1 agreement {:.2f}% ({} of {} images differ); logits: max |diff| {:.3g}, mean |diff| "
                             "{:.3g} (mean |logit| {:.3g})\n",
                             100.0 * agreement, images - agree, images, max_diff,
                             sum_diff / static_cast<double>(logit_count),
                             sum_abs_logit / static_cast<double>(logit_count));
    j["compare"] = {{"checkpoint", qat->source},
                    {"fake_quant_accuracy", fake_accuracy},
                    {"accuracy_difference_points", 100.0 * (accuracy - fake_accuracy)},
                    {"top1_agreement", agreement},
                    {"differing_images", images - agree},
                    {"max_abs_logit_diff", max_diff},
                    {"mean_abs_logit_diff", sum_diff / static_cast<double>(logit_count)}};
  }
  if (const std::string path = args.get_string("json"); !path.empty()) write_file_atomic(path, j.dump(2) + "\n");
  return 0;
}

const bool registered = register_command(
    {"eval", "accuracy, size and latency of a .bmx model; --compare: parity with its fake-quant model", run_eval});

}  // namespace
}  // namespace bitmix::cli
