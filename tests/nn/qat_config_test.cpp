// Applying BitConfigs to models: what gets attached where (names, signedness, granularity),
// uniform configurations and the first/last policy, costs against ResNet-20's arithmetic from
// the paper's description, validation errors naming the entry, read-back and removal, and the
// --quant scheme names.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/quantization.hpp"

namespace bitmix::nn {
namespace {

using quant::BitConfig;
using quant::BitPolicy;
using quant::Granularity;
using quant::QuantizerKind;

const Shape kCifar{3, 32, 32};

std::unique_ptr<Module> resnet20() {
  ModelSpec spec;
  spec.arch = "resnet20";
  spec.seed = 1;
  return make_model(spec);
}

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& text, const std::string& fragment) { return text.find(fragment) != std::string::npos; }

std::set<std::string> transform_entry_names(Module& model) {
  std::set<std::string> names;
  for (const NamedParameter& p : model.named_parameters())
    if (contains(p.name, "_transform.")) names.insert(p.name);
  for (const NamedBuffer& b : model.named_buffers())
    if (contains(b.name, "_transform.")) names.insert(b.name);
  return names;
}

TEST(QatConfig, UniformConfigPinsFirstAndLastLayers) {
  auto model = resnet20();
  const BitConfig config = uniform_bit_config(*model, kCifar, "resnet20", UniformBits{4, 3});
  ASSERT_EQ(config.layers.size(), 20u);  // 19 convolutions and fc
  EXPECT_EQ(config.layers.front().name, "conv1");
  EXPECT_EQ(config.layers.back().name, "fc");
  EXPECT_EQ(config.layers[1].name, "layer1.0.conv1");
  for (std::size_t i = 0; i < config.layers.size(); ++i) {
    const bool pinned = i == 0 || i + 1 == config.layers.size();
    EXPECT_EQ(config.layers[i].w_bits, pinned ? 8 : 4) << config.layers[i].name;
    EXPECT_EQ(config.layers[i].a_bits, pinned ? 8 : 3) << config.layers[i].name;
    EXPECT_EQ(config.layers[i].w_quant, QuantizerKind::lsq);
    EXPECT_EQ(config.layers[i].w_granularity, Granularity::per_channel);
  }
  EXPECT_EQ(config.policy.first_layer_bits, 8);
  EXPECT_EQ(config.policy.last_layer_bits, 8);

  UniformBits none{2, 2};
  none.policy = BitPolicy::none();
  none.w_granularity = Granularity::per_tensor;
  const BitConfig flat = uniform_bit_config(*model, kCifar, "resnet20", none);
  for (const quant::LayerBits& l : flat.layers) {
    EXPECT_EQ(l.w_bits, 2);
    EXPECT_EQ(l.a_bits, 2);
    EXPECT_EQ(l.w_granularity, Granularity::per_tensor);
  }
}

// A kind that cannot take what the policy or the layer needs falls back to LSQ for that tensor.
TEST(QatConfig, UniformConfigFallsBackToLsqWhereAKindCannot) {
  auto model = resnet20();
  UniformBits binary{1, 2, QuantizerKind::binary, QuantizerKind::pact};
  const BitConfig c = uniform_bit_config(*model, kCifar, "resnet20", binary);
  EXPECT_EQ(c.layers.front().w_quant, QuantizerKind::lsq);  // binary cannot be 8-bit
  EXPECT_EQ(c.layers.front().a_quant, QuantizerKind::lsq);  // pact cannot read the signed image
  EXPECT_EQ(c.layers.back().w_quant, QuantizerKind::lsq);
  EXPECT_EQ(c.layers.back().a_quant, QuantizerKind::pact);  // fc reads post-ReLU features
  EXPECT_EQ(c.layers[5].w_quant, QuantizerKind::binary);
  EXPECT_EQ(c.layers[5].w_bits, 1);

  UniformBits pinned_float{4, 4};
  pinned_float.policy = BitPolicy{quant::kFloatBits, 8};
  const BitConfig f = uniform_bit_config(*model, kCifar, "resnet20", pinned_float);
  EXPECT_EQ(f.layers.front().w_quant, QuantizerKind::float_bypass);
  EXPECT_EQ(f.layers.front().w_bits, 32);
  apply_bit_config(*model, kCifar, f);
  const std::vector<LayerQuantizers> attached = attached_quantizers(*model, kCifar);
  EXPECT_EQ(attached.front().weight, nullptr);  // float: nothing attached
  EXPECT_EQ(attached.front().input, nullptr);
  EXPECT_NE(attached[1].weight, nullptr);
}

TEST(QatConfig, ApplyAttachesNamedQuantizersWithSignedFirstInput) {
  auto model = resnet20();
  apply_bit_config(*model, kCifar, uniform_bit_config(*model, kCifar, "resnet20", UniformBits{4, 4}));
  const std::vector<LayerQuantizers> layers = attached_quantizers(*model, kCifar);
  ASSERT_EQ(layers.size(), 20u);
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const LayerQuantizers& l = layers[i];
    ASSERT_NE(l.weight, nullptr) << l.name;
    ASSERT_NE(l.input, nullptr) << l.name;
    EXPECT_EQ(l.input->spec().signed_activations, i == 0) << l.name;
    EXPECT_EQ(l.weight->spec().granularity, Granularity::per_channel);
    const int64_t out_channels = l.name == "fc" ? 10 : (l.name == "conv1" || contains(l.name, "layer1") ? 16 : 0);
    if (out_channels > 0) {
      EXPECT_EQ(l.weight->spec().channels, out_channels) << l.name;
    }
    EXPECT_EQ(l.weight->spec().bits, i == 0 || i == 19 ? 8 : 4);
  }
  // Checkpoint names: "<layer>.weight_transform.<local>", "<layer>.input_transform.<local>".
  const std::set<std::string> names = transform_entry_names(*model);
  EXPECT_EQ(names.size(), 20u * 4u);  // step + initialized, for weights and inputs
  for (const char* expected :
       {"layer1.0.conv1.weight_transform.step", "layer1.0.conv1.input_transform.step",
        "layer1.0.conv1.weight_transform.initialized", "conv1.input_transform.step", "fc.weight_transform.step",
        "layer3.2.conv2.input_transform.initialized"})
    EXPECT_TRUE(names.count(expected)) << expected;
  // Per-channel steps: one per output channel.
  for (const NamedParameter& p : model->named_parameters())
    if (p.name == "layer3.0.conv1.weight_transform.step") {
      EXPECT_EQ(p.parameter->value.shape(), (Shape{64}));
    }
}

// MACs, weights, BitOPs and weight bits recomputed from ResNet-20's structure (He et al. 2016):
// 3x3 convolutions, 16/32/64 channels on 32/16/8-pixel maps, 3 blocks per stage.
TEST(QatConfig, TotalsMatchResNet20Arithmetic) {
  auto model = resnet20();
  const int64_t conv1_w = 3 * 16 * 9, conv1_macs = conv1_w * 32 * 32;
  const int64_t fc_w = 64 * 10, fc_macs = fc_w;
  int64_t mid_w = 0, mid_macs = 0;
  const int64_t channels[3] = {16, 32, 64}, side[3] = {32, 16, 8};
  for (int s = 0; s < 3; ++s)
    for (int block = 0; block < 3; ++block)
      for (int conv = 0; conv < 2; ++conv) {
        const int64_t in = (s > 0 && block == 0 && conv == 0) ? channels[s - 1] : channels[s];
        const int64_t w = in * channels[s] * 9;
        mid_w += w;
        mid_macs += w * side[s] * side[s];
      }
  ASSERT_EQ(conv1_macs + mid_macs + fc_macs, 40551040);  // the figure docs/training.md quotes

  const BitConfig c = uniform_bit_config(*model, kCifar, "resnet20", UniformBits{3, 2});
  ASSERT_TRUE(c.totals.has_value());
  EXPECT_EQ(c.totals->macs, conv1_macs + mid_macs + fc_macs);
  EXPECT_EQ(c.totals->params, conv1_w + mid_w + fc_w);
  EXPECT_EQ(c.totals->bitops, (conv1_macs + fc_macs) * 64 + mid_macs * 3 * 2);
  EXPECT_EQ(c.totals->weight_bits, (conv1_w + fc_w) * 8 + mid_w * 3);
  const quant::BitTotals t = bit_config_totals(c, *model, kCifar);
  EXPECT_EQ(t.bitops, c.totals->bitops);
  EXPECT_EQ(t.weight_bits, c.totals->weight_bits);

  // Power-of-two weights count their code width (4 bits -> 8-bit codes); a file's stale MACs are
  // replaced by the model's.
  BitConfig pot = uniform_bit_config(*model, kCifar, "resnet20", UniformBits{4, 4, QuantizerKind::pot, QuantizerKind::lsq});
  pot.layers[3].macs = 1;
  EXPECT_EQ(bit_config_totals(pot, *model, kCifar).weight_bits, (conv1_w + fc_w) * 8 + mid_w * 8);
  EXPECT_EQ(bit_config_totals(pot, *model, kCifar).bitops, (conv1_macs + fc_macs) * 64 + mid_macs * 16);
}

TEST(QatConfig, ValidationNamesTheEntryAndLeavesTheModelUnchanged) {
  auto model = resnet20();
  const BitConfig good = uniform_bit_config(*model, kCifar, "resnet20", UniformBits{4, 4});

  BitConfig unknown = good;
  unknown.layers[4].name = "layer9.0.conv1";
  std::string m = error_of([&] { apply_bit_config(*model, kCifar, unknown); });
  EXPECT_TRUE(contains(m, "\"layer9.0.conv1\"")) << m;
  EXPECT_TRUE(contains(m, "not a layer of the model")) << m;

  BitConfig missing = good;
  missing.layers.erase(missing.layers.begin() + 7);
  m = error_of([&] { apply_bit_config(*model, kCifar, missing); });
  EXPECT_TRUE(contains(m, "no entry for the model's layer")) << m;
  EXPECT_TRUE(contains(m, good.layers[7].name)) << m;

  BitConfig bad_bits = good;
  bad_bits.layers[3].w_bits = 9;
  m = error_of([&] { apply_bit_config(*model, kCifar, bad_bits); });
  EXPECT_TRUE(contains(m, "layers[3] \"" + good.layers[3].name + "\"")) << m;
  EXPECT_TRUE(contains(m, "w_bits = 9")) << m;

  BitConfig zero_bits = good;
  zero_bits.layers[2].a_bits = 0;
  m = error_of([&] { apply_bit_config(*model, kCifar, zero_bits); });
  EXPECT_TRUE(contains(m, "layers[2]")) << m;
  EXPECT_TRUE(contains(m, "a_bits = 0")) << m;

  BitConfig wrong_role = good;
  wrong_role.layers[5].w_quant = QuantizerKind::pact;
  m = error_of([&] { apply_bit_config(*model, kCifar, wrong_role); });
  EXPECT_TRUE(contains(m, "layers[5]")) << m;
  EXPECT_TRUE(contains(m, "pact")) << m;

  // PACT clips at 0: it cannot quantize the normalized image the first layer reads.
  BitConfig pact_first = good;
  pact_first.layers[0].a_quant = QuantizerKind::pact;
  m = error_of([&] { apply_bit_config(*model, kCifar, pact_first); });
  EXPECT_TRUE(contains(m, "layers[0] \"conv1\"")) << m;
  EXPECT_TRUE(contains(m, "signed")) << m;
  // ... which is allowed for a model whose input is not signed.
  QuantizationOptions unsigned_input;
  unsigned_input.signed_first_input = false;
  EXPECT_NO_THROW(validate_bit_config(pact_first, *model, kCifar, unsigned_input));

  BitConfig reordered = good;
  std::swap(reordered.layers[3], reordered.layers[4]);
  m = error_of([&] { apply_bit_config(*model, kCifar, reordered); });
  EXPECT_TRUE(contains(m, "model's order")) << m;

  // A file with an unknown quantizer kind is refused when read, naming the entry.
  std::string json = good.to_json();
  const std::size_t at = json.find("\"a_quant\": \"lsq\"", json.find("layer1.0.conv2"));
  ASSERT_NE(at, std::string::npos);
  json.replace(at, 16, "\"a_quant\": \"lsqq\"");
  m = error_of([&] { BitConfig::parse(json, "bits.json"); });
  EXPECT_TRUE(contains(m, "bits.json")) << m;
  EXPECT_TRUE(contains(m, "layer1.0.conv2")) << m;
  EXPECT_TRUE(contains(m, "lsqq")) << m;

  // None of the failures attached anything.
  EXPECT_TRUE(transform_entry_names(*model).empty());
  for (const LayerQuantizers& l : attached_quantizers(*model, kCifar)) {
    EXPECT_EQ(l.weight, nullptr);
    EXPECT_EQ(l.input, nullptr);
  }
}

TEST(QatConfig, ReadBackRemoveAndReplace) {
  auto model = resnet20();
  BitConfig c = uniform_bit_config(*model, kCifar, "resnet20", UniformBits{4, 4});
  c.layers[2].w_bits = 2;
  c.layers[2].w_quant = QuantizerKind::sawb;
  c.layers[2].w_granularity = Granularity::per_tensor;
  c.layers[6].a_bits = 3;
  c.layers[6].a_quant = QuantizerKind::pact;
  c.layers[9].a_bits = quant::kFloatBits;
  c.layers[9].a_quant = QuantizerKind::float_bypass;
  apply_bit_config(*model, kCifar, c);
  const BitConfig back = attached_bit_config(*model, kCifar, "resnet20", c.policy);
  ASSERT_EQ(back.layers.size(), c.layers.size());
  for (std::size_t i = 0; i < c.layers.size(); ++i) {
    const quant::LayerBits& a = c.layers[i];
    const quant::LayerBits& b = back.layers[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.w_bits, b.w_bits) << a.name;
    EXPECT_EQ(a.a_bits, b.a_bits) << a.name;
    EXPECT_EQ(a.w_quant, b.w_quant) << a.name;
    EXPECT_EQ(a.a_quant, b.a_quant) << a.name;
    EXPECT_EQ(a.w_granularity, b.w_granularity) << a.name;
    EXPECT_EQ(a.macs, b.macs) << a.name;
  }
  EXPECT_EQ(back.totals->bitops, bit_config_totals(c, *model, kCifar).bitops);
  EXPECT_NO_THROW(back.validate());

  // Applying again replaces what is attached.
  apply_bit_config(*model, kCifar, uniform_bit_config(*model, kCifar, "resnet20", UniformBits{8, 8}));
  EXPECT_EQ(attached_quantizers(*model, kCifar)[2].weight->spec().bits, 8);
  EXPECT_EQ(transform_entry_names(*model).size(), 80u);
  remove_quantizers(*model);
  EXPECT_TRUE(transform_entry_names(*model).empty());
  const BitConfig bare = attached_bit_config(*model, kCifar, "resnet20");
  for (const quant::LayerBits& l : bare.layers) EXPECT_EQ(l.w_quant, QuantizerKind::float_bypass);
}

TEST(QatConfig, OptionBShortcutsAndVggAreQuantizable) {
  ModelSpec spec;
  spec.arch = "resnet20";
  spec.shortcut = ShortcutOption::B;
  auto model = make_model(spec);
  const BitConfig c = uniform_bit_config(*model, kCifar, "resnet20", UniformBits{4, 4});
  EXPECT_EQ(c.layers.size(), 22u);  // two projection convolutions
  EXPECT_NE(c.find("layer2.0.shortcut.0"), nullptr);
  apply_bit_config(*model, kCifar, c);
  EXPECT_NE(attached_quantizers(*model, kCifar).size(), 0u);

  spec.arch = "vgg-small";
  spec.width = 8;
  auto vgg = make_model(spec);
  const BitConfig v = uniform_bit_config(*vgg, kCifar, "vgg-small", UniformBits{2, 2});
  apply_bit_config(*vgg, kCifar, v);
  EXPECT_EQ(attached_bit_config(*vgg, kCifar, "vgg-small", v.policy).layers.size(), v.layers.size());
}

TEST(QatConfig, QuantSchemeNames) {
  EXPECT_EQ(parse_quant_scheme("lsq").w_quant, QuantizerKind::lsq);
  EXPECT_EQ(parse_quant_scheme("pact").w_quant, QuantizerKind::dorefa);
  EXPECT_EQ(parse_quant_scheme("pact").a_quant, QuantizerKind::pact);
  EXPECT_EQ(parse_quant_scheme("sawb").w_quant, QuantizerKind::sawb);
  EXPECT_EQ(parse_quant_scheme("sawb").a_quant, QuantizerKind::pact);
  EXPECT_EQ(parse_quant_scheme("binary").a_quant, QuantizerKind::lsq);
  for (const std::string& name : quant_scheme_names()) EXPECT_NO_THROW(parse_quant_scheme(name)) << name;
  const QuantScheme pair = parse_quant_scheme("ternary/uniform");
  EXPECT_EQ(pair.w_quant, QuantizerKind::ternary);
  EXPECT_EQ(pair.a_quant, QuantizerKind::uniform);
  std::string m = error_of([] { parse_quant_scheme("lsqq"); });
  EXPECT_TRUE(contains(m, "'lsqq'")) << m;
  EXPECT_TRUE(contains(m, "lsq, pact")) << m;
  m = error_of([] { parse_quant_scheme("pact/lsq"); });  // PACT does not quantize weights
  EXPECT_TRUE(contains(m, "pact")) << m;
  EXPECT_THROW(parse_quant_scheme("lsq/sawb"), ArgumentError);
  EXPECT_THROW(parse_quant_scheme("lsq/binary"), ArgumentError);
  EXPECT_THROW(parse_quant_scheme("float/lsq"), ArgumentError);
  EXPECT_THROW(parse_quant_scheme(""), ArgumentError);
}

}  // namespace
}  // namespace bitmix::nn
