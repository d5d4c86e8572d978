// The plain integer reference: loops over codes, no bit tricks, no ISA code. Slow on purpose.
#include "bitmix/kernels/reference.hpp"

#include <fmt/format.h>

#include "bitmix/core/error.hpp"
#include "conv_internal.hpp"

namespace bitmix::kernels::reference {

std::vector<int32_t> conv2d_accumulators(const PackedActivations& input, const PackedWeights& weights,
                                         const Conv2dParams& params) {
  const detail::ConvGeometry g =
      detail::check_conv(input, weights, params, Epilogue::identity(weights.spec().out_channels), false,
                         "reference::conv2d");
  const WeightSpec& s = weights.spec();
  const std::vector<uint8_t> codes = input.codes();
  const std::vector<int32_t> w = weights.codes();
  const int32_t z = input.quant().zero_point;
  const int64_t group_in = s.depthwise ? 1 : g.channels;
  const int64_t multiplier = g.out_channels / g.channels;
  std::vector<int32_t> acc(static_cast<std::size_t>(g.batch * g.out_channels * g.out_height * g.out_width));
  std::size_t k = 0;
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t oc = 0; oc < g.out_channels; ++oc)
      for (int64_t oh = 0; oh < g.out_height; ++oh)
        for (int64_t ow = 0; ow < g.out_width; ++ow) {
          int64_t sum = 0;
          for (int64_t icg = 0; icg < group_in; ++icg) {
            const int64_t ic = s.depthwise ? oc / multiplier : icg;
            for (int64_t kh = 0; kh < g.kernel_h; ++kh)
              for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
                const int64_t ih = oh * g.stride_h - g.pad_h + kh;
                const int64_t iw = ow * g.stride_w - g.pad_w + kw;
                const bool inside = ih >= 0 && ih < g.height && iw >= 0 && iw < g.width;
                const int32_t code =
                    inside ? codes[static_cast<std::size_t>(((n * g.channels + ic) * g.height + ih) * g.width + iw)] : z;
                const int32_t weight = w[static_cast<std::size_t>(((oc * group_in + icg) * g.kernel_h + kh) * g.kernel_w + kw)];
                sum += static_cast<int64_t>(weight) * (code - z);
              }
          }
          acc[k++] = static_cast<int32_t>(sum);
        }
  return acc;
}

void conv2d(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
            const Epilogue& epilogue, Tensor& out) {
  const detail::ConvGeometry g = detail::check_conv(input, weights, params, epilogue, false, "reference::conv2d");
  const std::vector<int32_t> acc = conv2d_accumulators(input, weights, params);
  out = Tensor({g.batch, g.out_channels, g.out_height, g.out_width});
  const int64_t plane = g.out_height * g.out_width;
  for (int64_t i = 0; i < out.numel(); ++i) out[i] = epilogue.value(i / plane % g.out_channels, acc[static_cast<std::size_t>(i)]);
}

void conv2d(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
            const Epilogue& epilogue, PackedActivations& out) {
  const detail::ConvGeometry g = detail::check_conv(input, weights, params, epilogue, true, "reference::conv2d");
  const std::vector<int32_t> acc = conv2d_accumulators(input, weights, params);
  out = PackedActivations(g.batch, g.out_channels, g.out_height, g.out_width, epilogue.out_quant(),
                          epilogue.out_border());
  std::size_t k = 0;
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t oc = 0; oc < g.out_channels; ++oc)
      for (int64_t oh = 0; oh < g.out_height; ++oh)
        for (int64_t ow = 0; ow < g.out_width; ++ow) out.set_code(n, oc, oh, ow, epilogue.code(oc, acc[k++]));
}

PackedActivations quantize_pack(const Tensor& x, const ActivationQuant& quant, int border) {
  validate(quant, "reference::quantize_pack");
  if (x.rank() != 4)
    throw ShapeError(fmt::format("reference::quantize_pack: expected an NCHW tensor of rank 4, got shape {}",
                                 shape_to_string(x.shape())));
  const Shape& s = x.shape();
  PackedActivations out(s[0], s[1], s[2], s[3], quant, border);
  int64_t i = 0;
  for (int64_t n = 0; n < s[0]; ++n)
    for (int64_t c = 0; c < s[1]; ++c)
      for (int64_t h = 0; h < s[2]; ++h)
        for (int64_t w = 0; w < s[3]; ++w) out.set_code(n, c, h, w, quantize_code(x[i++], quant));
  return out;
}

}  // namespace bitmix::kernels::reference
