// Quantizer throughput: fake-quant forward and backward of the kinds QAT and the EBS search use,
// on a ResNet-20 activation tensor (128 x 16 x 32 x 32, 2M values) and a 3x3 conv weight
// (64 x 64 x 3 x 3), next to two peers measured in the same process:
//   copy/...        std::copy of the same tensor: the memory-bandwidth floor of any elementwise op
//   nearbyint/...   a straightforward scalar fake-quant loop (x / s, clamp, std::nearbyint, * s),
//                   what a direct implementation of the formula costs
// Names: <op>/<tensor>/<kind>/t<threads>; counter values_per_s. Compare ratios, not absolute
// times (the machine is shared).
//
// Two more families:
//   isa/<op>/<tensor>/<kind>/<isa>/t<threads>   the same forward/backward with the elementwise
//                                               kernels capped at each compiled ISA (ScopedIsaCap)
//   mix/<op>/<tensor>/<kind>x<n>/<how>/t<threads>  n quantizers of one tensor mixed as the EBS
//       search does (4 bits 2..5), <how> = fused (quant::mix_forward / mix_backward, one pass) or
//       loop (forward_accumulate per quantizer; dot_output + backward_accumulate per quantizer)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/quant/mixing.hpp"
#include "bitmix/quant/quantizer.hpp"

namespace {

using namespace bitmix;
using namespace bitmix::quant;

Tensor random_tensor(Shape shape, float stddev, bool relu) {
  Tensor t(std::move(shape));
  Rng rng(1234);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = rng.normal(0.0f, stddev);
    t[i] = relu ? std::max(v, 0.0f) : v;
  }
  return t;
}

const Tensor& activations() {
  static const Tensor t = random_tensor({128, 16, 32, 32}, 1.0f, true);
  return t;
}
const Tensor& weights() {
  static const Tensor t = random_tensor({64, 64, 3, 3}, 0.05f, false);
  return t;
}

void set_rate(benchmark::State& state, int64_t values) {
  state.counters["values_per_s"] =
      benchmark::Counter(static_cast<double>(values), benchmark::Counter::kIsIterationInvariantRate);
}

void use_threads(int threads) { set_num_threads(threads); }

void bm_copy(benchmark::State& state, const Tensor* x, int threads) {
  use_threads(threads);
  Tensor y(x->shape());
  for (auto _ : state) {
    parallel_for(x->numel(), 65536, [&](int64_t begin, int64_t end) {
      std::copy(x->data() + begin, x->data() + end, y.data() + begin);
    });
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, x->numel());
}

void bm_nearbyint(benchmark::State& state, const Tensor* x, int threads) {
  use_threads(threads);
  Tensor y(x->shape());
  const float s = 0.25f, lo = 0.0f, hi = 15.0f;
  for (auto _ : state) {
    parallel_for(x->numel(), 65536, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) y[i] = s * std::nearbyint(std::clamp((*x)[i] / s, lo, hi));
    });
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, x->numel());
}

void bm_forward(benchmark::State& state, QuantizerSpec spec, const Tensor* x, int threads) {
  use_threads(threads);
  Quantizer q(spec);
  Tensor y(x->shape());
  q.forward(*x, y);  // initializes data-driven state
  for (auto _ : state) {
    q.forward(*x, y);
    benchmark::DoNotOptimize(y.data());
  }
  set_rate(state, x->numel());
}

void bm_backward(benchmark::State& state, QuantizerSpec spec, const Tensor* x, int threads) {
  use_threads(threads);
  Quantizer q(spec);
  q.forward(*x);
  const Tensor g = random_tensor(x->shape(), 1.0f, false);
  Tensor gx(x->shape());
  for (auto _ : state) {
    q.backward(*x, g, gx);
    benchmark::DoNotOptimize(gx.data());
  }
  set_rate(state, x->numel());
}

void bm_export(benchmark::State& state, QuantizerSpec spec, const Tensor* x, int threads) {
  use_threads(threads);
  Quantizer q(spec);
  q.forward(*x);
  for (auto _ : state) {
    QuantizedTensor e = q.quantize(*x);
    benchmark::DoNotOptimize(e.codes.data());
  }
  set_rate(state, x->numel());
}

void bm_isa_forward(benchmark::State& state, QuantizerSpec spec, const Tensor* x, int threads, Isa isa) {
  ScopedIsaCap cap(isa);
  bm_forward(state, spec, x, threads);
}

void bm_isa_backward(benchmark::State& state, QuantizerSpec spec, const Tensor* x, int threads, Isa isa) {
  ScopedIsaCap cap(isa);
  bm_backward(state, spec, x, threads);
}

struct MixSet {
  std::vector<std::unique_ptr<Quantizer>> owned;
  std::vector<Quantizer*> set;
  std::vector<float> weights;
  MixSet(QuantizerSpec spec, const Tensor& x, int count) {
    for (int k = 0; k < count; ++k) {
      spec.bits = 2 + k;
      owned.push_back(std::make_unique<Quantizer>(spec));
      owned.back()->forward(x);  // initializes data-driven state
      set.push_back(owned.back().get());
      weights.push_back(1.0f / static_cast<float>(count));
    }
  }
};

void bm_mix_forward(benchmark::State& state, QuantizerSpec spec, const Tensor* x, int threads, int count, bool fused) {
  use_threads(threads);
  MixSet m(spec, *x, count);
  Tensor y(x->shape());
  for (auto _ : state) {
    if (fused) {
      mix_forward(m.set, m.weights, *x, y);
    } else {
      y.zero();
      for (int k = 0; k < count; ++k) m.set[static_cast<std::size_t>(k)]->forward_accumulate(*x, m.weights[k], y);
    }
    benchmark::DoNotOptimize(y.data());
  }
  set_rate(state, x->numel());
}

void bm_mix_backward(benchmark::State& state, QuantizerSpec spec, const Tensor* x, int threads, int count, bool fused) {
  use_threads(threads);
  MixSet m(spec, *x, count);
  const Tensor g = random_tensor(x->shape(), 1.0f, false);
  Tensor gx(x->shape());
  std::vector<double> dw(static_cast<std::size_t>(count));
  for (auto _ : state) {
    if (fused) {
      mix_backward(m.set, m.weights, *x, g, gx, dw);
    } else {
      gx.zero();
      for (int k = 0; k < count; ++k) {
        Quantizer& q = *m.set[static_cast<std::size_t>(k)];
        dw[static_cast<std::size_t>(k)] = q.dot_output(*x, g);
        q.backward_accumulate(*x, g, m.weights[k], gx);
      }
    }
    benchmark::DoNotOptimize(gx.data());
    benchmark::DoNotOptimize(dw.data());
  }
  set_rate(state, x->numel());
}

void register_all() {
  std::vector<int> thread_counts{1};
  if (hardware_threads() > 1) thread_counts.push_back(std::min(hardware_threads(), 4));
  const struct {
    const char* name;
    const Tensor* tensor;
  } tensors[] = {{"act", &activations()}, {"weight", &weights()}};

  for (int t : thread_counts) {
    const std::string suffix = "/t" + std::to_string(t);
    for (const auto& tensor : tensors) {
      const std::string tname = tensor.name;
      benchmark::RegisterBenchmark(("copy/" + tname + suffix).c_str(), bm_copy, tensor.tensor, t);
      benchmark::RegisterBenchmark(("nearbyint/" + tname + suffix).c_str(), bm_nearbyint, tensor.tensor, t);
    }
    const Tensor* a = &activations();
    const Tensor* w = &weights();
    for (QuantizerKind k : {QuantizerKind::lsq, QuantizerKind::pact, QuantizerKind::uniform, QuantizerKind::dorefa}) {
      const QuantizerSpec spec = activation_spec(k, 4);
      const std::string name = std::string(to_string(k)) + suffix;
      benchmark::RegisterBenchmark(("forward/act/" + name).c_str(), bm_forward, spec, a, t);
      benchmark::RegisterBenchmark(("backward/act/" + name).c_str(), bm_backward, spec, a, t);
    }
    for (QuantizerKind k : {QuantizerKind::lsq, QuantizerKind::dorefa, QuantizerKind::sawb, QuantizerKind::pot,
                            QuantizerKind::binary, QuantizerKind::ternary}) {
      const int bits = k == QuantizerKind::binary ? 1 : (k == QuantizerKind::ternary ? 2 : 4);
      const QuantizerSpec spec = weight_spec(k, bits, Granularity::per_channel, 64);
      const std::string name = std::string(to_string(k)) + suffix;
      benchmark::RegisterBenchmark(("forward/weight/" + name).c_str(), bm_forward, spec, w, t);
      benchmark::RegisterBenchmark(("backward/weight/" + name).c_str(), bm_backward, spec, w, t);
      benchmark::RegisterBenchmark(("export/weight/" + name).c_str(), bm_export, spec, w, t);
    }

    // The elementwise kernels per ISA (the QAT forward/backward loops).
    for (Isa isa : available_isas()) {
      const std::string isa_suffix = "/" + std::string(isa_name(isa)) + suffix;
      for (QuantizerKind k : {QuantizerKind::lsq, QuantizerKind::pact, QuantizerKind::uniform}) {
        const QuantizerSpec spec = activation_spec(k, 4);
        const std::string name = std::string(to_string(k)) + isa_suffix;
        benchmark::RegisterBenchmark(("isa/forward/act/" + name).c_str(), bm_isa_forward, spec, a, t, isa);
        benchmark::RegisterBenchmark(("isa/backward/act/" + name).c_str(), bm_isa_backward, spec, a, t, isa);
      }
      const QuantizerSpec lsq_w = weight_spec(QuantizerKind::lsq, 4, Granularity::per_channel, 64);
      benchmark::RegisterBenchmark(("isa/forward/weight/lsq" + isa_suffix).c_str(), bm_isa_forward, lsq_w, w, t, isa);
      benchmark::RegisterBenchmark(("isa/backward/weight/lsq" + isa_suffix).c_str(), bm_isa_backward, lsq_w, w, t,
                                   isa);
    }

    // The EBS mixture: 4 LSQ candidates (2..5 bits), one pass vs one call per candidate.
    const struct {
      const char* tensor;
      const Tensor* x;
      QuantizerSpec spec;
    } mixes[] = {{"act", a, activation_spec(QuantizerKind::lsq, 4)},
                 {"weight", w, weight_spec(QuantizerKind::lsq, 4, Granularity::per_channel, 64)}};
    for (const auto& m : mixes) {
      for (bool fused : {true, false}) {
        const std::string name = std::string(m.tensor) + "/lsqx4/" + (fused ? "fused" : "loop") + suffix;
        benchmark::RegisterBenchmark(("mix/forward/" + name).c_str(), bm_mix_forward, m.spec, m.x, t, 4, fused);
        benchmark::RegisterBenchmark(("mix/backward/" + name).c_str(), bm_mix_backward, m.spec, m.x, t, 4, fused);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
