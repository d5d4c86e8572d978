#pragma once
// The float operations of the runtime (residual additions, pooling, input preparation). Their
// arithmetic is written to match bitmix::nn's evaluation forward operation for operation, so the
// integer model and the fake-quant model compute the same floats from the same inputs.

#include <vector>

#include "bitmix/core/tensor.hpp"
#include "bitmix/runtime/model.hpp"

namespace bitmix::runtime::detail {

// out = (x - mean[c]) / stddev[c] when mean is given (c = channel of out's NCHW layout), then,
// when `clamp`, limited to [lo, hi] with NaN going to lo. `out` has the element count of x and
// the NCHW shape to read channels from.
void prepare_quantize_input(const Tensor& x, const std::vector<float>* mean, const std::vector<float>* stddev,
                            bool clamp, float lo, float hi, Tensor& out);

// out = relu?(branch + shortcut(x)) as in AddParams; `out` may be `branch` itself.
void residual_add(const Tensor& branch, const Tensor& shortcut, const AddParams& params, Tensor& out);

// [N, C, H, W] -> [N, C, 1, 1]: a sequential float sum per plane times 1 / (H * W).
void global_avg_pool(const Tensor& x, Tensor& out);

// Max pooling with -infinity padding.
void max_pool(const Tensor& x, const PoolParams& params, Tensor& out);

}  // namespace bitmix::runtime::detail
