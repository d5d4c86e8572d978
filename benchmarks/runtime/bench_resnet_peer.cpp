// bitmix_resnet_peer_bench: bitmix's whole integer ResNet-20 (option B: 19 3x3 convolutions and
// 2 1x1 projection shortcuts, plus quantize ops, residual additions, pooling and the
// classifier) against the sum of oneDNN's int8 (u8 x s8 -> u8, ReLU and output scale) and fp32
// convolutions over the same 21 convolution shapes, in one process, at batch 1 and 64 on one
// thread. scripts/bench-resnet-peer.sh runs it under each ISA cap (BITMIX_MAX_ISA and
// DNNL_MAX_CPU_ISA alike) and prints the ratios.
//
// Names: resnet20/onednn_u8s8|onednn_fp32/b<batch>, resnet20/bitmix/<config>/<family>/b<batch>
// with config w1a1, w2a2, w4a4, w8a8 (first conv and classifier at 8 bits) or mixed (the EBS
// configuration of bitmix_runtime_bench), family auto (the per-layer choice), popcount, int8 or lut. The
// label of a bitmix run lists the family of each convolution in op order (P popcount, I int8, L lut,
// G float GEMM).
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/deploy/compiler.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/quantization.hpp"
#include "bitmix/quant/bit_config.hpp"
#include "bitmix/runtime/session.hpp"

#if defined(BITMIX_BENCH_ONEDNN)
#include <oneapi/dnnl/dnnl.hpp>
#endif
#if defined(BITMIX_BENCH_OPENMP)
#include <omp.h>
#endif

namespace {

using namespace bitmix;

const Shape kImage{3, 32, 32};

struct ConvShape {
  int64_t in_channels, out_channels, size;
  int kernel, stride, pad;
};

// The 21 convolutions of ResNet-20 option B on 32x32 inputs, in network order.
std::vector<ConvShape> resnet20_convs() {
  std::vector<ConvShape> v{{3, 16, 32, 3, 1, 1}};
  for (int i = 0; i < 6; ++i) v.push_back({16, 16, 32, 3, 1, 1});
  v.push_back({16, 32, 32, 3, 2, 1});
  v.push_back({32, 32, 16, 3, 1, 1});
  v.push_back({16, 32, 32, 1, 2, 0});  // projection shortcut
  for (int i = 0; i < 4; ++i) v.push_back({32, 32, 16, 3, 1, 1});
  v.push_back({32, 64, 16, 3, 2, 1});
  v.push_back({64, 64, 8, 3, 1, 1});
  v.push_back({32, 64, 16, 1, 2, 0});  // projection shortcut
  for (int i = 0; i < 4; ++i) v.push_back({64, 64, 8, 3, 1, 1});
  return v;
}

// The EBS configuration of bitmix_runtime_bench (w_bits, a_bits of layer{1,2,3}.{0,1,2}.conv{1,2}).
void mixed_config(quant::BitConfig& config) {
  static const int kBits[18][2] = {{3, 4}, {3, 3}, {3, 4}, {2, 4}, {2, 3}, {3, 4}, {3, 4}, {2, 4}, {3, 4},
                                   {2, 4}, {2, 4}, {2, 3}, {3, 4}, {3, 4}, {3, 4}, {2, 4}, {2, 2}, {2, 2}};
  for (std::size_t i = 1; i + 1 < config.layers.size() && i <= 18; ++i) {
    config.layers[i].w_bits = kBits[i - 1][0];
    config.layers[i].a_bits = kBits[i - 1][1];
  }
}

runtime::Model compile_resnet20(int bits, bool mixed) {
  nn::ModelSpec spec;
  spec.arch = "resnet20";
  spec.shortcut = nn::ShortcutOption::B;
  spec.seed = 3;
  auto model = nn::make_model(spec);
  quant::BitConfig config = nn::uniform_bit_config(*model, kImage, "resnet20", nn::UniformBits{bits, bits});
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

void run_bitmix(benchmark::State& state, const std::string& name, kernels::KernelFamily family, int64_t batch) {
  set_num_threads(1);
  const runtime::Model& model = models().at(name);
  runtime::SessionOptions o;
  o.kernel_family = family;
  runtime::Session session(model, o);
  std::string label;
  for (std::size_t i = 0; i < model.ops().size(); ++i) {
    const runtime::OpKind kind = model.ops()[i].kind;
    if (kind != runtime::OpKind::conv2d) continue;
    const kernels::KernelFamily f = session.kernel_family(i);
    label += session.runs_as_float_gemm(i)      ? 'G'
             : f == kernels::KernelFamily::int8 ? 'I'
             : f == kernels::KernelFamily::lut  ? 'L'
                                                : 'P';
  }
  Tensor images({batch, kImage[0], kImage[1], kImage[2]});
  Rng rng(5);
  for (float& v : images.values()) v = rng.uniform();
  Tensor logits;
  for (int i = 0; i < 3; ++i) session.run(images, logits);
  for (auto _ : state) {
    session.run(images, logits);
    benchmark::DoNotOptimize(logits.data());
  }
  state.SetLabel(fmt::format("{} {}", isa_name(active_isa()), label));
  set_num_threads(0);
}

#if defined(BITMIX_BENCH_ONEDNN)
// One oneDNN convolution with its own buffers, built once.
struct OnednnConv {
  dnnl::convolution_forward prim;
  dnnl::memory src, wei, bias, dst;
};

void run_onednn(benchmark::State& state, bool int8, int64_t batch) {
#if defined(BITMIX_BENCH_OPENMP)
  omp_set_num_threads(1);
#endif
  using namespace dnnl;
  using dt = memory::data_type;
  using tag = memory::format_tag;
  engine eng(engine::kind::cpu, 0);
  stream strm(eng);
  Rng rng(3);
  std::vector<OnednnConv> convs;
  std::string impl;
  for (const ConvShape& s : resnet20_convs()) {
    const int64_t o = (s.size + 2 * s.pad - s.kernel) / s.stride + 1;
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
    if (int8) attr.set_output_scales(0, {0.05f});
    const convolution_forward::primitive_desc pd(desc, attr, eng);
    OnednnConv c{convolution_forward(pd), memory(pd.src_desc(), eng), memory(pd.weights_desc(), eng),
                 memory(pd.bias_desc(), eng), memory(pd.dst_desc(), eng)};
    for (memory* m : {&c.src, &c.wei, &c.dst}) {
      auto* bytes = static_cast<uint8_t*>(m->get_data_handle());
      const std::size_t size = m->get_desc().get_size();
      if (int8) {
        for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(rng.below(128));
      } else {
        auto* f = static_cast<float*>(m->get_data_handle());
        for (std::size_t i = 0; i < size / 4; ++i) f[i] = rng.uniform(-1.0f, 1.0f);
      }
    }
    std::memset(c.bias.get_data_handle(), 0, c.bias.get_desc().get_size());
    if (impl.empty()) impl = pd.impl_info_str();
    convs.push_back(std::move(c));
  }
  for (auto _ : state) {
    for (OnednnConv& c : convs)
      c.prim.execute(strm, {{DNNL_ARG_SRC, c.src}, {DNNL_ARG_WEIGHTS, c.wei}, {DNNL_ARG_BIAS, c.bias}, {DNNL_ARG_DST, c.dst}});
    strm.wait();
  }
  state.SetLabel(impl);
}
#endif

}  // namespace

int main(int argc, char** argv) {
  for (int b : {1, 2, 4, 8}) models()[fmt::format("w{}a{}", b, b)] = compile_resnet20(b, false);
  models()["mixed"] = compile_resnet20(2, true);
  for (int64_t batch : {1, 64}) {
    const double min_time = batch == 1 ? 0.3 : 1.0;
#if defined(BITMIX_BENCH_ONEDNN)
    benchmark::RegisterBenchmark(fmt::format("resnet20/onednn_u8s8/b{}", batch).c_str(), run_onednn, true, batch)
        ->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(min_time);
    benchmark::RegisterBenchmark(fmt::format("resnet20/onednn_fp32/b{}", batch).c_str(), run_onednn, false, batch)
        ->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(min_time);
#else
    if (batch == 1) std::fprintf(stderr, "bitmix_resnet_peer_bench: oneDNN (libdnnl-dev) not found at configure time; "
                                         "only bitmix is measured (scripts/setup-debian.sh --peers)\n");
#endif
    for (const auto& [name, model] : models())
      for (kernels::KernelFamily family :
           {kernels::KernelFamily::automatic, kernels::KernelFamily::popcount, kernels::KernelFamily::int8,
            kernels::KernelFamily::lut})
        benchmark::RegisterBenchmark(
            fmt::format("resnet20/bitmix/{}/{}/b{}", name, kernels::kernel_family_name(family), batch).c_str(),
            run_bitmix, name, family, batch)
            ->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(min_time);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("cpu", bitmix::cpu_summary());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
