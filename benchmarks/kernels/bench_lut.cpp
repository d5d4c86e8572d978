// lut_loop/<loop>/<shape>/b<batch>: the inner loops of lut_loops.hpp sized for one ResNet-20
// 3x3 layer (its pixel count, output channels and reduction length; weights or tables of the
// layer's size, one pixel block of activations reused), so each time is what that loop alone
// would need for the layer: a bound for a kernel built on it, to compare with the real kernels
// (conv/bitmix/..., conv/onednn_u8s8/...) measured in the same run. Counter macs_per_s counts
// the layer's real MACs (W2A2 MACs for the bit loops, int8 MACs for the int8 ones).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/kernels.hpp"
#include "bitmix/kernels/lut.hpp"
#include "lut_loops.hpp"

namespace bitmix::bench {
namespace {

struct LayerShape {
  const char* name;
  int channels, out_channels, size;
};
constexpr LayerShape kShapes[] = {{"s1_16to16_32", 16, 16, 32}, {"s2_32to32_16", 32, 32, 16}, {"s3_64to64_8", 64, 64, 8}};

enum class Loop { vpshufb_ymm, vpshufb_zmm, vpermb_zmm, vpdpbusd_zmm, vpmaddubsw_ymm, popcnt_zmm, popcnt_ymm };

const char* loop_name(Loop l) {
  switch (l) {
    case Loop::vpshufb_ymm: return "vpshufb_ymm_g4";
    case Loop::vpshufb_zmm: return "vpshufb_zmm_g4";
    case Loop::vpermb_zmm: return "vpermb_zmm_g6";
    case Loop::vpdpbusd_zmm: return "vpdpbusd_zmm_int8";
    case Loop::vpmaddubsw_ymm: return "vpmaddubsw_ymm_int8";
    case Loop::popcnt_zmm: return "and_vpopcntd_zmm";
    case Loop::popcnt_ymm: return "nibble_popcount_ymm";
  }
  return "?";
}

// What the loop needs from the CPU (GCC's names), or nullptr if it runs everywhere it is compiled.
bool cpu_runs(Loop l) {
  __builtin_cpu_init();
  switch (l) {
    case Loop::vpshufb_ymm:
    case Loop::vpmaddubsw_ymm:
    case Loop::popcnt_ymm: return __builtin_cpu_supports("avx2");
    case Loop::vpshufb_zmm: return __builtin_cpu_supports("avx512bw");
    case Loop::vpermb_zmm: return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vbmi");
    case Loop::vpdpbusd_zmm: return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
    case Loop::popcnt_zmm: return __builtin_cpu_supports("avx512vpopcntdq");
  }
  return false;
}

std::vector<uint8_t> random_bytes(Rng& rng, int64_t count, unsigned below) {
  std::vector<uint8_t> v(static_cast<std::size_t>(count) + 64);
  for (auto& b : v) b = static_cast<uint8_t>(rng.below(below));
  return v;
}

void bm_loop(benchmark::State& state, Loop loop, LayerShape s, int64_t batch) {
  if (!cpu_runs(loop)) {
    state.SkipWithError("this CPU lacks the instructions of this loop");
    return;
  }
  Rng rng(5);
  const int64_t pixels = batch * s.size * s.size;
  const int reduction = 9 * s.channels;
  const int m = s.out_channels;
  auto blocks_of = [&](int per_block) { return static_cast<int>((pixels + per_block - 1) / per_block); };
  uint64_t sink = 0;
  switch (loop) {
    case Loop::vpshufb_ymm:
    case Loop::vpshufb_zmm:
    case Loop::vpermb_zmm: {
      const bool permb = loop == Loop::vpermb_zmm;
      const int g = permb ? 6 : 4, table_bytes = permb ? 64 : 16;
      const int groups = (reduction + g - 1) / g;
      const int index_bytes = loop == Loop::vpshufb_ymm ? 64 : 128;
      // table entries are sums of g offset 2-bit weights; indices g-bit (bit 7 clear)
      const auto table = random_bytes(rng, int64_t{m} * groups * table_bytes, 3 * g + 1);
      const auto index = random_bytes(rng, int64_t{groups} * index_bytes, 1u << g);
      for (auto _ : state) {
        if (loop == Loop::vpshufb_ymm)
          sink += loop_vpshufb_ymm(table.data(), index.data(), groups, m, blocks_of(kPixelsVpshufbYmm));
        else if (loop == Loop::vpshufb_zmm)
          sink += loop_vpshufb_zmm(table.data(), index.data(), groups, m, blocks_of(kPixelsVpshufbZmm));
        else
          sink += loop_vpermb_zmm(table.data(), index.data(), groups, m, blocks_of(kPixelsVpermb));
        benchmark::DoNotOptimize(sink);
      }
      break;
    }
    case Loop::vpdpbusd_zmm:
    case Loop::vpmaddubsw_ymm: {
      const int groups = reduction / 4;
      const auto weights = random_bytes(rng, int64_t{groups} * m * 4, 256);
      const auto act = random_bytes(rng, int64_t{8} * groups * 4, 256);
      for (auto _ : state) {
        if (loop == Loop::vpdpbusd_zmm)
          sink += loop_vpdpbusd_zmm(weights.data(), act.data(), groups, m, blocks_of(kPixelsVpdpbusd));
        else
          sink += loop_vpmaddubsw_ymm(weights.data(), act.data(), groups, m, blocks_of(kPixelsVpmaddubsw));
        benchmark::DoNotOptimize(sink);
      }
      break;
    }
    case Loop::popcnt_zmm:
    case Loop::popcnt_ymm: {
      // bitmix's window words: 3 rows of ceil(3 * C / 32) 32-bit words
      const int words = 3 * ((3 * s.channels + 31) / 32);
      std::vector<uint32_t> weights(static_cast<std::size_t>(words) * 2 * m), act(static_cast<std::size_t>(8 * words * 2));
      for (auto& w : weights) w = static_cast<uint32_t>(rng.next_u32());
      for (auto& a : act) a = static_cast<uint32_t>(rng.next_u32());
      for (auto _ : state) {
        if (loop == Loop::popcnt_zmm)
          sink += loop_popcnt_zmm(weights.data(), act.data(), words, m, blocks_of(kPixelsPopcntZmm));
        else
          sink += loop_popcnt_ymm(weights.data(), act.data(), words, m, blocks_of(kPixelsPopcntYmm));
        benchmark::DoNotOptimize(sink);
      }
      break;
    }
  }
  const double macs = static_cast<double>(pixels) * m * reduction;
  state.counters["macs_per_s"] = benchmark::Counter(macs, benchmark::Counter::kIsIterationInvariantRate);
}

// conv/lut/<isa>/W<m>A<k>/<shape>/b<batch>/t1: the table-lookup convolution, set up exactly as
// bench_kernels.cpp's conv/bitmix/... (same operands' distribution, ReLU, requantized packed
// output with border 1), so the two compare directly.
struct ConvLayer {
  const char* name;
  int64_t channels, out_channels, size;
  int kernel, stride, pad;
};
// The ResNet-20 layers of bench_kernels.cpp (same names), so a whole-network sum can be formed.
constexpr ConvLayer kConvLayers[] = {
    {"conv1_3to16_32", 3, 16, 32, 3, 1, 1},   {"s1_16to16_32", 16, 16, 32, 3, 1, 1},
    {"s2_16to32_32s2", 16, 32, 32, 3, 2, 1},  {"s2_32to32_16", 32, 32, 16, 3, 1, 1},
    {"s3_32to64_16s2", 32, 64, 16, 3, 2, 1},  {"s3_64to64_8", 64, 64, 8, 3, 1, 1},
    {"proj_16to32_32s2", 16, 32, 32, 1, 2, 0}};

// family < 0: the table-lookup kernels; otherwise conv2d on the packed weights with that
// KernelFamily (conv/<family>/... names), the same operands.
void bm_family_conv(benchmark::State& state, Isa isa, int m, int k, ConvLayer s, int64_t batch, int family);
void bm_lut_conv(benchmark::State& state, Isa isa, int m, int k, ConvLayer s, int64_t batch) {
  bm_family_conv(state, isa, m, k, s, batch, -1);
}
void bm_family_conv(benchmark::State& state, Isa isa, int m, int k, ConvLayer s, int64_t batch, int family) {
  using namespace bitmix::kernels;
  if (!isa_available(isa)) {
    state.SkipWithError("ISA not available on this CPU");
    return;
  }
  ScopedIsaCap cap(isa);
  set_num_threads(1);
  Rng rng(2);
  std::vector<uint8_t> codes(static_cast<std::size_t>(batch * s.channels * s.size * s.size));
  for (auto& v : codes) v = static_cast<uint8_t>(rng.below(uint64_t{1} << k));
  const PackedActivations x =
      PackedActivations::from_codes(codes, batch, s.channels, s.size, s.size, ActivationQuant{k, 0.1f, 0}, s.pad);
  const auto encoding = m == 1 ? WeightEncoding::odd_levels : WeightEncoding::twos_complement;
  const WeightSpec spec{s.out_channels, s.channels, s.kernel, s.kernel, m, encoding, false};
  std::vector<int32_t> w(static_cast<std::size_t>(spec.code_count()));
  for (auto& c : w)
    c = encoding == WeightEncoding::odd_levels ? 2 * static_cast<int32_t>(rng.below(uint64_t{1} << m)) - ((1 << m) - 1)
                                               : static_cast<int32_t>(rng.below(uint64_t{1} << m)) - (1 << (m - 1));
  const PackedWeights packed = PackedWeights::pack(w, spec);
  const LutWeights tables = family < 0 ? LutWeights(packed) : LutWeights();
  std::vector<float> scale(static_cast<std::size_t>(s.out_channels)), bias(scale.size());
  for (std::size_t i = 0; i < scale.size(); ++i) {
    scale[i] = rng.uniform(0.01f, 0.1f);
    bias[i] = rng.uniform(-1.0f, 1.0f);
  }
  const Epilogue e = Epilogue::requantize(scale, bias, true, ActivationQuant{k, 0.5f, 0}, 1);
  PackedActivations out;
  Conv2dParams params{s.stride, s.stride, s.pad, s.pad};
  if (family >= 0) params.family = static_cast<KernelFamily>(family);
  for (auto _ : state) {
    if (family < 0)
      conv2d(x, tables, params, e, out);
    else
      conv2d(x, packed, params, e, out);
    benchmark::DoNotOptimize(out.data());
  }
  const int64_t o = (s.size + 2 * s.pad - s.kernel) / s.stride + 1;
  const double macs = static_cast<double>(batch * s.out_channels * o * o * s.channels * s.kernel * s.kernel);
  state.counters["macs_per_s"] = benchmark::Counter(macs, benchmark::Counter::kIsIterationInvariantRate);
  set_num_threads(0);
}

// lut_build/<shape>: building one layer's tables from its packed 2-bit weights (what loading a
// model costs per layer if the tables are derived at load rather than stored); counter
// table_bytes is their size.
void bm_lut_build(benchmark::State& state, ConvLayer s) {
  using namespace bitmix::kernels;
  Rng rng(6);
  const WeightSpec spec{s.out_channels, s.channels, s.kernel, s.kernel, 2, WeightEncoding::twos_complement, false};
  std::vector<int32_t> w(static_cast<std::size_t>(spec.code_count()));
  for (auto& c : w) c = static_cast<int32_t>(rng.below(4)) - 2;
  const PackedWeights packed = PackedWeights::pack(w, spec);
  int64_t bytes = 0;
  for (auto _ : state) {
    const LutWeights tables(packed);
    bytes = static_cast<int64_t>(tables.tables().size());
    benchmark::DoNotOptimize(tables.tables().data());
  }
  state.counters["table_bytes"] = static_cast<double>(bytes);
  state.counters["packed_weight_bytes"] = static_cast<double>(packed.words().size() * 4);
}

}  // namespace

void register_lut_loop_benchmarks() {
  for (const ConvLayer& s : kConvLayers)
    benchmark::RegisterBenchmark((std::string("lut_build/") + s.name).c_str(), bm_lut_build, s)
        ->Unit(benchmark::kMicrosecond);
  for (const ConvLayer& s : kConvLayers)
    for (int64_t batch : {1, 64})
      for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512})
        for (auto [m, k] : {std::pair{1, 1}, {2, 2}, {3, 2}, {2, 1}}) {
          if (isa != Isa::avx2 && (m != 2 || k != 2)) continue;  // the AVX-512 cap runs the AVX2 tables
          const std::string name = std::string("conv/lut/") + std::string(isa_name(isa)) + "/W" + std::to_string(m) +
                                   "A" + std::to_string(k) + "/" + s.name + "/b" + std::to_string(batch) + "/t1";
          benchmark::RegisterBenchmark(name.c_str(), bm_lut_conv, isa, m, k, s, batch)
              ->Unit(benchmark::kMicrosecond)
              ->UseRealTime();
          if (isa == Isa::avx2 && m == 2 && k == 2) {  // the int8 family on the same operands
            const std::string int8 = "conv/int8/avx2/W2A2/" + std::string(s.name) + "/b" + std::to_string(batch) + "/t1";
            benchmark::RegisterBenchmark(int8.c_str(), bm_family_conv, isa, m, k, s, batch,
                                         static_cast<int>(kernels::KernelFamily::int8))
                ->Unit(benchmark::kMicrosecond)
                ->UseRealTime();
          }
        }
  const Loop loops[] = {Loop::vpshufb_ymm, Loop::vpshufb_zmm, Loop::vpermb_zmm, Loop::vpdpbusd_zmm,
                        Loop::vpmaddubsw_ymm, Loop::popcnt_zmm, Loop::popcnt_ymm};
  for (const LayerShape& s : kShapes)
    for (int64_t batch : {1, 64})
      for (Loop l : loops) {
        const std::string name =
            std::string("lut_loop/") + loop_name(l) + "/" + s.name + "/b" + std::to_string(batch);
        benchmark::RegisterBenchmark(name.c_str(), bm_loop, l, s, batch)->Unit(benchmark::kMicrosecond);
      }
}

}  // namespace bitmix::bench
