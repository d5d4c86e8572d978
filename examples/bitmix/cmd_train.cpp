// bitmix train: train a float model (CIFAR ResNet or small VGG) on a dataset, with a progress
// bar, per-epoch evaluation, log.csv, summary.json and an atomic checkpoint per epoch; or, with
// the QAT flags of train_quant.hpp, fine-tune it quantized (--quant/--wbits/--abits or --bits).
#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/data/dataset.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/run_metadata.hpp"
#include "bitmix/nn/trainer.hpp"
#include "cli.hpp"
#include "model_options.hpp"
#include "train_quant.hpp"

namespace bitmix::cli {
namespace {

int run_train(int argc, char** argv) {
  ArgParser args("train",
                 "Train a float model on a dataset: progress bar (loss, accuracy, images/s, ETA), test-set evaluation "
                 "after each epoch, DIR/log.csv, DIR/summary.json and DIR/model.ckpt (written atomically every "
                 "epoch; --resume continues a run exactly).");
  args.common_options(/*with_data=*/true, /*with_out=*/true);
  std::vector<std::string> models(nn::model_names().begin(), nn::model_names().end());
  args.choice("model", models, "architecture (with --init or --resume: the checkpoint's)", "resnet20");
  args.option("epochs", "N", "training epochs", "15");
  args.option("batch", "B", "batch size", "128");
  args.option("lr", "LR", "peak learning rate", "0.1");
  args.option("wd", "WD", "weight decay (not on BatchNorm parameters and biases unless --decay-all)", "5e-4");
  args.flag("decay-all", "apply weight decay to every parameter");
  args.choice("optimizer", {"sgd", "adam", "adamw"}, "optimizer", "sgd");
  args.option("momentum", "M", "SGD momentum", "0.9");
  args.flag("nesterov", "Nesterov momentum");
  args.choice("schedule", {"cosine", "linear", "step", "constant"},
              "learning-rate schedule (per iteration; cosine and linear decay to --min-lr)", "cosine");
  args.option("warmup", "EPOCHS", "linear warm-up length in epochs (may be fractional)", "0");
  args.option("min-lr", "LR", "cosine and linear schedules: final learning rate", "0");
  args.option("milestones", "E1,E2,..", "step schedule: epochs at which the rate is multiplied by --gamma", "");
  args.option("gamma", "G", "step schedule factor", "0.1");
  args.option("label-smoothing", "S", "label smoothing in [0, 1)", "0");
  args.option("ema", "DECAY",
              "exponential moving average of the weights (e.g. 0.999; 0 = off): evaluation and model.ckpt use the "
              "average",
              "0");
  args.choice("augment", {"auto", "none", "crop", "flip", "crop-flip"},
              "augmentation: random pad-and-crop and/or horizontal flip; auto = crop-flip for cifar10, none otherwise",
              "auto");
  args.option("pad-crop", "P", "padding of the random crop", "4");
  args.choice("flip", {"random", "alternate"},
              "horizontal flip of --augment flip/crop-flip: random = a fresh coin per image and epoch; alternate = each "
              "image mirrored in every other epoch (less redundancy in short schedules)",
              "random");
  args.choice("shortcut", {"A", "B"},
              "ResNet shortcut where the shape changes: A = identity with zero-padded channels, B = 1x1 projection",
              "A");
  args.option("width", "W", "base width (0 = the architecture's default: 16 for ResNets, 64 for vgg-small)", "0");
  args.flag("zero-init-residual", "start the last BatchNorm of every residual block at zero");
  args.option("train-subset", "N", "use only the first N training images (0 = all)", "0");
  args.option("test-subset", "N", "use only the first N test images (0 = all)", "0");
  args.option("eval-batch", "B", "evaluation batch size", "256");
  args.choice("tta", {"none", "flip", "shift", "flip-shift"},
              "test-time augmentation of every evaluation, by the mean logits of several views of each image: flip = the "
              "image and its mirror; shift = the image and its translations by (+P,+P) and (-P,-P) pixels (P = "
              "--tta-shift); flip-shift = these three and their mirrors",
              "none");
  args.option("tta-shift", "P", "translation of the shift test-time views, in pixels", "1");
  args.option("resume", "CKPT", "continue the run saved in this checkpoint (same options)", "");
  args.option("init", "CKPT", "start from the weights of this checkpoint (a fresh run: new optimizer and schedule)", "");
  args.flag("init-partial", "with --init: tolerate entries missing from the checkpoint or absent from the model");
  args.flag("no-progress", "no progress bar");
  add_quantization_options(args);
  args.flag("eval-only", "evaluate the (initialized, calibrated) model on the test set instead of training: DIR/eval.json");
  if (!args.parse(argc, argv)) return 0;
  const uint64_t seed = args.apply_common();

  const data::DataSpec spec = data::parse_data_spec(args.get_string("data"));
  data::DatasetSplits splits = data::load_dataset(spec);
  if (const int64_t n = args.get_int("train-subset", 0, splits.train.size()); n > 0) splits.train = splits.train.slice(0, n);
  if (const int64_t n = args.get_int("test-subset", 0, splits.test.size()); n > 0) splits.test = splits.test.slice(0, n);

  const std::string start_from = !args.get_string("init").empty() ? args.get_string("init") : args.get_string("resume");
  nn::ModelSpec ms = model_spec(args, splits.train, seed, start_from);
  if (start_from.empty()) ms.zero_init_residual = args.get_flag("zero-init-residual");
  std::unique_ptr<nn::Module> model = nn::make_model(ms);
  QuantizationSetup qat = apply_quantization_options(args, *model, ms);

  nn::TrainerOptions o;
  o.epochs = static_cast<int>(args.get_int("epochs", 1, 100000));
  o.batch_size = args.get_int("batch", 2, 1 << 20);
  o.eval_batch_size = args.get_int("eval-batch", 1, 1 << 20);
  const std::string tta = args.get_string("tta");
  o.eval_flip = tta == "flip" || tta == "flip-shift";
  o.eval_shift = tta == "shift" || tta == "flip-shift" ? static_cast<int>(args.get_int("tta-shift", 1, 64)) : 0;
  o.optimizer = nn::parse_optimizer_kind(args.get_string("optimizer"));
  o.lr = static_cast<float>(args.get_double("lr", 0.0, 1e3));
  o.weight_decay = static_cast<float>(args.get_double("wd", 0.0, 1.0));
  o.decay_all = args.get_flag("decay-all");
  o.momentum = static_cast<float>(args.get_double("momentum", 0.0, 0.999999));
  o.nesterov = args.get_flag("nesterov");
  if (o.nesterov && o.optimizer != nn::OptimizerKind::sgd) throw UsageError("--nesterov applies to --optimizer sgd only");
  if (o.nesterov && o.momentum == 0.0f) throw UsageError("--nesterov needs --momentum > 0");
  o.schedule = nn::parse_schedule_kind(args.get_string("schedule"));
  o.warmup_epochs = static_cast<float>(args.get_double("warmup", 0.0, static_cast<double>(o.epochs)));
  o.min_lr = static_cast<float>(args.get_double("min-lr", 0.0, static_cast<double>(o.lr)));
  if (!args.get_string("milestones").empty()) o.milestones = args.get_int_list("milestones", 1, o.epochs);
  for (std::size_t i = 1; i < o.milestones.size(); ++i)
    if (o.milestones[i] <= o.milestones[i - 1])
      throw UsageError(fmt::format("--milestones '{}': expected increasing epochs", args.get_string("milestones")));
  if (o.schedule == nn::ScheduleKind::step && o.milestones.empty())
    throw UsageError("--schedule step needs --milestones (e.g. --milestones 100,150)");
  o.gamma = static_cast<float>(args.get_double("gamma", 1e-6, 1.0));
  o.label_smoothing = static_cast<float>(args.get_double("label-smoothing", 0.0, 0.999));
  o.ema_decay = static_cast<float>(args.get_double("ema", 0.0, 0.999999));
  std::string augment = args.get_string("augment");
  if (augment == "auto") augment = spec.kind == "cifar10" ? "crop-flip" : "none";
  if (augment == "crop" || augment == "crop-flip")
    o.augmentation.pad_crop = static_cast<int>(args.get_int("pad-crop", 1, 64));
  o.augmentation.horizontal_flip = augment == "flip" || augment == "crop-flip";
  if (args.get_string("flip") == "alternate" && !o.augmentation.horizontal_flip)
    throw UsageError(fmt::format("--flip alternate needs a flipping --augment (flip or crop-flip), not '{}'", augment));
  o.augmentation.alternate_flip = args.get_string("flip") == "alternate";
  o.seed = seed;
  o.out_dir = args.get_string("out");
  o.progress = !args.get_flag("no-progress");

  const std::string resume = args.get_string("resume"), init = args.get_string("init");
  if (!resume.empty() && !init.empty()) throw UsageError("--resume and --init exclude each other");
  nn::RunMetadata run = run_metadata(ms, spec, "train", argc, argv, seed, !init.empty() ? init : resume);
  if (qat.enabled) run.quantization = qat.recipe();
  if (!init.empty()) {
    const nn::Checkpoint init_checkpoint = nn::load_checkpoint(init);
    // Fine-tuning feeds the weights inputs normalized as they were trained on (not the
    // statistics of a --train-subset).
    nn::MetadataReadOptions read_options;
    read_options.resolve_bit_config_file = false;  // the run's own flags give its bits
    o.normalization = nn::read_run_metadata(init_checkpoint, init, read_options).normalization;
    if (qat.enabled) {
      init_quantized_model(qat, *model, init_checkpoint, init, args.get_flag("init-partial"));
    } else {
      nn::LoadOptions lo;
      lo.allow_missing = lo.allow_unexpected = args.get_flag("init-partial");
      const nn::LoadReport report = nn::load_model_state(*model, init_checkpoint, lo, init);
      std::cerr << fmt::format("initialized {} tensors from {}", report.loaded.size(), init);
      if (!report.missing.empty()) std::cerr << fmt::format("; {} not in the checkpoint", report.missing.size());
      if (!report.unexpected.empty()) std::cerr << fmt::format("; {} checkpoint entries ignored", report.unexpected.size());
      std::cerr << '\n';
    }
  }

  std::filesystem::create_directories(o.out_dir);
  nn::Trainer trainer(*model, splits.train, &splits.test, o);
  trainer.set_run_metadata(std::move(run));
  if (!resume.empty()) {
    trainer.resume(resume);
    std::cerr << fmt::format("resumed from {} at epoch {} (step {})\n", resume, trainer.epochs_done(),
                             trainer.steps_done());
  }
  if (resume.empty()) calibrate_if_asked(args, qat, *model, splits.train, trainer.normalization(), o.batch_size, seed);
  if (qat.enabled) {
    qat.config.save(o.out_dir / "bits.json");
    std::cerr << qat.summary_line() << '\n';
  }
  if (args.get_flag("eval-only")) {
    initialize_from_training_batch(qat, *model, splits.train, trainer.normalization(), o.batch_size, seed);
    freeze_inq_for_evaluation(qat, *model);
    const nn::EvalResult r = trainer.evaluate(splits.test);
    nlohmann::ordered_json j;
    j["data"] = spec.to_string();
    j["init"] = init;
    j["test_images"] = r.images;
    j["test_accuracy"] = r.accuracy;
    j["test_loss"] = r.loss;
    j["tta"] = tta;
    if (o.eval_shift > 0) j["tta_shift"] = o.eval_shift;
    j["model"] = nlohmann::json::parse(nn::model_spec_to_json(ms));
    j["augment"] = augment;
    if (qat.enabled) j["quantization"] = {{"source", qat.source}, {"summary", qat.config.summary()}};
    write_file_atomic(o.out_dir / "eval.json", j.dump(2) + "\n");
    trainer.save_checkpoint(o.out_dir / "model.ckpt");  // e.g. a calibrated model for post-training deployment
    std::cout << fmt::format("eval: test acc {:.2f}% on {} images, loss {:.4f}; wrote {}\n", 100.0 * r.accuracy,
                             r.images, r.loss, (o.out_dir / "eval.json").string());
    if (qat.enabled) std::cout << qat.summary_line() << '\n';
    return 0;
  }
  std::cerr << fmt::format("{} ({} parameters) on {}: {} train / {} test images, {} epochs of {} batches, {} threads, {}\n",
                           ms.arch, model->parameter_count(), spec.to_string(), splits.train.size(), splits.test.size(),
                           o.epochs, trainer.batches_per_epoch(), num_threads(), isa_name(active_isa()));
  const std::vector<nn::EpochStats>& history =
      qat.inq_steps.empty() ? trainer.fit() : fit_with_inq(qat, trainer, *model, o.epochs);
  if (!history.empty()) {
    const nn::EpochStats& last = history.back();
    std::cout << fmt::format("final: epoch {}, train acc {:.2f}%, test acc {:.2f}%, {:.0f} img/s; wrote {}\n",
                             last.epoch, 100.0 * last.train_accuracy, 100.0 * last.test_accuracy,
                             last.images_per_second, (o.out_dir / "model.ckpt").string());
  }
  if (qat.enabled) std::cout << qat.summary_line() << '\n';
  return 0;
}

const bool registered =
    register_command({"train", "train a float or quantized (QAT) ResNet/VGG on fashion-mnist or cifar10 (checkpoints, logs, resume)",
                      run_train});

}  // namespace
}  // namespace bitmix::cli
