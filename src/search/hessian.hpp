#pragma once
// Gradients and Hessian-vector products of the mean cross-entropy in a set of weights, for the
// HAWQ-style sensitivities (hawq.cpp) and their tests.

#include <span>
#include <vector>

#include "bitmix/core/parameter.hpp"
#include "bitmix/nn/module.hpp"
#include "bitmix/search/sensitivity.hpp"

namespace bitmix::search::detail {

// d(mean cross-entropy over `data`)/d(params), the parameters' values concatenated in order.
// The model runs in eval mode; every parameter's .grad is overwritten.
std::vector<double> loss_gradient(nn::Module& model, std::span<Parameter* const> params, const LabelledBatches& data);

// H v ≈ (g(w + h v) − g(w − h v)) / 2h. The weights are restored exactly afterwards.
std::vector<double> hessian_vector_product(nn::Module& model, std::span<Parameter* const> params,
                                           const LabelledBatches& data, std::span<const double> v, double h);

}  // namespace bitmix::search::detail
