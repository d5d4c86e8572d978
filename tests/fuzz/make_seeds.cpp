// Writes the seed corpus of every fuzz target: small valid files of each format (so the fuzzer
// starts inside the accepting paths instead of rediscovering magic numbers) plus the malformed
// variants the unit tests use (truncated, wrong magic, bad label, checksum mismatch).
// Usage: bitmix_fuzz_seeds OUT_DIR   (writes OUT_DIR/<target>/<name>)
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "bitmix/core/file_io.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/run_metadata.hpp"
#include "nn/legacy_metadata.hpp"
#include "bitmix/quant/bit_config.hpp"
#include "bitmix/runtime/model.hpp"
#include "bitmix/search/cost.hpp"
#include "runtime/runtime_test_util.hpp"

namespace fs = std::filesystem;
using bitmix::write_file_atomic;

namespace {

void put(const fs::path& dir, const std::string& name, const std::vector<uint8_t>& bytes) {
  fs::create_directories(dir);
  write_file_atomic(dir / name, bytes);
}
void put(const fs::path& dir, const std::string& name, const std::string& text) {
  put(dir, name, std::vector<uint8_t>(text.begin(), text.end()));
}
std::vector<uint8_t> truncated(std::vector<uint8_t> bytes) {
  bytes.resize(bytes.size() / 2);
  return bytes;
}

std::vector<uint8_t> gzip(const std::vector<uint8_t>& data) {
  z_stream s{};
  deflateInit2(&s, Z_BEST_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::vector<uint8_t> out(deflateBound(&s, static_cast<uLong>(data.size())) + 32);
  s.next_in = const_cast<Bytef*>(data.data());
  s.avail_in = static_cast<uInt>(data.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  deflate(&s, Z_FINISH);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

std::vector<uint8_t> idx(std::vector<uint32_t> dims, uint8_t fill) {
  std::vector<uint8_t> b = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  uint64_t count = 1;
  for (uint32_t d : dims) {
    for (int i = 3; i >= 0; --i) b.push_back(static_cast<uint8_t>(d >> (8 * i)));
    count *= d;
  }
  for (uint64_t i = 0; i < count; ++i) b.push_back(static_cast<uint8_t>(fill + i));
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: bitmix_fuzz_seeds OUT_DIR\n");
    return 2;
  }
  const fs::path out = argv[1];
  try {
    // CIFAR-10: two records, and one with a label out of range.
    std::vector<uint8_t> cifar(2 * 3073, 17);
    cifar[0] = 3;
    cifar[3073] = 9;
    put(out / "cifar10", "valid.bin", cifar);
    std::vector<uint8_t> bad_label = cifar;
    bad_label[3073] = 10;
    put(out / "cifar10", "bad_label.bin", bad_label);
    put(out / "cifar10", "truncated.bin", truncated(cifar));

    // IDX: images and labels, plain and gzip.
    const std::vector<uint8_t> images = idx({2, 3, 3}, 1), labels = idx({2}, 4);
    put(out / "idx", "images.idx", images);
    put(out / "idx", "labels.idx", labels);
    put(out / "idx", "images.idx.gz", gzip(images));
    put(out / "idx", "truncated.idx", truncated(images));
    put(out / "idx", "truncated.idx.gz", truncated(gzip(images)));

    // A checkpoint with every entry kind.
    bitmix::nn::Checkpoint ck;
    ck.metadata = R"({"format": "bitmix checkpoint", "epoch": 1, "normalization": {"mean": [0.5], "std": [0.25]}})";
    bitmix::Tensor w({2, 1, 3, 3});
    for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] = 0.1f * static_cast<float>(i);
    ck.add(bitmix::nn::CheckpointTensorKind::parameter, "conv1.weight", w);
    ck.add(bitmix::nn::CheckpointTensorKind::buffer, "bn1.running_mean", bitmix::Tensor({2}));
    ck.add(bitmix::nn::CheckpointTensorKind::optimizer_state, "main/conv1.weight.momentum", w);
    ck.add(bitmix::nn::CheckpointTensorKind::extra, "empty", bitmix::Tensor({0}));
    const std::vector<uint8_t> ck_bytes = bitmix::nn::serialize_checkpoint(ck);
    put(out / "checkpoint", "valid.ckpt", ck_bytes);
    put(out / "checkpoint", "truncated.ckpt", truncated(ck_bytes));
    std::vector<uint8_t> bad_crc = ck_bytes;
    bad_crc[bad_crc.size() - 20] ^= 1;
    put(out / "checkpoint", "bad_crc.ckpt", bad_crc);

    // BitConfig: a uniform and a mixed one.
    using bitmix::quant::BitConfig;
    using bitmix::quant::QuantizerKind;
    const std::vector<std::string> layers = {"conv1", "layer1.0.conv1", "layer1.0.conv2", "fc"};
    BitConfig config = BitConfig::uniform("tiny", layers, 3, 3, QuantizerKind::lsq, QuantizerKind::lsq);
    put(out / "bit_config", "uniform.json", config.to_json());
    config.layers[1].w_bits = 2;
    config.layers[2].a_bits = 5;
    put(out / "bit_config", "mixed.json", config.to_json());
    const std::string text = config.to_json();
    put(out / "bit_config", "truncated.json", text.substr(0, text.size() / 2));

    // Run metadata: the current layout with every optional part, and the layout of earlier
    // releases' trainer (which the reader still maps).
    bitmix::nn::ModelSpec spec;
    spec.arch = "resnet8";
    spec.in_channels = 1;
    spec.image_height = spec.image_width = 8;
    spec.num_classes = 3;
    bitmix::nn::RunMetadata run;
    run.model = spec;
    run.data = {"bands", "bands", 1, 8, 8, 3, {"a", "b", "c"}, 30, 10};
    run.normalization = {{0.3f}, {0.2f}};
    run.quantization = bitmix::nn::QuantizationRecipe{"--quant lsq --wbits 3 --abits 3", config};
    run.provenance = bitmix::nn::Provenance::current("train", "bitmix train --data bands", 1, "float/model.ckpt");
    bitmix::nn::TrainingState training;
    training.epoch = 1;
    training.step = 4;
    training.groups = {{"main", "sgd", {}}};
    bitmix::nn::EpochStats epoch;
    epoch.epoch = 1;
    epoch.lr = 0.1f;
    training.history = {epoch};
    run.training = training;
    const std::string current = bitmix::nn::to_json(run);
    put(out / "run_metadata", "current.json", current);
    put(out / "run_metadata", "truncated.json", current.substr(0, current.size() / 2));
    // An interrupted run: part of its second epoch done.
    run.training->options.epochs = 3;
    run.training->step = 6;
    run.training->partial = bitmix::nn::PartialEpoch{2, 2.25, 0.5, 40, 64, 1.5};
    put(out / "run_metadata", "interrupted.json", bitmix::nn::to_json(run));
    bitmix::nn::testing::LegacyTrainerRun legacy;
    legacy.options.epochs = 2;
    legacy.dataset_name = "bands";
    legacy.channels = 1;
    legacy.height = legacy.width = 8;
    legacy.classes = 3;
    legacy.train_images = 30;
    legacy.mean = {0.3f};
    legacy.stddev = {0.2f};
    legacy.model = bitmix::nn::testing::legacy_train_model_object(spec, "bands", "none");
    legacy.groups = {{"main", {R"({"kind": "sgd", "momentum": 0.9})",
                               R"({"kind": "cosine", "base_lr": 0.1, "total_steps": 2, "steps_per_epoch": 1, "warmup_steps": 0, "warmup_start_factor": 0, "min_lr": 0, "milestones": [], "gamma": 0.1})"}}};
    put(out / "run_metadata", "legacy.json", bitmix::nn::testing::legacy_trainer_metadata(legacy));

    // A latency table.
    bitmix::search::LatencyTable table("fuzz machine", 1, 1);
    table.set("conv1", 2, 2, 0.125);
    table.set("conv1", 8, 8, 0.5);
    table.set("fc", 4, 3, 0.01);
    fs::create_directories(out / "latency_table");
    table.save(out / "latency_table" / "table.json");

    // .bmx: the runtime tests' model that uses every op kind, and a corrupted copy.
    const std::vector<uint8_t> bmx = bitmix::runtime::testing::make_test_model(1).model.serialize();
    put(out / "bmx", "every_op.bmx", bmx);
    put(out / "bmx", "truncated.bmx", truncated(bmx));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bitmix_fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
