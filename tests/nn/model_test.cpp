// Modules and models: hierarchical names, the quantizable-layer walk (shapes, MACs, parameter
// counts computed here from the paper's architecture), shape errors naming the layer, the
// weight/input transform hooks, and whole-model gradients against finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/models.hpp"
#include "nn/gradcheck.hpp"

namespace bitmix::nn {
namespace {

using testing::expect_gradient;
using testing::GradCheckOptions;
using testing::projected;
using testing::random_tensor;

std::vector<std::string> parameter_names(Module& m) {
  std::vector<std::string> names;
  for (const NamedParameter& p : m.named_parameters()) names.push_back(p.name);
  return names;
}

bool contains(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

TEST(Models, ResNet20NamesFollowTheUsualConvention) {
  ModelSpec spec;
  auto model = make_model(spec);
  const std::vector<std::string> names = parameter_names(*model);
  for (const char* expected : {"conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.conv1.weight", "layer1.2.bn2.bias",
                               "layer2.0.conv1.weight", "layer3.2.conv2.weight", "fc.weight", "fc.bias"})
    EXPECT_TRUE(contains(names, expected)) << expected;
  EXPECT_FALSE(contains(names, "layer2.0.shortcut.0.weight"));  // option A has no projection
  std::vector<std::string> buffers;
  for (const NamedBuffer& b : model->named_buffers()) buffers.push_back(b.name);
  EXPECT_TRUE(contains(buffers, "layer3.1.bn2.running_var"));
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), names.size()) << "names must be unique";
  EXPECT_EQ(model->find("layer2.1.conv2")->kind(), "Conv2d");
  EXPECT_EQ(model->find("layer2.1.conv2")->name(), "layer2.1.conv2");
  EXPECT_EQ(model->find("layer9"), nullptr);

  spec.shortcut = ShortcutOption::B;
  auto model_b = make_model(spec);
  const std::vector<std::string> names_b = parameter_names(*model_b);
  EXPECT_TRUE(contains(names_b, "layer2.0.shortcut.0.weight"));
  EXPECT_TRUE(contains(names_b, "layer3.0.shortcut.1.bias"));
  EXPECT_FALSE(contains(names_b, "layer1.0.shortcut.0.weight"));
}

// Layer list, MACs and parameters of ResNet-20 on CIFAR (3x32x32, 10 classes), derived here
// from He et al.: a 3x3 stem with 16 channels, three stages of 3 blocks at 16/32/64 channels on
// 32/16/8 pixels, a 64 -> 10 classifier.
TEST(Models, ResNet20QuantizableLayersShapesAndCosts) {
  auto model = make_model(ModelSpec{});
  const std::vector<LayerInfo> layers = model->quantizable_layers({3, 32, 32});
  ASSERT_EQ(layers.size(), 20u);  // 19 convolutions + fc
  EXPECT_EQ(layers.front().name, "conv1");
  EXPECT_EQ(layers[1].name, "layer1.0.conv1");
  EXPECT_EQ(layers[2].name, "layer1.0.conv2");
  EXPECT_EQ(layers[7].name, "layer2.0.conv1");
  EXPECT_EQ(layers.back().name, "fc");
  EXPECT_EQ(layers.back().kind, "Linear");
  EXPECT_EQ(layers[7].input_shape, (Shape{16, 32, 32}));
  EXPECT_EQ(layers[7].output_shape, (Shape{32, 16, 16}));
  int64_t macs = 0, params = 0;
  for (const LayerInfo& l : layers) {
    macs += l.macs_per_image;
    params += l.parameter_count;
    EXPECT_EQ((l.conv != nullptr) + (l.linear != nullptr), 1) << l.name;
  }
  const int64_t conv3x3 = 9;
  const int64_t want_macs = 3 * 16 * conv3x3 * 32 * 32                                   // stem
                            + 6 * 16 * 16 * conv3x3 * 32 * 32                            // stage 1
                            + (16 * 32 + 5 * 32 * 32) * conv3x3 * 16 * 16                // stage 2
                            + (32 * 64 + 5 * 64 * 64) * conv3x3 * 8 * 8 + 64 * 10;       // stage 3, fc
  EXPECT_EQ(macs, want_macs);
  EXPECT_EQ(macs, 40551040);
  const int64_t want_params = (3 * 16 + 6 * 16 * 16 + 16 * 32 + 5 * 32 * 32 + 32 * 64 + 5 * 64 * 64) * conv3x3 + 64 * 10 + 10;
  EXPECT_EQ(params, want_params);
  // BatchNorm adds gamma and beta per channel of each of the 19 convolutions.
  EXPECT_EQ(model->parameter_count(), want_params + 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64));
}

TEST(Models, FashionMnistShapesAndOtherDepths) {
  ModelSpec spec;
  spec.in_channels = 1;
  spec.image_height = spec.image_width = 28;
  for (const char* arch : {"resnet20", "resnet32", "resnet44", "resnet56", "vgg-small"}) {
    spec.arch = arch;
    auto model = make_model(spec);
    EXPECT_EQ(model->output_shape({5, 1, 28, 28}), (Shape{5, 10})) << arch;
  }
  spec.arch = "resnet32";
  EXPECT_EQ(make_model(spec)->quantizable_layers({1, 28, 28}).size(), 32u);
  spec.arch = "resnet21";
  EXPECT_THROW(make_model(spec), ArgumentError);
  spec.arch = "lenet";
  EXPECT_THROW(make_model(spec), ArgumentError);
}

TEST(Models, ShapeMismatchNamesTheLayer) {
  auto model = make_model(ModelSpec{});  // built for 3 channels
  try {
    model->output_shape({2, 1, 32, 32});
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("conv1"), std::string::npos) << e.what();
  }
  Tensor wrong({2, 1, 32, 32});
  EXPECT_THROW(model->forward(wrong), ShapeError);
}

TEST(Models, SpecJsonRoundTripsAndRefusesAnythingElse) {
  ModelSpec spec;
  spec.arch = "resnet20";
  spec.in_channels = 3;
  spec.image_height = 32;
  spec.image_width = 30;
  spec.num_classes = 10;
  spec.shortcut = ShortcutOption::B;
  spec.width = 24;
  spec.zero_init_residual = true;
  spec.seed = 7;
  const std::string text = model_spec_to_json(spec);
  EXPECT_EQ(model_spec_to_json(model_spec_from_json(text)), text);
  auto expect_refused = [&](const std::string& from, const std::string& to, const std::string& fragment) {
    std::string edited = text;
    const auto at = edited.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    edited.replace(at, from.size(), to);
    try {
      model_spec_from_json(edited);
      ADD_FAILURE() << "accepted " << edited;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_refused("\"in_channels\":3", "\"in_channels\":0.5", "field 'in_channels' = 0.5: expected an integer");
  expect_refused("\"in_channels\":3", "\"in_channels\":0", "field 'in_channels' = 0");
  expect_refused("\"num_classes\":10", "\"num_classes\":\"10\"", "field 'num_classes' = \"10\"");
  expect_refused("\"image_width\":30", "\"image_width\":18446744073709551615", "field 'image_width'");
  expect_refused("\"width\":24", "\"widht\":24", "unknown field 'widht'");
  expect_refused("\"zero_init_residual\":true", "\"zero_init_residual\":1", "expected true or false");
  expect_refused("\"seed\":7", "\"seed\":-7", "field 'seed' = -7");
  expect_refused("\"arch\":\"resnet20\"", "\"arch\":20", "field 'arch' = 20: expected a string");
  expect_refused("\"shortcut\":\"B\"", "\"shortcut\":\"C\"", "'C'");
  expect_refused("\"arch\":\"resnet20\",", "", "missing field 'arch'");
}

TEST(Models, TrainEvalPropagatesAndSameSeedSameWeights) {
  ModelSpec spec;
  spec.seed = 42;
  auto a = make_model(spec), b = make_model(spec);
  const auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i)
    for (int64_t k = 0; k < pa[i].parameter->value.numel(); ++k)
      ASSERT_EQ(pa[i].parameter->value[k], pb[i].parameter->value[k]);
  a->eval();
  for (Module* m : a->modules()) EXPECT_FALSE(m->training()) << m->display_name();
  a->train();
  for (Module* m : a->modules()) EXPECT_TRUE(m->training()) << m->display_name();
}

// A learnable scale: y = s * x, with parameter "scale" (the shape of a quantizer's step size).
class ScaleTransform : public TensorTransform {
 public:
  explicit ScaleTransform(float s) : scale_("scale", Tensor({1}, s)) {}
  std::string kind() const override { return "scale"; }
  const Tensor& forward(const Tensor& x) override {
    ensure_shape(out_, x.shape());
    for (int64_t i = 0; i < x.numel(); ++i) out_[i] = scale_.value[0] * x[i];
    return out_;
  }
  const Tensor& backward(const Tensor& x, const Tensor& g) override {
    ensure_shape(grad_, x.shape());
    double ds = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      grad_[i] = scale_.value[0] * g[i];
      ds += double{g[i]} * double{x[i]};
    }
    scale_.grad[0] += static_cast<float>(ds);
    return grad_;
  }
  std::vector<Parameter*> parameters() override { return {&scale_}; }
  Parameter scale_;

 private:
  Tensor out_, grad_;
};

TEST(Transforms, GradientsFlowThroughWeightAndInputTransforms) {
  Rng rng(9);
  Conv2d conv(Conv2dOptions::square(3, 4, 3, 1, 1, 1, true), rng);
  conv.set_weight_transform(std::make_unique<ScaleTransform>(0.7f));
  conv.set_input_transform(std::make_unique<ScaleTransform>(1.3f));
  std::vector<std::string> names;
  for (const NamedParameter& p : conv.named_parameters()) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"weight", "bias", "weight_transform.scale", "input_transform.scale"}));
  Tensor x = random_tensor({2, 3, 5, 5}, rng);
  const Tensor& y = conv.forward(x);
  const Tensor r = random_tensor(y.shape(), rng);
  conv.zero_grad();
  const Tensor gx = conv.backward(r);
  auto loss = [&] { return projected(conv.forward(x), r); };
  auto* wt = static_cast<ScaleTransform*>(conv.weight_transform());
  auto* it = static_cast<ScaleTransform*>(conv.input_transform());
  const Tensor gw = conv.weight().grad, gs_w = wt->scale_.grad, gs_i = it->scale_.grad;
  expect_gradient("conv input through input transform", x, gx, loss);
  expect_gradient("conv weight through weight transform", conv.weight().value, gw, loss);
  expect_gradient("weight transform scale", wt->scale_.value, gs_w, loss);
  expect_gradient("input transform scale", it->scale_.value, gs_i, loss);
  // The effective weight is the transformed one.
  conv.forward(x);
  EXPECT_FLOAT_EQ(conv.effective_weight()[3], 0.7f * conv.weight().value[3]);

  Linear fc(6, 3, true, rng);
  fc.set_weight_transform(std::make_unique<ScaleTransform>(-0.5f));
  Tensor xf = random_tensor({4, 6}, rng);
  const Tensor rf = random_tensor({4, 3}, rng);
  fc.forward(xf);
  fc.zero_grad();
  const Tensor gxf = fc.backward(rf);
  const Tensor gwf = fc.weight().grad;
  auto lf = [&] { return projected(fc.forward(xf), rf); };
  expect_gradient("linear input", xf, gxf, lf);
  expect_gradient("linear weight through transform", fc.weight().value, gwf, lf);
}

// The whole model: every parameter gradient of a small ResNet (depth 8, width 4; BatchNorm in
// training mode, option A and B shortcuts, fused ReLUs) against finite differences of the
// cross-entropy loss.
TEST(Models, SmallResNetGradientsMatchFiniteDifferences) {
  for (ShortcutOption option : {ShortcutOption::A, ShortcutOption::B}) {
    ModelSpec spec;
    spec.arch = "resnet8";
    spec.width = 4;
    spec.image_height = spec.image_width = 8;
    spec.num_classes = 5;
    spec.shortcut = option;
    spec.seed = 3;
    auto model = make_model(spec);
    Rng rng(4);
    Tensor x = random_tensor({4, 3, 8, 8}, rng);
    const std::vector<int> labels = {0, 3, 4, 1};
    Tensor grad;
    model->zero_grad();
    softmax_cross_entropy(model->forward(x), labels, 0.1f, &grad);
    const Tensor& gx = model->backward(grad);
    const Tensor input_grad = gx;
    auto loss = [&] { return softmax_cross_entropy(model->forward(x), labels, 0.1f, nullptr).loss; };
    // A small step: with only 16 values per channel in the last stage, batch-normalized
    // activations sit close to the ReLU kinks, and a larger step crosses them (the
    // difference quotient then converges to the analytic value only as the step shrinks).
    GradCheckOptions fd;
    fd.eps = 3e-4f;
    fd.rtol = 3e-2;
    fd.atol = 3e-3;
    fd.max_elements = 12;
    for (const NamedParameter& p : model->named_parameters()) {
      const Tensor analytic = p.parameter->grad;
      expect_gradient(std::string(shortcut_name(option)) + " " + p.name, p.parameter->value, analytic, loss, fd);
    }
    expect_gradient("input", x, input_grad, loss, fd);
  }
}

TEST(Models, VggSmallGradientsMatchFiniteDifferences) {
  ModelSpec spec;
  spec.arch = "vgg-small";
  spec.width = 2;
  spec.in_channels = 1;
  spec.image_height = spec.image_width = 8;
  spec.num_classes = 3;
  auto model = make_model(spec);
  Rng rng(5);
  Tensor x = random_tensor({3, 1, 8, 8}, rng);
  const std::vector<int> labels = {0, 2, 1};
  Tensor grad;
  model->zero_grad();
  softmax_cross_entropy(model->forward(x), labels, 0.0f, &grad);
  model->backward(grad);
  auto loss = [&] { return softmax_cross_entropy(model->forward(x), labels, 0.0f, nullptr).loss; };
  GradCheckOptions fd;
  fd.eps = 3e-4f;
  fd.rtol = 3e-2;
  fd.atol = 3e-3;
  fd.max_elements = 10;
  for (const NamedParameter& p : model->named_parameters()) {
    const Tensor analytic = p.parameter->grad;
    expect_gradient("vgg " + p.name, p.parameter->value, analytic, loss, fd);
  }
}

}  // namespace
}  // namespace bitmix::nn
