// The compiler against the fake-quant model it compiles.
//
// Exactness: with dyadic parameters (power-of-two quantizer steps, BatchNorm scales that are
// powers of two, shifts on a 2^-6 grid) every float operation of the fake-quant forward pass is
// exact, so its result does not depend on summation order or rounding, and the integer model
// must reproduce its logits bit for bit -- including every requantization that lands exactly
// on a rounding tie (which dyadic values make common). This checks BatchNorm folding, weight
// export, requantization fusion, the residual structure (identity, option A, option B), the
// signed first layer, pooling and the classifier without any tolerance.
//
// Parity with ordinary parameters: the two pipelines round differently (the fake-quant conv
// sums floats, the integer one sums integers and scales once), so a value within float
// rounding of a requantization threshold can land on the other side; top-1 predictions must
// still agree on almost every input.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/runtime/session.hpp"
#include "deploy/deploy_test_util.hpp"

namespace bitmix::deploy {
namespace {

using quant::QuantizerKind;
using testing::all_quantizers;
using testing::make_qat_net;
using testing::QatNet;
using testing::random_inputs;

float power_of_two_near(float v) { return std::ldexp(1.0f, static_cast<int>(std::lround(std::log2(std::fabs(v))))); }

// Rewrites the net's parameters so that every fake-quant float operation is exact (see top).
void make_dyadic(QatNet& net, Rng& rng) {
  const Shape image = net.image();
  for (nn::QuantizerTransform* q : all_quantizers(*net.model, image)) {
    quant::Quantizer& quantizer = q->quantizer();
    for (Parameter* p : quantizer.parameters())
      if (p->name == "step")
        for (float& v : p->value.values()) v = power_of_two_near(v);
  }
  for (nn::Module* m : net.model->modules()) {
    auto* bn = dynamic_cast<nn::BatchNorm2d*>(m);
    if (bn == nullptr) continue;
    const float eps = bn->options().eps;
    for (int64_t c = 0; c < bn->channels(); ++c) {
      // var + eps == 4^k exactly, so sqrt is exact and gamma / sqrt a power of two.
      const float target = std::ldexp(1.0f, 2 * static_cast<int>(std::lround(
                                                    std::log2(bn->running_var().value[c] + eps) / 2.0f)));
      float v = target - eps;
      for (int i = 0; i < 64 && v + eps != target; ++i)
        v = std::nextafter(v, v + eps < target ? INFINITY : -INFINITY);
      ASSERT_EQ(v + eps, target);
      bn->running_var().value[c] = v;
      const float g = bn->weight().value[c];
      bn->weight().value[c] = (g < 0 ? -1.0f : 1.0f) * power_of_two_near(g) * (rng.bernoulli(0.3f) ? 2.0f : 1.0f);
      bn->bias().value[c] = std::round(bn->bias().value[c] * 64.0f) / 64.0f;
      bn->running_mean().value[c] = std::round(bn->running_mean().value[c] * 64.0f) / 64.0f;
    }
  }
  for (nn::Module* m : net.model->modules())
    if (auto* fc = dynamic_cast<nn::Linear*>(m))
      for (float& b : fc->bias()->value.values()) b = std::round(b * 64.0f) / 64.0f;
}

struct Agreement {
  int64_t images = 0, same_top1 = 0;
  double max_abs_diff = 0, mean_abs_diff = 0, mean_abs_logit = 0;
};

Agreement compare(QatNet& net, const runtime::Model& model, const Tensor& inputs) {
  const Tensor& fake = net.model->forward(inputs);
  runtime::Session session(model);
  const Tensor integer = session.run_normalized(inputs);
  EXPECT_EQ(fake.shape(), integer.shape());
  Agreement a;
  a.images = inputs.dim(0);
  const std::vector<int> pf = runtime::predictions(fake), pi = runtime::predictions(integer);
  for (std::size_t i = 0; i < pf.size(); ++i) a.same_top1 += pf[i] == pi[i];
  for (int64_t i = 0; i < fake.numel(); ++i) {
    const double d = std::fabs(static_cast<double>(fake[i]) - static_cast<double>(integer[i]));
    a.max_abs_diff = std::max(a.max_abs_diff, d);
    a.mean_abs_diff += d / static_cast<double>(fake.numel());
    a.mean_abs_logit += std::fabs(static_cast<double>(fake[i])) / static_cast<double>(fake.numel());
  }
  return a;
}

void expect_exact(QatNet& net, uint64_t seed) {
  Rng rng(seed);
  make_dyadic(net, rng);
  const runtime::Model model = testing::compile_net(net);
  const Tensor inputs = random_inputs(rng, 24, net.image());
  const Tensor fake = net.model->forward(inputs);
  runtime::Session session(model);
  const Tensor integer = session.run_normalized(inputs);
  ASSERT_EQ(fake.shape(), integer.shape());
  int64_t differing = 0;
  for (int64_t i = 0; i < fake.numel(); ++i) differing += std::memcmp(fake.data() + i, integer.data() + i, sizeof(float)) != 0;
  EXPECT_EQ(differing, 0) << "of " << fake.numel() << " logits; first: " << fake[0] << " vs " << integer[0];
  // Not a degenerate network: the logits differ between images and classes.
  double spread = 0;
  for (int64_t i = 1; i < fake.numel(); ++i) spread += static_cast<double>(std::fabs(fake[i] - fake[0]));
  EXPECT_GT(spread, 0.0);
}

struct BitsCase {
  const char* name;
  int w, a;
};

class DyadicParity : public ::testing::TestWithParam<BitsCase> {};

TEST_P(DyadicParity, ResNetOptionAIsBitExact) {
  QatNet net = make_qat_net("resnet8", nn::UniformBits{GetParam().w, GetParam().a}, 11);
  expect_exact(net, 12);
}

TEST_P(DyadicParity, ResNetOptionBIsBitExact) {
  QatNet net = make_qat_net("resnet8", nn::UniformBits{GetParam().w, GetParam().a}, 13, nn::ShortcutOption::B);
  expect_exact(net, 14);
}

INSTANTIATE_TEST_SUITE_P(Deploy, DyadicParity,
                         ::testing::Values(BitsCase{"W1A1", 1, 1}, BitsCase{"W2A2", 2, 2}, BitsCase{"W4A4", 4, 4},
                                           BitsCase{"W8A8", 8, 8}, BitsCase{"W3A5", 3, 5}),
                         [](const ::testing::TestParamInfo<BitsCase>& p) { return std::string(p.param.name); });

// Mixed bits, per-tensor and per-channel weights, unpinned first and last layers.
TEST(DyadicParityMixed, EveryLayerItsOwnBits) {
  Rng pick(15);
  nn::UniformBits bits{2, 2};
  bits.policy = quant::BitPolicy::none();
  QatNet net = make_qat_net("resnet8", bits, 16, nn::ShortcutOption::B, 8, [&](quant::BitConfig& c) {
    for (std::size_t i = 0; i < c.layers.size(); ++i) {
      quant::LayerBits& l = c.layers[i];
      const int choices[] = {1, 2, 3, 4, 5, 8};
      l.w_bits = choices[pick.below(6)];
      l.a_bits = choices[pick.below(6)];
      if (i == 0 && l.a_bits == 1) l.a_bits = 2;  // signed LSQ activations need 2 bits
      l.w_granularity = pick.bernoulli(0.5f) ? quant::Granularity::per_channel : quant::Granularity::per_tensor;
    }
    c.policy = quant::BitPolicy::none();
  });
  expect_exact(net, 17);
}

TEST(DyadicParityVgg, MaxPoolingAndFlattenAreBitExact) {
  QatNet net = make_qat_net("vgg-small", nn::UniformBits{2, 3}, 18, nn::ShortcutOption::A, 8);
  expect_exact(net, 19);
}

// A plain Sequential: conv + BatchNorm + ReLU, conv, then flatten into a linear layer (the
// second conv must write floats for the flatten), optionally with an average pooling the
// runtime has no op for.
QatNet make_sequential_net(uint64_t seed, bool with_avg_pool) {
  QatNet net;
  net.spec.arch = "custom";
  net.spec.in_channels = 2;
  net.spec.image_height = net.spec.image_width = 6;
  Rng rng(seed);
  auto seq = std::make_unique<nn::Sequential>("Custom");
  seq->append("conv1", std::make_unique<nn::Conv2d>(nn::Conv2dOptions::square(2, 4, 3, 1, 1), rng));
  seq->append("bn1", std::make_unique<nn::BatchNorm2d>(4, true));
  seq->append("conv2", std::make_unique<nn::Conv2d>(nn::Conv2dOptions::square(4, 4, 3, 1, 1, 1, true), rng));
  seq->append("relu2", std::make_unique<nn::ReLU>());
  if (with_avg_pool) seq->append("pool", std::make_unique<nn::AvgPool2d>(nn::Pool2dOptions::square(2, 2)));
  seq->append("flatten", std::make_unique<nn::Flatten>());
  seq->append("fc", std::make_unique<nn::Linear>(with_avg_pool ? 36 : 144, 5, true, rng));
  net.model = std::move(seq);
  const Shape image = net.image();
  net.config = nn::uniform_bit_config(*net.model, image, "custom", nn::UniformBits{3, 3});
  nn::apply_bit_config(*net.model, image, net.config);
  net.model->eval();
  net.model->forward(random_inputs(rng, 16, image));  // initializes the quantizers
  return net;
}

TEST(DyadicParitySequential, ConvWithBiasReluModuleAndFlattenAreBitExact) {
  QatNet net = make_sequential_net(71, false);
  expect_exact(net, 72);
}

// A graph model (nn/graph.hpp): fan-out, an identity and a projection residual, a depthwise
// conv, max pooling and the classifier. `variant` replaces the first residual's ReLU by a ReLU6
// or adds a concatenation, which the runtime has no op for.
nn::ModelSpec graph_spec(const std::string& variant = "") {
  auto node = [](std::string name, nn::GraphOp op, std::vector<std::string> in, std::string out) {
    nn::GraphNode n;
    n.name = std::move(name);
    n.op = op;
    n.inputs = std::move(in);
    n.output = std::move(out);
    return n;
  };
  auto conv = [&](std::string name, std::string in, std::string out, int64_t cin, int64_t cout, int64_t k, int64_t s,
                  int64_t groups = 1) {
    nn::GraphNode n = node(std::move(name), nn::GraphOp::conv, {std::move(in)}, std::move(out));
    n.conv = nn::Conv2dOptions::square(cin, cout, k, s, k / 2, groups);
    return n;
  };
  auto bn = [&](std::string name, std::string in, std::string out, int64_t c, bool relu) {
    nn::GraphNode n = node(std::move(name), nn::GraphOp::batch_norm, {std::move(in)}, std::move(out));
    n.channels = c;
    n.relu = relu;
    return n;
  };
  nn::GraphSpec g;
  g.nodes = {conv("stem", "input", "c0", 3, 8, 3, 1), bn("stem_bn", "c0", "s", 8, true),
             conv("a", "s", "a0", 8, 8, 3, 1), bn("a_bn", "a0", "a1", 8, false),
             node("a_relu", nn::GraphOp::relu, {"a1"}, "a"), conv("b", "a", "b0", 8, 8, 3, 1),
             bn("b_bn", "b0", "b", 8, false), node("add1", nn::GraphOp::add, {"b", "s"}, "sum1"),
             node("relu1", variant == "relu6" ? nn::GraphOp::relu6 : nn::GraphOp::relu, {"sum1"}, "r1"),
             conv("dw", "r1", "d0", 8, 8, 3, 1, 8), bn("dw_bn", "d0", "d", 8, true),
             conv("pw", "d", "p0", 8, 16, 1, 2), bn("pw_bn", "p0", "p", 16, false),
             conv("proj", "r1", "q0", 8, 16, 1, 2), bn("proj_bn", "q0", "q", 16, false),
             node("add2", nn::GraphOp::add, {"p", "q"}, "sum2"), node("relu2", nn::GraphOp::relu, {"sum2"}, "r2")};
  std::string last = "r2";
  int64_t channels = 16;
  if (variant == "concat") {
    g.nodes.push_back(node("cat", nn::GraphOp::concat, {"r2", "p"}, "cat"));
    last = "cat";
    channels = 32;
  }
  nn::GraphNode pool = node("pool", nn::GraphOp::max_pool, {last}, "m");
  pool.pool = nn::Pool2dOptions::square(2, 2);
  g.nodes.push_back(pool);
  g.nodes.push_back(node("gap", nn::GraphOp::global_avg_pool, {"m"}, "v"));
  nn::GraphNode fc = node("fc", nn::GraphOp::linear, {"v"}, "logits");
  fc.in_features = channels;
  fc.out_features = 5;
  g.nodes.push_back(fc);
  g.output = "logits";
  nn::ModelSpec spec;
  spec.arch = "graph";
  spec.in_channels = 3;
  spec.image_height = spec.image_width = 12;
  spec.num_classes = 5;
  spec.seed = 31;
  spec.graph = g;
  return spec;
}

TEST(DyadicParityGraph, ResidualsFanOutDepthwiseAndPoolingAreBitExact) {
  for (const auto& [w, a] : {std::pair{2, 2}, std::pair{4, 3}}) {
    SCOPED_TRACE(fmt::format("W{}A{}", w, a));
    QatNet net = make_qat_net(graph_spec(), nn::UniformBits{w, a}, 32);
    expect_exact(net, 33);
  }
}

TEST(CompileRefuses, GraphNodesWithoutARuntimeOpNamingThem) {
  for (const char* variant : {"relu6", "concat"}) {
    QatNet net = make_qat_net(graph_spec(variant), nn::UniformBits{4, 4}, 34);
    try {
      testing::compile_net(net);
      ADD_FAILURE() << variant << " compiled";
    } catch (const ArgumentError& e) {
      const std::string want = std::string(variant) == "relu6" ? "graph node 'relu1' (relu6)" : "graph node 'cat' (concat)";
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
}

// ---- Ordinary (non-dyadic) parameters and other quantizer kinds.

struct SchemeCase {
  const char* name;
  const char* scheme;
  int w, a;
};

class KindParity : public ::testing::TestWithParam<SchemeCase> {};

TEST_P(KindParity, TopOneAgreesAndLogitsStayClose) {
  const SchemeCase& c = GetParam();
  const nn::QuantScheme scheme = nn::parse_quant_scheme(c.scheme);
  nn::UniformBits bits{c.w, c.a, scheme.w_quant, scheme.a_quant};
  // DSConv deploys with one block per output channel (export refuses more: DSConvExport below).
  if (scheme.w_quant == quant::QuantizerKind::dsconv) bits.w_block = 1 << 20;
  QatNet net = make_qat_net("resnet8", bits, 21);
  // INQ exports once every weight is frozen.
  if (scheme.w_quant == quant::QuantizerKind::inq) nn::inq_freeze(*net.model, net.image(), 1.0);
  CompileReport report;
  const runtime::Model model = testing::compile_net(net, &report);
  for (const std::string& n : report.notes) std::cout << "  note: " << n << '\n';
  Rng rng(22);
  const Agreement a = compare(net, model, random_inputs(rng, 200, net.image()));
  std::cout << "  " << c.name << ": top-1 agreement " << a.same_top1 << "/" << a.images << ", max |diff| "
            << a.max_abs_diff << ", mean |diff| " << a.mean_abs_diff << ", mean |logit| " << a.mean_abs_logit << '\n';
  EXPECT_GE(a.same_top1, a.images * 97 / 100);
  EXPECT_LT(a.mean_abs_diff, 0.05 * a.mean_abs_logit);
}

INSTANTIATE_TEST_SUITE_P(
    Deploy, KindParity,
    ::testing::Values(SchemeCase{"lsq_w1a1", "lsq", 1, 1}, SchemeCase{"lsq_w2a2", "lsq", 2, 2},
                      SchemeCase{"lsq_w4a4", "lsq", 4, 4}, SchemeCase{"lsq_w8a8", "lsq", 8, 8},
                      SchemeCase{"pact_dorefa_w2a2", "pact", 2, 2}, SchemeCase{"sawb_pact_w2a2", "sawb", 2, 2},
                      SchemeCase{"dorefa_w3a3", "dorefa", 3, 3}, SchemeCase{"symmetric_w4a4", "symmetric", 4, 4},
                      SchemeCase{"binary_a2", "binary", 1, 2}, SchemeCase{"ternary_a2", "ternary", 2, 2},
                      SchemeCase{"pot_w4a4", "pot", 4, 4}, SchemeCase{"syq_w1a2", "syq", 1, 2},
                      SchemeCase{"syq_w2a2", "syq", 2, 2}, SchemeCase{"dsconv_w4a4", "dsconv", 4, 4},
                      SchemeCase{"dsconv_w2a2", "dsconv", 2, 2}, SchemeCase{"inq_w3a4", "inq", 3, 4}),
    [](const ::testing::TestParamInfo<SchemeCase>& p) { return std::string(p.param.name); });

TEST(DSConvExport, SeveralBlocksPerOutputChannelAreRefusedByName) {
  nn::UniformBits bits{4, 4, quant::QuantizerKind::dsconv, quant::QuantizerKind::lsq};
  bits.w_block = 8;  // resnet8's 16-channel layers get two blocks per output channel
  QatNet net = make_qat_net("resnet8", bits, 23);
  try {
    testing::compile_net(net, nullptr);
    ADD_FAILURE() << "expected the compiler to refuse a DSConv layer with several blocks per output channel";
  } catch (const ArgumentError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("blocks per output channel"), std::string::npos) << m;
    EXPECT_NE(m.find("dsconv"), std::string::npos) << m;
  }
}

TEST(InqExport, RefusedUntilEveryWeightIsFrozen) {
  nn::UniformBits bits{3, 4, quant::QuantizerKind::inq, quant::QuantizerKind::lsq};
  QatNet net = make_qat_net("resnet8", bits, 24);
  nn::inq_freeze(*net.model, net.image(), 0.875);
  EXPECT_THROW(testing::compile_net(net, nullptr), ArgumentError);
}

// ---- Activation codes: the kernels' quantizer the compiler chose against quant's own.

// Every activation quantizer of the net against the kernels' ActivationQuant the compiled model
// uses for it (a quantize op or a requantizing epilogue), on values at and next to every
// rounding threshold of its grid.
void expect_codes_match(const std::string& scheme, int bits, bool expect_exact) {
  const nn::QuantScheme s = nn::parse_quant_scheme(scheme);
  QatNet net = make_qat_net("resnet8", nn::UniformBits{bits, bits, s.w_quant, s.a_quant}, 61);
  CompileReport report;
  const runtime::Model model = testing::compile_net(net, &report);
  int compared = 0, other_form_mismatches = 0;
  for (const nn::LayerQuantizers& l : nn::attached_quantizers(*net.model, net.image())) {
    // The value the layer's op reads is produced by its quantize op or by a requantizing conv.
    const runtime::Op* consumer = nullptr;
    for (const runtime::Op& op : model.ops())
      if (op.name == l.name) consumer = &op;
    ASSERT_NE(consumer, nullptr) << l.name;
    const runtime::ValueInfo& v = model.values()[static_cast<std::size_t>(consumer->inputs[0])];
    const kernels::ActivationQuant& kq = v.quant;
    quant::Quantizer& q = l.input->quantizer();
    const quant::QuantParams p = q.params();
    std::vector<float> probes;
    for (int32_t k = p.min_code; k <= p.max_code + 1; ++k) {
      float x = (static_cast<float>(k - p.zero_points[0]) - 0.5f) * p.scales[0];
      for (int u = 0; u < 4; ++u) x = std::nextafter(x, -INFINITY);
      for (int u = 0; u < 9; ++u, x = std::nextafter(x, INFINITY)) probes.push_back(x);
    }
    Tensor t({static_cast<int64_t>(probes.size())});
    std::copy(probes.begin(), probes.end(), t.data());
    const quant::QuantizedTensor expected = q.quantize(t);
    int mismatches = 0;
    kernels::ActivationQuant other_form = kq;  // x / s instead of x * (1/s): must be told apart
    other_form.reciprocal = !other_form.reciprocal;
    for (std::size_t i = 0; i < probes.size(); ++i) {
      const int32_t got = std::clamp<int32_t>(kernels::quantize_code(probes[i], kq), p.min_code, p.max_code);
      mismatches += got != expected.codes[i];
      other_form_mismatches +=
          std::clamp<int32_t>(kernels::quantize_code(probes[i], other_form), p.min_code, p.max_code) != expected.codes[i];
    }
    if (expect_exact) {
      EXPECT_EQ(mismatches, 0) << l.name << " (" << q.describe() << ")";
    } else {
      EXPECT_LE(mismatches, static_cast<int>(probes.size() / 9 * 2)) << l.name;  // only next to ties
    }
    ++compared;
  }
  EXPECT_GT(compared, 5);
  if (expect_exact) {
    EXPECT_TRUE(report.notes.empty());
    EXPECT_GT(other_form_mismatches, 0) << "the probes cannot tell the two rounding forms apart";
  }
}

TEST(ActivationCodes, LsqCodesMatchQuantBitForBitAtEveryThreshold) { expect_codes_match("lsq", 3, true); }
TEST(ActivationCodes, SymmetricCodesMatchQuantBitForBit) { expect_codes_match("symmetric", 4, true); }

TEST(ActivationCodes, DoReFaMultiplierWithoutReciprocalIsReportedAndOnlyTiesDiffer) {
  CompileReport report;
  QatNet net = make_qat_net("resnet8", nn::UniformBits{3, 3, QuantizerKind::dorefa, QuantizerKind::dorefa}, 62);
  testing::compile_net(net, &report);
  ASSERT_FALSE(report.notes.empty());
  EXPECT_NE(report.notes[0].find("no exact float reciprocal"), std::string::npos) << report.notes[0];
  expect_codes_match("dorefa", 3, false);
}

// ---- What cannot be deployed.

void expect_refused(QatNet& net, const std::string& fragment) {
  try {
    testing::compile_net(net);
    ADD_FAILURE() << "compiled a model that should fail with: " << fragment;
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(CompileRefuses, FloatLayersNamingThem) {
  QatNet net = make_qat_net("resnet8", nn::UniformBits{2, 2}, 31, nn::ShortcutOption::A, 8, [](quant::BitConfig& c) {
    c.layers[2].w_quant = QuantizerKind::float_bypass;
    c.layers[2].w_bits = quant::kFloatBits;
  });
  expect_refused(net, "layer '" + net.config.layers[2].name + "': no weight quantizer");
}

TEST(CompileRefuses, WeightsWithAZeroPoint) {
  QatNet net = make_qat_net("resnet8", nn::UniformBits{2, 2, QuantizerKind::uniform, QuantizerKind::lsq}, 32);
  expect_refused(net, "zero point");
}

TEST(CompileRefuses, CodesWiderThanEightBits) {
  QatNet net = make_qat_net("resnet8", nn::UniformBits{2, 2}, 33, nn::ShortcutOption::A, 8, [](quant::BitConfig& c) {
    c.layers[1].w_quant = QuantizerKind::pot;
    c.layers[1].w_bits = 5;  // power-of-two levels: 16-bit codes
  });
  expect_refused(net, "16-bit codes");
}

TEST(CompileRefuses, ModulesWithoutARuntimeOp) {
  QatNet net = make_sequential_net(73, true);
  expect_refused(net, "layer 'pool' (AvgPool2d): the integer runtime has no op");
}

TEST(CompileRefuses, UninitializedQuantizers) {
  nn::ModelSpec spec;
  spec.arch = "resnet8";
  spec.width = 4;
  spec.image_height = spec.image_width = 8;
  spec.num_classes = 3;
  auto model = nn::make_model(spec);
  const Shape image{3, 8, 8};
  nn::apply_bit_config(*model, image, nn::uniform_bit_config(*model, image, "resnet8", nn::UniformBits{2, 2}));
  try {
    compile(*model, image, CompileOptions{});
    FAIL();
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("not initialized"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("layer 'conv1'"), std::string::npos) << e.what();
  }
}

// ---- Checkpoints.

TEST(LoadQatModel, CheckpointAndBitsFileRebuildTheSameModel) {
  QatNet net = make_qat_net("resnet8", nn::UniformBits{2, 2}, 41);
  const auto dir = std::filesystem::temp_directory_path() / "bitmix_deploy_ckpt_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  nn::Checkpoint ck;
  nn::add_model_state(ck, *net.model);
  ck.metadata = std::string(R"({"model": )") + nn::model_spec_to_json(net.spec) +
                R"(, "normalization": {"mean": [0.5, 0.25, 0.125], "std": [0.5, 0.5, 0.25]}})";
  // The trainer records the data set inside the model object; add it.
  ck.metadata.insert(ck.metadata.find("\"arch\""), R"("data": "fashion-mnist", )");
  nn::save_checkpoint(dir / "qat.ckpt", ck);
  net.config.save(dir / "bits.json");

  EXPECT_THROW(load_qat_model(dir / "qat.ckpt"), ArgumentError);  // no BitConfig recorded: --bits needed
  QatModel qat = load_qat_model(dir / "qat.ckpt", dir / "bits.json");
  EXPECT_EQ(qat.mean, (std::vector<float>{0.5f, 0.25f, 0.125f}));
  const CompileOptions o = qat.compile_options();
  EXPECT_EQ(o.name, "resnet8-w2a2");
  EXPECT_TRUE(o.class_names.empty());  // fashion-mnist has 10 classes, this model 5
  const runtime::Model a = compile(*qat.model, qat.image_shape(), o);
  const runtime::Model b = testing::compile_net(net);
  Rng rng(42);
  Tensor inputs = random_inputs(rng, 8, net.image());
  runtime::Session sa(a), sb(b);
  const Tensor la = sa.run_normalized(inputs), lb = sb.run_normalized(inputs);
  EXPECT_TRUE(testing::same_bits(la.data(), lb.data(), la.numel()));
  // run() applies the stored normalization to pixels.
  Tensor pixels = inputs;
  for (int64_t i = 0; i < pixels.numel(); ++i) {
    const auto c = static_cast<std::size_t>((i / 144) % 3);
    pixels[i] = std::fabs(pixels[i]) / 4.0f;
    inputs[i] = (pixels[i] - o.mean[c]) / o.stddev[c];
  }
  const Tensor lp = sa.run(pixels), ln = sa.run_normalized(inputs);
  EXPECT_TRUE(testing::same_bits(lp.data(), ln.data(), lp.numel()));
  std::filesystem::remove_all(dir);
}

TEST(CompiledModel, SurvivesTheFileAndReportsItsOrigin) {
  QatNet net = make_qat_net("resnet8", nn::UniformBits{3, 3}, 51);
  CompileOptions o;
  o.architecture = "resnet8";
  o.class_names = {"a", "b", "c", "d", "e"};
  o.extra["bit_config"] = net.config.to_json();
  const runtime::Model model = compile(*net.model, net.image(), o);
  EXPECT_EQ(model.info().name, "resnet8");
  const runtime::Model back = runtime::Model::parse(model.serialize(), "mem");
  EXPECT_EQ(std::get<std::string>(back.info().extra.at("bit_config")), net.config.to_json());
  // Per-layer notes keep the quantizer kinds and bits.
  int convs = 0;
  for (const runtime::Op& op : back.ops())
    if (op.kind == runtime::OpKind::conv2d) {
      ++convs;
      EXPECT_EQ(op.notes.weight_quantizer, "lsq") << op.name;
      EXPECT_GT(op.notes.weight_bits, 0) << op.name;
      EXPECT_FALSE(op.notes.weight_scales.empty()) << op.name;
    }
  EXPECT_EQ(convs, 7);  // stem + 3 blocks x 2 (option A: no projections)
  const runtime::ModelStats s = back.stats();
  EXPECT_LT(s.packed_weight_bytes * 4, s.float_parameter_bytes);
}

}  // namespace
}  // namespace bitmix::deploy
