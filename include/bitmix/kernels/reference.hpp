#pragma once
// The plain integer reference of every kernel: loops over integer codes, no bit tricks. It is
// the truth the optimized paths are tested against, and it is slow.

#include <cstdint>
#include <vector>

#include "bitmix/kernels/conv.hpp"

namespace bitmix::kernels::reference {

// acc[n][oc][oh][ow] = sum over (c, kh, kw) of w * (code - z), padding taps reading code z.
// Same checks as kernels::conv2d.
std::vector<int32_t> conv2d_accumulators(const PackedActivations& input, const PackedWeights& weights,
                                         const Conv2dParams& params);
void conv2d(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
            const Epilogue& epilogue, Tensor& out);
void conv2d(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
            const Epilogue& epilogue, PackedActivations& out);
// Element by element with quantize_code() and set_code().
PackedActivations quantize_pack(const Tensor& x, const ActivationQuant& quant, int border = 0);

}  // namespace bitmix::kernels::reference
