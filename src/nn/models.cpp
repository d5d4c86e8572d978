#include "bitmix/nn/models.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "core/strict_json.hpp"

namespace bitmix::nn {

ShortcutOption parse_shortcut(std::string_view text) {
  if (text == "A" || text == "a") return ShortcutOption::A;
  if (text == "B" || text == "b") return ShortcutOption::B;
  throw ArgumentError(fmt::format("shortcut '{}': expected A (identity, zero-padded channels) or B (1x1 projection)",
                                  text));
}

std::string_view shortcut_name(ShortcutOption option) { return option == ShortcutOption::A ? "A" : "B"; }

std::string model_spec_to_json(const ModelSpec& spec) {
  const nlohmann::json j = {{"arch", spec.arch},
                            {"in_channels", spec.in_channels},
                            {"image_height", spec.image_height},
                            {"image_width", spec.image_width},
                            {"num_classes", spec.num_classes},
                            {"shortcut", std::string(shortcut_name(spec.shortcut))},
                            {"width", spec.width},
                            {"zero_init_residual", spec.zero_init_residual},
                            {"seed", spec.seed}};
  nlohmann::json out = j;
  if (spec.graph) out["graph"] = nlohmann::json::parse(graph_spec_to_json(*spec.graph));
  return out.dump();
}

ModelSpec model_spec_from_json(std::string_view text) {
  const nlohmann::json j = bitmix::detail::parse_json_strict(text, "model spec");
  if (!j.is_object()) throw FormatError("model spec: expected a JSON object");
  // Every key is known and every value has its exact JSON type: a spec is rebuilt into a model,
  // so 0.5 channels or a misspelled "widht" must not pass as something else.
  static constexpr std::string_view kKeys[] = {"arch",   "in_channels", "image_height",       "image_width", "num_classes",
                                               "shortcut", "width",     "zero_init_residual", "seed",
                                               "graph"};
  for (const auto& [key, value] : j.items())
    if (std::find(std::begin(kKeys), std::end(kKeys), key) == std::end(kKeys))
      throw FormatError(fmt::format("model spec: unknown field '{}' (expected {})", key, fmt::join(kKeys, ", ")));
  auto field = [&](const char* key) -> const nlohmann::json& {
    if (!j.contains(key)) throw FormatError(fmt::format("model spec: missing field '{}'", key));
    return j.at(key);
  };
  auto integer = [&](const char* key, int64_t lo, int64_t hi) {
    const nlohmann::json& v = field(key);
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) ||
        v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      throw FormatError(fmt::format("model spec: field '{}' = {}: expected an integer from {} to {}", key, v.dump(), lo, hi));
    return v.get<int64_t>();
  };
  auto string = [&](const char* key) {
    const nlohmann::json& v = field(key);
    if (!v.is_string()) throw FormatError(fmt::format("model spec: field '{}' = {}: expected a string", key, v.dump()));
    return v.get<std::string>();
  };
  ModelSpec spec;
  constexpr int64_t kMaxExtent = int64_t{1} << 16;
  spec.arch = string("arch");
  spec.in_channels = integer("in_channels", 1, kMaxExtent);
  spec.image_height = integer("image_height", 1, kMaxExtent);
  spec.image_width = integer("image_width", 1, kMaxExtent);
  spec.num_classes = integer("num_classes", 1, int64_t{1} << 24);
  try {
    if (j.contains("shortcut")) spec.shortcut = parse_shortcut(string("shortcut"));
  } catch (const ArgumentError& e) {
    throw FormatError(fmt::format("model spec: {}", e.what()));
  }
  if (j.contains("width")) spec.width = integer("width", 0, kMaxExtent);
  if (j.contains("zero_init_residual")) {
    if (!j.at("zero_init_residual").is_boolean())
      throw FormatError(fmt::format("model spec: field 'zero_init_residual' = {}: expected true or false",
                                    j.at("zero_init_residual").dump()));
    spec.zero_init_residual = j.at("zero_init_residual").get<bool>();
  }
  if (j.contains("seed")) {
    const nlohmann::json& v = j.at("seed");
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
      throw FormatError(fmt::format("model spec: field 'seed' = {}: expected a non-negative integer", v.dump()));
    spec.seed = v.get<uint64_t>();
  }
  if (j.contains("graph")) {
    if (!j.at("graph").is_object())
      throw FormatError(fmt::format("model spec: field 'graph' = {}: expected a graph object", j.at("graph").dump()));
    try {
      spec.graph = graph_spec_from_json(j.at("graph").dump());
    } catch (const FormatError& e) {
      throw FormatError(fmt::format("model spec: field 'graph': {}", e.what()));
    }
  }
  if (spec.graph.has_value() != (spec.arch == "graph"))
    throw FormatError(fmt::format("model spec: arch '{}' {} a 'graph' field", spec.arch,
                                  spec.graph ? "with" : "without"));
  return spec;
}

// ---------------------------------------------------------------------------------------------
BasicBlock::BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride, ShortcutOption shortcut, Rng& rng)
    : Module("BasicBlock"), in_channels_(in_channels), out_channels_(out_channels), stride_(stride) {
  conv1_ = &add_module("conv1", std::make_unique<Conv2d>(Conv2dOptions::square(in_channels, out_channels, 3, stride, 1), rng));
  bn1_ = &add_module("bn1", std::make_unique<BatchNorm2d>(out_channels, /*fused_relu=*/true));
  conv2_ = &add_module("conv2", std::make_unique<Conv2d>(Conv2dOptions::square(out_channels, out_channels, 3, 1, 1), rng));
  bn2_ = &add_module("bn2", std::make_unique<BatchNorm2d>(out_channels, /*fused_relu=*/true));
  if (stride == 1 && in_channels == out_channels) {
    shortcut_ = Shortcut::identity;
  } else if (shortcut == ShortcutOption::A) {
    if (out_channels < in_channels)
      throw ArgumentError(fmt::format("BasicBlock: option-A shortcut cannot reduce channels ({} -> {})", in_channels,
                                      out_channels));
    shortcut_ = Shortcut::subsample_pad;
  } else {
    shortcut_ = Shortcut::projection;
    auto seq = std::make_unique<Sequential>();
    projection_conv_ = &seq->append("0", std::make_unique<Conv2d>(Conv2dOptions::square(in_channels, out_channels, 1, stride, 0), rng));
    projection_bn_ = &seq->append("1", std::make_unique<BatchNorm2d>(out_channels));
    projection_ = &add_module("shortcut", std::move(seq));
  }
}

const Tensor& BasicBlock::forward(const Tensor& input) {
  input_ = &input;
  const Tensor& a = bn1_->forward(conv1_->forward(input));
  const Tensor& c = conv2_->forward(a);
  const Tensor* residual = &input;
  if (shortcut_ == Shortcut::projection) {
    residual = &projection_->forward(input);
  } else if (shortcut_ == Shortcut::subsample_pad) {
    const int64_t n = input.dim(0), cin = input.dim(1), h = input.dim(2), w = input.dim(3);
    const int64_t oh = c.dim(2), ow = c.dim(3), lo = (out_channels_ - cin) / 2;
    ensure_shape(shortcut_out_, {n, out_channels_, oh, ow});
    parallel_for(n * out_channels_, 8, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t img = q / out_channels_, ch = q % out_channels_ - lo;
        float* dst = shortcut_out_.data() + q * oh * ow;
        if (ch < 0 || ch >= cin) {
          std::fill(dst, dst + oh * ow, 0.0f);
          continue;
        }
        const float* src = input.data() + (img * cin + ch) * h * w;
        for (int64_t y = 0; y < oh; ++y)
          for (int64_t x = 0; x < ow; ++x) dst[y * ow + x] = src[y * stride_ * w + x * stride_];
      }
    });
    residual = &shortcut_out_;
  }
  return bn2_->forward_residual(c, *residual);
}

const Tensor& BasicBlock::backward(const Tensor& grad_output) {
  if (input_ == nullptr) throw Error(fmt::format("{}: backward called before forward", display_name()));
  const Tensor& gc = bn2_->backward(grad_output);
  const Tensor& g_shortcut = bn2_->residual_grad();
  const Tensor* g_projection = nullptr;
  if (shortcut_ == Shortcut::projection) g_projection = &projection_->backward(g_shortcut);
  const Tensor& gx = conv1_->backward(bn1_->backward(conv2_->backward(gc)));
  if (!input_grad_needed()) return grad_input_;
  ensure_shape(grad_input_, input_->shape());
  const int64_t n = input_->dim(0), cin = input_->dim(1), h = input_->dim(2), w = input_->dim(3);
  if (shortcut_ == Shortcut::subsample_pad) {
    const int64_t oh = g_shortcut.dim(2), ow = g_shortcut.dim(3), lo = (out_channels_ - cin) / 2;
    parallel_for(n * cin, 8, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t img = q / cin, ch = q % cin;
        float* dst = grad_input_.data() + q * h * w;
        std::copy(gx.data() + q * h * w, gx.data() + (q + 1) * h * w, dst);
        const float* src = g_shortcut.data() + (img * out_channels_ + ch + lo) * oh * ow;
        for (int64_t y = 0; y < oh; ++y)
          for (int64_t x = 0; x < ow; ++x) dst[y * stride_ * w + x * stride_] += src[y * ow + x];
      }
    });
  } else {
    const Tensor& other = shortcut_ == Shortcut::projection ? *g_projection : g_shortcut;
    const float* a = gx.data();
    const float* b = other.data();
    float* out = grad_input_.data();
    parallel_for(grad_input_.numel(), 16384, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) out[i] = a[i] + b[i];
    });
  }
  return grad_input_;
}

Shape BasicBlock::output_shape(const Shape& input_shape, std::vector<LayerInfo>* layers) const {
  Shape s = conv1_->output_shape(input_shape, layers);
  s = bn1_->output_shape(s, layers);
  s = conv2_->output_shape(s, layers);
  s = bn2_->output_shape(s, layers);
  if (shortcut_ == Shortcut::projection) {
    const Shape p = projection_->output_shape(input_shape, layers);
    if (p != s)
      throw ShapeError(fmt::format("{}: shortcut gives {} but the residual branch gives {}", display_name(),
                                   shape_to_string(p), shape_to_string(s)));
  } else if (shortcut_ == Shortcut::subsample_pad) {
    const int64_t sh = (input_shape[2] + stride_ - 1) / stride_, sw = (input_shape[3] + stride_ - 1) / stride_;
    if (sh != s[2] || sw != s[3])
      throw ShapeError(fmt::format("{}: subsampled shortcut is {}x{} but the residual branch is {}x{}", display_name(),
                                   sh, sw, s[2], s[3]));
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
ResNet::ResNet(int64_t depth, int64_t in_channels, int64_t num_classes, int64_t width, ShortcutOption shortcut,
               bool zero_init_residual, Rng& rng)
    : Sequential("ResNet"), depth_(depth), shortcut_option_(shortcut) {
  if (depth < 8 || (depth - 2) % 6 != 0)
    throw ArgumentError(fmt::format("ResNet: depth {} must be 6n+2 (20, 32, 44, 56, 110)", depth));
  const int64_t blocks = (depth - 2) / 6;
  stem_conv_ = &append("conv1", std::make_unique<Conv2d>(Conv2dOptions::square(in_channels, width, 3, 1, 1), rng));
  stem_bn_ = &append("bn1", std::make_unique<BatchNorm2d>(width, /*fused_relu=*/true));
  int64_t channels = width;
  for (int stage = 0; stage < 3; ++stage) {
    const int64_t out = width << stage;
    auto seq = std::make_unique<Sequential>();
    std::vector<BasicBlock*> stage_blocks;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t stride = (stage > 0 && b == 0) ? 2 : 1;
      BasicBlock& block = seq->append(std::make_unique<BasicBlock>(channels, out, stride, shortcut, rng));
      if (zero_init_residual) block.bn2().weight().value.zero();
      stage_blocks.push_back(&block);
      channels = out;
    }
    append(fmt::format("layer{}", stage + 1), std::move(seq));
    stages_.push_back(std::move(stage_blocks));
  }
  append("avgpool", std::make_unique<GlobalAvgPool2d>());
  fc_ = &append("fc", std::make_unique<Linear>(channels, num_classes, true, rng));
}

// ---------------------------------------------------------------------------------------------
namespace {

std::unique_ptr<Module> make_vgg_small(const ModelSpec& spec, int64_t width, Rng& rng) {
  auto model = std::make_unique<Sequential>("VGG");
  int64_t channels = spec.in_channels, h = spec.image_height, w = spec.image_width;
  int conv_index = 0, pool_index = 0;
  for (int stage = 0; stage < 3; ++stage) {
    const int64_t out = width << stage;
    for (int rep = 0; rep < 2; ++rep) {
      ++conv_index;
      model->append(fmt::format("conv{}", conv_index),
                    std::make_unique<Conv2d>(Conv2dOptions::square(channels, out, 3, 1, 1), rng));
      model->append(fmt::format("bn{}", conv_index), std::make_unique<BatchNorm2d>(out, /*fused_relu=*/true));
      channels = out;
    }
    if (h < 2 || w < 2)
      throw ArgumentError(fmt::format("vgg-small: image {}x{} too small for three 2x2 poolings", spec.image_height,
                                      spec.image_width));
    model->append(fmt::format("pool{}", ++pool_index), std::make_unique<MaxPool2d>(Pool2dOptions::square(2, 2)));
    h /= 2;
    w /= 2;
  }
  model->append("flatten", std::make_unique<Flatten>());
  model->append("fc", std::make_unique<Linear>(channels * h * w, spec.num_classes, true, rng));
  return model;
}

}  // namespace

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names = {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                                                 "vgg-small"};
  return names;
}

std::unique_ptr<Module> make_model(const ModelSpec& spec) {
  if (spec.in_channels <= 0 || spec.image_height <= 0 || spec.image_width <= 0)
    throw ArgumentError(fmt::format("model {}: input {}x{}x{} must be positive", spec.arch, spec.in_channels,
                                    spec.image_height, spec.image_width));
  if (spec.num_classes < 2)
    throw ArgumentError(fmt::format("model {}: num_classes = {} must be at least 2", spec.arch, spec.num_classes));
  if (spec.width < 0) throw ArgumentError(fmt::format("model {}: width = {} must be >= 0", spec.arch, spec.width));
  Rng rng(spec.seed);
  std::unique_ptr<Module> model;
  if (spec.arch.rfind("resnet", 0) == 0) {
    int64_t depth = 0;
    const std::string digits = spec.arch.substr(6);
    if (!digits.empty() && std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) &&
        digits.size() < 5)
      depth = std::stoll(digits);
    if (depth < 8 || (depth - 2) % 6 != 0)
      throw ArgumentError(fmt::format("model '{}': a CIFAR ResNet depth is 6n+2 (resnet20, resnet32, resnet44, "
                                      "resnet56, resnet110)",
                                      spec.arch));
    model = std::make_unique<ResNet>(depth, spec.in_channels, spec.num_classes, spec.width > 0 ? spec.width : 16,
                                     spec.shortcut, spec.zero_init_residual, rng);
  } else if (spec.arch == "graph") {
    if (!spec.graph) throw ArgumentError("model 'graph': the spec holds no graph");
    model = std::make_unique<GraphModel>(*spec.graph, Shape{spec.in_channels, spec.image_height, spec.image_width}, rng);
    const Shape out = model->output_shape({1, spec.in_channels, spec.image_height, spec.image_width});
    if (out.size() != 2 || out[1] != spec.num_classes)
      throw ArgumentError(fmt::format("model 'graph': output {} for {} classes: expected [N, {}] logits",
                                      shape_to_string(out), spec.num_classes, spec.num_classes));
  } else if (spec.arch == "vgg-small") {
    model = make_vgg_small(spec, spec.width > 0 ? spec.width : 64, rng);
  } else {
    throw ArgumentError(fmt::format("model '{}': expected one of {}", spec.arch, fmt::join(model_names(), ", ")));
  }
  // Validate the whole graph for the input once, naming the layer that does not fit.
  model->output_shape({1, spec.in_channels, spec.image_height, spec.image_width});
  return model;
}

}  // namespace bitmix::nn
