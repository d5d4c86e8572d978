#pragma once
// The math of every layer as plain functions of (input, weight, bias, options), separate from
// the modules that own parameters. A quantized convolution (QAT), the searched convolution of
// EBS (a mixed weight and a mixed input) and the deployment compiler call these with a
// substituted weight or input; the modules in layers.hpp call them with their own tensors.
//
// Conventions: tensors are NCHW float32. Forward functions write into an output tensor that is
// reshaped (reallocated only when its shape changes), so a caller that keeps its output tensors
// allocates nothing in steady state. Gradients of inputs are overwritten; gradients of weights
// and biases are accumulated (+=) when `accumulate` is true, overwritten otherwise. Every entry
// point checks shapes and throws ShapeError naming `layer` (e.g. "layer2.0.conv1") and what it
// expected. All of them are parallel over the core thread pool, deterministic for a given
// thread count.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "bitmix/core/tensor.hpp"

namespace bitmix::nn {

// Makes `t` have `shape`, keeping its storage when the element count already matches.
// Contents are unspecified afterwards (zero when newly allocated).
void ensure_shape(Tensor& t, const Shape& shape);

// ---------------------------------------------------------------------------------------------
// 2-D convolution (cross-correlation, as in PyTorch), with stride, zero padding and groups.
struct Conv2dOptions {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t kernel_h = 3, kernel_w = 3;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t groups = 1;
  bool bias = false;

  // A square kernel with equal stride and padding on both axes.
  static Conv2dOptions square(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1,
                              int64_t padding = 0, int64_t groups = 1, bool bias = false);
  Shape weight_shape() const { return {out_channels, in_channels / groups, kernel_h, kernel_w}; }
  // Throws ArgumentError naming `layer` if a field is out of range (channels not divisible by
  // groups, non-positive kernel or stride, negative padding).
  void validate(std::string_view layer) const;
  // [N, Cout, OH, OW] for an input [N, Cin, H, W]; throws ShapeError naming `layer`.
  Shape output_shape(const Shape& input_shape, std::string_view layer) const;
  // Multiply-accumulates per image for an input of height x width.
  int64_t macs_per_image(int64_t height, int64_t width) const;
};

// output = conv(input, weight) + bias. weight [Cout, Cin/groups, KH, KW]; bias [Cout] or nullptr.
void conv2d_forward(const Tensor& input, const Tensor& weight, const Tensor* bias, const Conv2dOptions& options,
                    Tensor& output, std::string_view layer = "conv2d");
// Gradients of conv2d_forward. grad_input, grad_weight, grad_bias may each be nullptr (not
// needed). grad_weight / grad_bias are accumulated into when `accumulate` is true.
void conv2d_backward(const Tensor& input, const Tensor& weight, const Tensor& grad_output, const Conv2dOptions& options,
                     Tensor* grad_input, Tensor* grad_weight, Tensor* grad_bias, bool accumulate = true,
                     std::string_view layer = "conv2d");

// ---------------------------------------------------------------------------------------------
// Fully connected: output[N, out] = input[N, in] * weight[out, in]^T + bias[out]. An input of
// higher rank is read as [N, product of the rest].
void linear_forward(const Tensor& input, const Tensor& weight, const Tensor* bias, Tensor& output,
                    std::string_view layer = "linear");
void linear_backward(const Tensor& input, const Tensor& weight, const Tensor& grad_output, Tensor* grad_input,
                     Tensor* grad_weight, Tensor* grad_bias, bool accumulate = true, std::string_view layer = "linear");

// ---------------------------------------------------------------------------------------------
// Batch normalization over (N, H, W) per channel, optionally fused with a residual addition
// and a ReLU: output = relu?(gamma * (x - mean) / sqrt(var + eps) + beta + residual?).
struct BatchNormOptions {
  float eps = 1e-5f;
  float momentum = 0.1f;  // running = (1 - momentum) * running + momentum * batch statistic
};

// Per-channel statistics of the batch, kept by the training forward for the backward pass.
struct BatchNormSaved {
  Tensor mean;     // [C]
  Tensor inv_std;  // [C], 1 / sqrt(var + eps), var biased (divided by the element count)
};

// Training mode: normalizes with the batch statistics and updates running_mean / running_var
// (the variance is stored unbiased, as PyTorch does). residual: same shape as input, or nullptr.
void batch_norm_train_forward(const Tensor& input, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                              Tensor& running_var, const BatchNormOptions& options, const Tensor* residual, bool relu,
                              Tensor& output, BatchNormSaved& saved, std::string_view layer = "batch_norm");
// Eval mode: normalizes with the running statistics.
void batch_norm_eval_forward(const Tensor& input, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                             const Tensor& running_var, const BatchNormOptions& options, const Tensor* residual,
                             bool relu, Tensor& output, std::string_view layer = "batch_norm");
// Backward of the training forward. `output` is the forward's output (it gives the ReLU mask).
// grad_residual (when the forward had a residual) receives the gradient of the residual input.
// grad_input may be nullptr. grad_gamma / grad_beta are accumulated when `accumulate`.
void batch_norm_backward(const Tensor& input, const Tensor& gamma, const BatchNormSaved& saved, const Tensor& output,
                         const Tensor& grad_output, bool relu, Tensor* grad_input, Tensor* grad_residual,
                         Tensor* grad_gamma, Tensor* grad_beta, bool accumulate = true,
                         std::string_view layer = "batch_norm");
// Backward of the eval forward (a per-channel affine map): used when fine-tuning with frozen
// statistics. Same conventions as batch_norm_backward.
void batch_norm_eval_backward(const Tensor& input, const Tensor& gamma, const Tensor& running_mean,
                              const Tensor& running_var, const BatchNormOptions& options, const Tensor& output,
                              const Tensor& grad_output, bool relu, Tensor* grad_input, Tensor* grad_residual,
                              Tensor* grad_gamma, Tensor* grad_beta, bool accumulate = true,
                              std::string_view layer = "batch_norm");

// ---------------------------------------------------------------------------------------------
// Elementwise.
void relu_forward(const Tensor& input, Tensor& output);
// grad_input = grad_output where output > 0, else 0.
void relu_backward(const Tensor& output, const Tensor& grad_output, Tensor& grad_input);
// output = a + b (same shapes).
void add_forward(const Tensor& a, const Tensor& b, Tensor& output, std::string_view layer = "add");

// ---------------------------------------------------------------------------------------------
// Pooling over H, W per channel.
struct Pool2dOptions {
  int64_t kernel_h = 2, kernel_w = 2;
  int64_t stride_h = 2, stride_w = 2;
  int64_t pad_h = 0, pad_w = 0;
  static Pool2dOptions square(int64_t kernel, int64_t stride, int64_t padding = 0);
  Shape output_shape(const Shape& input_shape, std::string_view layer) const;
};
// Max pooling; padding counts as -infinity. Ties go to the first element in row-major order.
void max_pool2d_forward(const Tensor& input, const Pool2dOptions& options, Tensor& output,
                        std::string_view layer = "max_pool2d");
void max_pool2d_backward(const Tensor& input, const Tensor& output, const Tensor& grad_output,
                         const Pool2dOptions& options, Tensor& grad_input, std::string_view layer = "max_pool2d");
// Average pooling; padded positions count in the divisor (PyTorch's count_include_pad=True).
void avg_pool2d_forward(const Tensor& input, const Pool2dOptions& options, Tensor& output,
                        std::string_view layer = "avg_pool2d");
void avg_pool2d_backward(const Shape& input_shape, const Tensor& grad_output, const Pool2dOptions& options,
                         Tensor& grad_input, std::string_view layer = "avg_pool2d");
// Global average pooling: [N, C, H, W] -> [N, C].
void global_avg_pool_forward(const Tensor& input, Tensor& output, std::string_view layer = "global_avg_pool");
void global_avg_pool_backward(const Shape& input_shape, const Tensor& grad_output, Tensor& grad_input,
                              std::string_view layer = "global_avg_pool");

// ---------------------------------------------------------------------------------------------
// Softmax cross-entropy averaged over the batch, with optional label smoothing: the target is
// (1 - smoothing) on the label plus smoothing / classes on every class.
struct CrossEntropyResult {
  double loss = 0;       // mean over the batch
  int64_t correct = 0;   // argmax == label
};
// logits [N, classes]; labels: N entries in [0, classes). grad_logits (optional) receives
// d(mean loss)/d(logits). Throws ArgumentError naming the bad label.
CrossEntropyResult softmax_cross_entropy(const Tensor& logits, std::span<const int> labels, float label_smoothing,
                                         Tensor* grad_logits);

}  // namespace bitmix::nn
