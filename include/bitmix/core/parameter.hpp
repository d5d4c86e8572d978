#pragma once
// Learnable parameters and persistent buffers, shared by every trainable part of bitmix
// (layers in nn, learnable quantizer parameters in quant, bitwidth strengths in search).
//
// Names are local to their owner ("weight", "step"); owners prefix them with their own path
// when collecting, giving stable hierarchical names such as "layer2.0.conv1.weight" or
// "layer2.0.conv1.weight_transform.step". Checkpoints and BitConfig files refer to these names.

#include <string>
#include <vector>

#include "bitmix/core/tensor.hpp"

namespace bitmix {

// A value and its gradient, nothing more. How an optimizer treats a parameter (weight decay, a
// learning-rate multiplier) is optimizer policy and lives in nn (nn::ParameterPolicy in
// bitmix/nn/optimizer.hpp). The gradient stays here because the owners below nn compute it:
// quant's quantizer backward writes the gradients of learnable steps and clipping levels, and
// search's mixtures those of the bitwidth strengths.
struct Parameter {
  std::string name;
  Tensor value;
  Tensor grad;  // same shape as value; backward passes accumulate into it

  Parameter() = default;
  Parameter(std::string local_name, Tensor initial)
      : name(std::move(local_name)), value(std::move(initial)), grad(value.shape()) {}
  void zero_grad() { grad.zero(); }
};

// State that is saved and restored but not trained (BatchNorm running statistics, quantizer
// initialization flags, ...).
struct Buffer {
  std::string name;
  Tensor value;
};

// A parameter or buffer together with its full hierarchical name, as collected from a model.
struct NamedParameter {
  std::string name;
  Parameter* parameter;
};
struct NamedBuffer {
  std::string name;
  Buffer* buffer;
};

}  // namespace bitmix
