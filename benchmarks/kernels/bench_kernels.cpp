// Kernel benchmarks: bitmix's bit-serial GEMM and convolution on each ISA path, next to oneDNN
// (fp32 and u8 x s8 convolution) and Eigen (fp32 GEMM) on the same shapes, in the same process.
//
// Names: gemm/bitmix/<isa>/W<m>A<k>/<n>[/packed], gemm/eigen_fp32/<n>,
//        conv/bitmix/<isa>/W<m>A<k>/<shape>/b<batch>/t<threads>[/f32out],
//        conv/onednn_fp32|onednn_u8s8/<shape>/b<batch>/t<threads>.
// Counters: macs_per_s (effective multiply-accumulates of the real layer per second) and
// binary_ops_per_s (= w_bits * a_bits * MACs per second: the AND+popcount work). oneDNN's
// chosen implementation is the benchmark's label (e.g. brg:avx512_core_vnni).
// The oneDNN ISA is capped by DNNL_MAX_CPU_ISA, read once per process: scripts/bench-kernels.sh
// runs this program once per cap and prints the ratio table.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <cstdlib>
#include <string>
#include <vector>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/kernels.hpp"
#include "lut_loops.hpp"

#if defined(BITMIX_BENCH_ONEDNN)
#include <oneapi/dnnl/dnnl.hpp>
#endif
#if defined(BITMIX_BENCH_OPENMP)
#include <omp.h>
#endif

namespace {

using namespace bitmix;
using namespace bitmix::kernels;

struct ConvShape {
  const char* name;
  int64_t in_channels, out_channels, size;
  int kernel, stride, pad;
};

// ResNet-20 for CIFAR-10 (32x32): the first conv, then the 3x3 convs of each stage (the
// stride-2 ones open stages 2 and 3) and the 1x1 projection shortcut of the option-B variant.
const ConvShape kResNet20Shapes[] = {
    {"conv1_3to16_32", 3, 16, 32, 3, 1, 1},     {"s1_16to16_32", 16, 16, 32, 3, 1, 1},
    {"s2_16to32_32s2", 16, 32, 32, 3, 2, 1},    {"s2_32to32_16", 32, 32, 16, 3, 1, 1},
    {"s3_32to64_16s2", 32, 64, 16, 3, 2, 1},    {"s3_64to64_8", 64, 64, 8, 3, 1, 1},
    {"proj_16to32_32s2", 16, 32, 32, 1, 2, 0},
};

int64_t out_size(const ConvShape& s) { return (s.size + 2 * s.pad - s.kernel) / s.stride + 1; }
double conv_macs(const ConvShape& s, int64_t batch) {
  const double o = static_cast<double>(out_size(s));
  return static_cast<double>(batch) * static_cast<double>(s.out_channels) * o * o *
         static_cast<double>(s.in_channels * s.kernel * s.kernel);
}

void set_counters(benchmark::State& state, double macs, int m, int k) {
  state.counters["macs_per_s"] = benchmark::Counter(macs, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["binary_ops_per_s"] =
      benchmark::Counter(macs * m * k, benchmark::Counter::kIsIterationInvariantRate);
}

std::vector<int32_t> weight_codes(Rng& rng, int64_t count, int bits, WeightEncoding enc) {
  std::vector<int32_t> codes(static_cast<std::size_t>(count));
  for (auto& c : codes)
    c = enc == WeightEncoding::odd_levels ? 2 * static_cast<int32_t>(rng.below(uint64_t{1} << bits)) - ((1 << bits) - 1)
                                          : static_cast<int32_t>(rng.below(uint64_t{1} << bits)) - (1 << (bits - 1));
  return codes;
}

PackedActivations activations(Rng& rng, int64_t n, int64_t c, int64_t h, int64_t w, int bits, int border) {
  std::vector<uint8_t> codes(static_cast<std::size_t>(n * c * h * w));
  for (auto& v : codes) v = static_cast<uint8_t>(rng.below(uint64_t{1} << bits));
  return PackedActivations::from_codes(codes, n, c, h, w, ActivationQuant{bits, 0.1f, 0}, border);
}

// 1-bit weights are sign (odd-level) weights, the usual binary network; wider ones two's complement.
WeightEncoding encoding_for(int bits) { return bits == 1 ? WeightEncoding::odd_levels : WeightEncoding::twos_complement; }

void bm_bitmix_gemm(benchmark::State& state, Isa isa, int m, int k, int64_t n, bool packed_out) {
  if (!isa_available(isa)) {
    state.SkipWithError("ISA not available on this CPU");
    return;
  }
  ScopedIsaCap cap(isa);
  set_num_threads(1);
  Rng rng(1);
  const PackedActivations x = activations(rng, n, n, 1, 1, k, 0);
  const WeightSpec spec{n, n, 1, 1, m, encoding_for(m), false};
  const PackedWeights w = PackedWeights::pack(weight_codes(rng, spec.code_count(), m, spec.encoding), spec);
  if (packed_out) {  // requantized to k bits: what a layer feeding another layer writes
    const Epilogue e = Epilogue::requantize(std::vector<float>(static_cast<std::size_t>(n), 0.01f),
                                            std::vector<float>(static_cast<std::size_t>(n), 0.0f), true,
                                            ActivationQuant{k, 0.5f, 0}, 0);
    PackedActivations out;
    for (auto _ : state) {
      gemm(x, w, e, out);
      benchmark::DoNotOptimize(out.data());
    }
  } else {
    const Epilogue e = Epilogue::identity(n);
    Tensor out;
    for (auto _ : state) {
      gemm(x, w, e, out);
      benchmark::DoNotOptimize(out.data());
    }
  }
  set_counters(state, static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n), m, k);
  set_num_threads(0);
}

void bm_eigen_gemm(benchmark::State& state, int64_t n) {
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  set_counters(state, static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n), 32, 32);
}

void bm_bitmix_conv(benchmark::State& state, Isa isa, int m, int k, ConvShape s, int64_t batch, int threads,
                    bool float_out) {
  if (!isa_available(isa)) {
    state.SkipWithError("ISA not available on this CPU");
    return;
  }
  ScopedIsaCap cap(isa);
  set_num_threads(threads);
  Rng rng(2);
  const PackedActivations x = activations(rng, batch, s.in_channels, s.size, s.size, k, s.pad);
  const WeightSpec spec{s.out_channels, s.in_channels, s.kernel, s.kernel, m, encoding_for(m), false};
  const PackedWeights w = PackedWeights::pack(weight_codes(rng, spec.code_count(), m, spec.encoding), spec);
  std::vector<float> scale(static_cast<std::size_t>(s.out_channels)), bias(scale.size());
  for (std::size_t i = 0; i < scale.size(); ++i) {
    scale[i] = rng.uniform(0.01f, 0.1f);
    bias[i] = rng.uniform(-1.0f, 1.0f);
  }
  const Conv2dParams params{s.stride, s.stride, s.pad, s.pad};
  if (float_out) {
    const Epilogue e = Epilogue::float_output(scale, bias, false);
    Tensor out;
    for (auto _ : state) {
      conv2d(x, w, params, e, out);
      benchmark::DoNotOptimize(out.data());
    }
  } else {
    // As inside a residual block: ReLU, requantized for the next 3x3 conv (border 1).
    const Epilogue e = Epilogue::requantize(scale, bias, true, ActivationQuant{k, 0.5f, 0}, 1);
    PackedActivations out;
    for (auto _ : state) {
      conv2d(x, w, params, e, out);
      benchmark::DoNotOptimize(out.data());
    }
  }
  set_counters(state, conv_macs(s, batch), m, k);
  set_num_threads(0);
}

// Quantize-and-pack of a float NCHW activation (the residual path of the runtime).
void bm_bitmix_pack(benchmark::State& state, Isa isa, int k, int64_t batch, int64_t channels, int64_t size) {
  if (!isa_available(isa)) {
    state.SkipWithError("ISA not available on this CPU");
    return;
  }
  ScopedIsaCap cap(isa);
  set_num_threads(1);
  Rng rng(4);
  Tensor x({batch, channels, size, size});
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = rng.normal(0.0f, 1.0f);
  PackedActivations out;
  const ActivationQuant q{k, 0.1f, 1 << (k - 1)};
  for (auto _ : state) {
    quantize_pack(x, q, 1, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["values_per_s"] =
      benchmark::Counter(static_cast<double>(x.numel()), benchmark::Counter::kIsIterationInvariantRate);
  set_num_threads(0);
}

#if defined(BITMIX_BENCH_ONEDNN)
void bm_onednn_conv(benchmark::State& state, bool int8, ConvShape s, int64_t batch, int threads) {
#if defined(BITMIX_BENCH_OPENMP)
  omp_set_num_threads(threads);
#else
  if (threads != 1) {
    state.SkipWithError("oneDNN thread count cannot be set without OpenMP");
    return;
  }
#endif
  using namespace dnnl;
  using dt = memory::data_type;
  using tag = memory::format_tag;
  engine eng(engine::kind::cpu, 0);
  stream strm(eng);
  const int64_t o = out_size(s);
  const memory::desc src_md({batch, s.in_channels, s.size, s.size}, int8 ? dt::u8 : dt::f32, tag::any);
  const memory::desc wei_md({s.out_channels, s.in_channels, s.kernel, s.kernel}, int8 ? dt::s8 : dt::f32, tag::any);
  const memory::desc bias_md({s.out_channels}, dt::f32, tag::a);
  const memory::desc dst_md({batch, s.out_channels, o, o}, int8 ? dt::u8 : dt::f32, tag::any);
  const convolution_forward::desc desc(prop_kind::forward_inference, algorithm::convolution_direct, src_md, wei_md,
                                       bias_md, dst_md, {s.stride, s.stride}, {s.pad, s.pad}, {s.pad, s.pad});
  primitive_attr attr;
  post_ops ops;
  ops.append_eltwise(1.0f, algorithm::eltwise_relu, 0.0f, 0.0f);
  attr.set_post_ops(ops);
  if (int8) attr.set_output_scales(0, {0.05f});  // requantize the s32 sum to u8, like bitmix's epilogue
  const convolution_forward::primitive_desc pd(desc, attr, eng);
  memory src(pd.src_desc(), eng), wei(pd.weights_desc(), eng), bias(pd.bias_desc(), eng), dst(pd.dst_desc(), eng);
  Rng rng(3);
  auto fill = [&](memory& mem) {
    auto* bytes = static_cast<uint8_t*>(mem.get_data_handle());
    const std::size_t size = mem.get_desc().get_size();
    if (int8 || &mem == &bias) {
      for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(rng.below(int8 ? 128 : 1));
    } else {
      auto* f = static_cast<float*>(mem.get_data_handle());
      for (std::size_t i = 0; i < size / 4; ++i) f[i] = rng.uniform(-1.0f, 1.0f);
    }
  };
  fill(src);
  fill(wei);
  fill(dst);
  std::memset(bias.get_data_handle(), 0, bias.get_desc().get_size());
  const convolution_forward conv(pd);
  for (auto _ : state) {
    conv.execute(strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}});
    strm.wait();
  }
  state.SetLabel(pd.impl_info_str());
  set_counters(state, conv_macs(s, batch), int8 ? 8 : 32, int8 ? 8 : 32);
}
#endif

void register_all() {
  const Isa isas[] = {Isa::scalar, Isa::avx2, Isa::avx512, Isa::avx512vnni, Isa::neon};
  const int bit_set[] = {1, 2, 3, 4, 8};
  for (int64_t n : {1024}) {
    for (Isa isa : isas) {
      if (!isa_available(isa)) continue;
      for (int m : bit_set)
        for (int k : bit_set) {
          if (isa == Isa::scalar && m * k > 1) continue;  // the portable path is not a contender
          const std::string name = "gemm/bitmix/" + std::string(isa_name(isa)) + "/W" + std::to_string(m) + "A" +
                                   std::to_string(k) + "/" + std::to_string(n);
          benchmark::RegisterBenchmark(name.c_str(), bm_bitmix_gemm, isa, m, k, n, false)->Unit(benchmark::kMillisecond)->UseRealTime();
          if (m == k && m <= 2)
            benchmark::RegisterBenchmark((name + "/packed").c_str(), bm_bitmix_gemm, isa, m, k, n, true)
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
        }
    }
    benchmark::RegisterBenchmark(("gemm/eigen_fp32/" + std::to_string(n)).c_str(), bm_eigen_gemm, n)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  for (Isa isa : isas) {
    if (!isa_available(isa)) continue;
    for (int k : {1, 2, 8})
      for (auto [c, size] : {std::pair<int64_t, int64_t>{16, 32}, {64, 8}}) {
        const std::string name = "pack/bitmix/" + std::string(isa_name(isa)) + "/A" + std::to_string(k) + "/" +
                                 std::to_string(c) + "x" + std::to_string(size) + "/b64";
        benchmark::RegisterBenchmark(name.c_str(), bm_bitmix_pack, isa, k, 64, c, size)->Unit(benchmark::kMicrosecond)->UseRealTime();
      }
  }
  for (const ConvShape& s : kResNet20Shapes)
    for (int64_t batch : {1, 64})
      for (int threads : {1, 2}) {
        const std::string suffix = std::string(s.name) + "/b" + std::to_string(batch) + "/t" + std::to_string(threads);
        for (Isa isa : isas) {
          if (!isa_available(isa) || isa == Isa::scalar) continue;
          for (int m : bit_set)
            for (int k : bit_set) {
              const std::string bits = "W" + std::to_string(m) + "A" + std::to_string(k);
              const std::string base = "conv/bitmix/" + std::string(isa_name(isa)) + "/" + bits + "/" + suffix;
              benchmark::RegisterBenchmark(base.c_str(), bm_bitmix_conv, isa, m, k, s, batch, threads, false)
                  ->Unit(benchmark::kMicrosecond)
                  ->UseRealTime();
              if (m == k && (m == 1 || m == 2))
                benchmark::RegisterBenchmark((base + "/f32out").c_str(), bm_bitmix_conv, isa, m, k, s, batch, threads, true)
                    ->Unit(benchmark::kMicrosecond)
                    ->UseRealTime();
            }
        }
#if defined(BITMIX_BENCH_ONEDNN)
        benchmark::RegisterBenchmark(("conv/onednn_fp32/" + suffix).c_str(), bm_onednn_conv, false, s, batch, threads)
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
        benchmark::RegisterBenchmark(("conv/onednn_u8s8/" + suffix).c_str(), bm_onednn_conv, true, s, batch, threads)
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
#endif
      }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
#if defined(BITMIX_BENCH_LUT_LOOPS)
  bitmix::bench::register_lut_loop_benchmarks();
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("cpu", bitmix::cpu_summary());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
