// bitmix_runtime_bench: end-to-end latency of integer ResNet-20 models (Session::run on
// CIFAR-sized 3x32x32 inputs) at batch 1 and 64 with 1 and 2 threads, for uniform W1A1, W2A2,
// W4A4, W8A8 (first conv and classifier at 8 bits, the default policy) and a mixed
// configuration. scripts/bench-e2e.sh runs it next to PyTorch fp32 and int8 and prints the table.
//
//   bitmix_runtime_bench --benchmark_filter='w2a2/b1/'
//   BITMIX_BENCH_MODELS=searched=out/model.bmx,w2a2=w2.bmx bitmix_runtime_bench   # given .bmx files
//   BITMIX_BENCH_SAVE_DIR=/tmp/m bitmix_runtime_bench   # also save the compiled models there
//
// Without BITMIX_BENCH_MODELS the models are compiled in-process from a randomly initialized
// QAT ResNet-20 (speed does not depend on the weights). The mixed configuration is an EBS result
// (see mixed_config).
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/deploy/compiler.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/quant/bit_config.hpp"
#include "bitmix/runtime/session.hpp"

namespace {

using namespace bitmix;

const Shape kImage{3, 32, 32};

// The mixed configuration: what `bitmix search` (EBS, candidates 2-4 bits, a budget of the
// BitOPs of uniform 3 bits, 1 epoch on 20000 Fashion-MNIST images from a 4-epoch float
// ResNet-20) chose; BITMIX_BENCH_MIXED_BITS=bits.json replaces it with another BitConfig.
void mixed_config(quant::BitConfig& config) {
  if (const char* path = std::getenv("BITMIX_BENCH_MIXED_BITS"); path != nullptr && *path != '\0') {
    const quant::BitConfig file = quant::BitConfig::load(path);
    for (quant::LayerBits& l : config.layers) {
      const quant::LayerBits& f = file.at(l.name);
      l.w_bits = f.w_bits;
      l.a_bits = f.a_bits;
    }
    return;
  }
  // w_bits, a_bits of layer{1,2,3}.{0,1,2}.conv{1,2} in order.
  static const int kBits[18][2] = {{3, 4}, {3, 3}, {3, 4}, {2, 4}, {2, 3}, {3, 4}, {3, 4}, {2, 4}, {3, 4},
                                   {2, 4}, {2, 4}, {2, 3}, {3, 4}, {3, 4}, {3, 4}, {2, 4}, {2, 2}, {2, 2}};
  for (std::size_t i = 1; i + 1 < config.layers.size() && i <= 18; ++i) {
    config.layers[i].w_bits = kBits[i - 1][0];
    config.layers[i].a_bits = kBits[i - 1][1];
  }
}

runtime::Model compile_resnet20(int w_bits, int a_bits, bool mixed) {
  nn::ModelSpec spec;
  spec.arch = "resnet20";
  spec.seed = 3;
  auto model = nn::make_model(spec);
  quant::BitConfig config = nn::uniform_bit_config(*model, kImage, "resnet20", nn::UniformBits{w_bits, a_bits});
  if (mixed) mixed_config(config);
  nn::apply_bit_config(*model, kImage, config);
  model->eval();
  Rng rng(4);
  Tensor x({8, 3, 32, 32});
  for (float& v : x.values()) v = rng.normal(0.0f, 1.0f);
  model->forward(x);  // initializes the quantizers from data
  deploy::CompileOptions o;
  o.architecture = "resnet20";
  return deploy::compile(*model, kImage, o);
}

std::map<std::string, runtime::Model>& models() {
  static std::map<std::string, runtime::Model> m;
  return m;
}

void load_models() {
  if (const char* env = std::getenv("BITMIX_BENCH_MODELS"); env != nullptr && *env != '\0') {
    std::string list = env;
    std::size_t start = 0;
    while (start < list.size()) {
      std::size_t end = list.find(',', start);
      if (end == std::string::npos) end = list.size();
      const std::string item = list.substr(start, end - start);
      const std::size_t eq = item.find('=');
      if (eq == std::string::npos) throw std::runtime_error("BITMIX_BENCH_MODELS: expected name=path,...");
      models()[item.substr(0, eq)] = runtime::Model::load(item.substr(eq + 1));
      start = end + 1;
    }
    return;
  }
  for (int b : {1, 2, 4, 8}) models()[fmt::format("w{}a{}", b, b)] = compile_resnet20(b, b, false);
  models()["mixed"] = compile_resnet20(2, 2, true);
  // For per-op tables: `bitmix bench --model DIR/w2a2.bmx`.
  if (const char* dir = std::getenv("BITMIX_BENCH_SAVE_DIR"); dir != nullptr && *dir != '\0')
    for (const auto& [name, model] : models()) model.save(std::filesystem::path(dir) / (name + ".bmx"));
}

void run_model(benchmark::State& state, const std::string& name, int64_t batch, int threads) {
  set_num_threads(threads);
  const runtime::Model& model = models().at(name);
  runtime::Session session(model);
  const Shape& s = model.info().input_shape;
  Tensor images({batch, s[0], s[1], s[2]});
  Rng rng(5);
  for (float& v : images.values()) v = rng.uniform();
  Tensor logits;
  for (int i = 0; i < 3; ++i) session.run(images, logits);  // warm-up: buffers, caches
  for (auto _ : state) {
    session.run(images, logits);
    benchmark::DoNotOptimize(logits.data());
  }
  state.counters["images_per_second"] =
      benchmark::Counter(static_cast<double>(state.iterations() * batch), benchmark::Counter::kIsRate);
  state.counters["threads"] = threads;
  const runtime::ModelStats st = model.stats();
  state.counters["gbitops_per_image"] = static_cast<double>(st.bitops) * 1e-9;
  set_num_threads(0);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    load_models();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bitmix_runtime_bench: %s\n", e.what());
    return 1;
  }
  for (const auto& [name, model] : models())
    for (int64_t batch : {1, 64})
      for (int threads : {1, 2})
        benchmark::RegisterBenchmark(fmt::format("{}/b{}/t{}", name, batch, threads).c_str(), run_model, name, batch,
                                     threads)
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime()
            ->MinTime(batch == 1 ? 0.5 : 1.0);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
