// One training step (forward, cross-entropy, backward, SGD update) of ResNet-20 on CIFAR-shaped
// batches: float, plain QAT (LSQ W4A4), the EBS supernet and the DNAS baseline (4 weight x 4
// activation candidates each). The goal is EBS step time <= 1.5x a plain QAT step; compare
// the rows of one run as ratios. On a shared machine use the one-thread rows' CPU time:
//   bitmix_search_bench --benchmark_filter='variant:[012]/batch:128/threads:1'
// (docs/quantization.md, section 5, has the figures before and after the fused mixing kernels).
#include <benchmark/benchmark.h>

#include <memory>

#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/nn/functional.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/optimizer.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/search/search.hpp"

namespace {

using namespace bitmix;

enum Variant { kFloat = 0, kQat = 1, kEbs = 2, kDnas = 3 };

struct Step {
  std::unique_ptr<nn::Module> model;
  std::unique_ptr<nn::Sgd> sgd;
  Tensor images;
  std::vector<int> labels;
  Tensor grad_logits;

  Step(Variant variant, int64_t batch) {
    nn::ModelSpec spec;  // resnet20, 3x32x32, 10 classes
    model = nn::make_model(spec);
    const Shape image{3, 32, 32};
    if (variant == kQat) {
      nn::apply_bit_config(*model, image, nn::uniform_bit_config(*model, image, "resnet20", nn::UniformBits(4, 4)));
    } else if (variant == kEbs || variant == kDnas) {
      search::SearchOptions options;  // candidates {2,3,4,5} x {2,3,4,5}, first/last at 8 bits
      options.method = variant == kEbs ? search::SearchMethod::ebs : search::SearchMethod::dnas;
      search::attach_search(*model, image, options);
    }
    sgd = std::make_unique<nn::Sgd>(model->named_parameters(), nn::SgdOptions{0.9f, false, 0.0f, 5e-4f, false});
    Rng rng(1);
    images = Tensor({batch, 3, 32, 32});
    for (float& v : images.values()) v = rng.normal();
    for (int64_t i = 0; i < batch; ++i) labels.push_back(static_cast<int>(rng.below(10)));
    model->train();
    run();  // data-driven initialization of the quantizers, first-touch of every buffer
  }

  void run() {
    model->zero_grad();
    const Tensor& logits = model->forward(images);
    nn::softmax_cross_entropy(logits, labels, 0.0f, &grad_logits);
    model->backward(grad_logits);
    sgd->step(0.01f);
  }
};

void BM_TrainStep(benchmark::State& state) {
  const auto variant = static_cast<Variant>(state.range(0));
  const int64_t batch = state.range(1);
  set_num_threads(static_cast<int>(state.range(2)));
  Step step(variant, batch);
  for (auto _ : state) step.run();
  state.SetItemsProcessed(state.iterations() * batch);
  const char* labels[] = {"float", "qat-lsq-w4a4", "ebs-4x4", "dnas-4x4"};
  state.SetLabel(labels[variant]);
}

BENCHMARK(BM_TrainStep)
    ->ArgNames({"variant", "batch", "threads"})
    ->ArgsProduct({{kFloat, kQat, kEbs, kDnas}, {128}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();
