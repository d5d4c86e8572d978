#pragma once
// Post-training sensitivities for bit allocation, measured on a float network:
//
//  * CLADO (Deng et al., "Mixed-Precision Quantization with Cross-Layer Dependencies"): forward
//    passes only. ΔL_i(b) is the mean cross-entropy increase on the sensitivity set when only
//    layer i is quantized at option b, ΔL_ij(b, c) the increase when layers i and j are
//    quantized together. A second-order expansion of the loss in the quantization
//    perturbations, ΔL ≈ ½ Σ_ij Δw_i^T H_ij Δw_j, gives ΔL_i = ½ Δw_i^T H_ii Δw_i and
//    ΔL_ij − ΔL_i − ΔL_j = Δw_i^T H_ij Δw_j, so with x the one-hot option indicator
//        ΔL(x) ≈ ½ x^T C x,   C_(i,b),(i,b) = 2 ΔL_i(b),
//                             C_(i,b),(j,c) = ΔL_ij(b,c) − ΔL_i(b) − ΔL_j(c)   (i ≠ j),
//                             C_(i,b),(i,b') = 0 (b ≠ b': one layer has one option).
//    This is CLADO's matrix (its paper writes the objective x^T Ω x with the same entries up to
//    the factor ½, which changes no argmin); the allocation problem minimizes ½ x^T C x so its
//    objective is the predicted loss increase itself.
//  * independent: the diagonal alone, Σ_i ΔL_i(b_i) (the independent-error assumption).
//  * HAWQ-style (HAWQ-V2/V3): Ω_i(b) = Tr(H_i) / n_i · ||W_i − Q_b(W_i)||², with Tr(H_i) the
//    trace of the loss Hessian in layer i's weights by Hutchinson's method.
//
// A layer at option b is quantized exactly as post-training quantization does it (nn/ptq.hpp):
// symmetric per-channel weights with the MSE clip, a uniform activation grid calibrated on the
// float network's activations over the calibration batches.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "bitmix/core/tensor.hpp"
#include "bitmix/nn/module.hpp"
#include "bitmix/nn/ptq.hpp"
#include "bitmix/search/allocation.hpp"
#include "bitmix/search/cost.hpp"
#include "bitmix/search/selection.hpp"

namespace bitmix::search {

// The options of one layer: the (w_bits, a_bits) pairs the allocator chooses among.
struct LayerOptions {
  std::string name;
  std::vector<LayerBits> options;
};
// Every searched layer gets every (w, a) pair of the candidates (w outer, a inner); a pinned
// layer gets its one pinned pair. Validates the candidates (ArgumentError).
std::vector<LayerOptions> layer_options(const std::vector<LayerInfo>& layers, const Candidates& candidates);
// Just the options, for allocation_budget.
std::vector<std::vector<LayerBits>> option_bits(const std::vector<LayerOptions>& layers);

// Labelled images in batches, normalized as the model reads them.
struct LabelledBatches {
  std::vector<Tensor> images;             // [N_k, C, H, W] each
  std::vector<std::vector<int>> labels;   // N_k labels per batch
  int64_t count() const;
  // ArgumentError unless non-empty with matching label counts.
  void validate(std::string_view what) const;
};

// Each call returns a new float model with the trained weights: one replica per worker thread.
// Called on the calling thread only.
using ModelFactory = std::function<std::unique_ptr<nn::Module>()>;
using ProgressCallback = std::function<void(int64_t done, int64_t total)>;

// ---- CLADO.

struct CladoOptions {
  nn::PtqOptions quantization;  // weight and activation calibration (bias correction is not used)
  bool pairs = true;            // false: single-layer terms only (the independent allocator)
  // A versioned file of finished evaluations, keyed by the model's weights, the layers and
  // options, the quantization settings and the data: an interrupted measurement resumes from
  // it, and another budget reuses it. Empty: no cache. A cache of another measurement is an
  // ArgumentError naming the file.
  std::filesystem::path cache;
  uint64_t sensitivity_seed = 0;  // how the sensitivity set was drawn: part of the key
  // The cache is rewritten (atomically) and `progress` called after every round of
  // 2 x threads layer options, each with all its pairs with later layers.
  ProgressCallback progress;
};

struct CladoMeasurement {
  std::vector<LayerOptions> layers;
  double base_loss = 0;        // mean cross-entropy of the float model
  std::vector<double> single;  // [flat option] ΔL_i(b)
  std::vector<double> pair;    // [n x n] ΔL_ij(b, c) between options of different layers; empty without pairs
  uint64_t key = 0;            // the cache key
  int64_t evaluations = 0;     // forward evaluations of the sensitivity set this measurement needed
  int64_t from_cache = 0;      // of which were read from the cache
  double seconds = 0;

  int64_t size() const;  // total options n
  // C as above (n x n row-major). Throws ArgumentError without pairs.
  std::vector<double> clado_matrix() const;
  // ½ x^T C x and Σ_i ΔL_i(b_i) for a choice (option index per layer).
  double predicted_clado(std::span<const int> choice) const;
  double predicted_independent(std::span<const int> choice) const;
};

// Runs the 1 + n + Σ_{i<j} K_i K_j evaluations (the float model, every single layer option,
// every pair) on the thread pool, one model replica per thread; every evaluation runs on one
// thread, so the numbers do not depend on the thread count. Batches are evaluated in eval mode.
// Work is shared: the evaluations of layer i at option b (alone and with every later layer j)
// run as one group that computes the float prefix up to layer i once and then the activations
// with only layer i quantized up to each j once, so a pair costs a forward pass from layer j
// on. (A Sequential model, such as the zoo's, is split into its modules for this; another
// model runs whole.)
CladoMeasurement measure_clado(const ModelFactory& make_model, const Shape& image_shape,
                               const std::vector<LayerOptions>& layers, const LabelledBatches& sensitivity,
                               std::span<const Tensor> calibration, const CladoOptions& options = {});

// ---- HAWQ-style.

struct HawqOptions {
  int max_iterations = 100;   // Hutchinson probes at most
  double tolerance = 1e-3;    // stop when every layer's running mean moves by less than this, relatively
  uint64_t seed = 0;          // Rademacher probes
  // Central-difference step of the Hessian-vector products, relative to the RMS of the
  // weights probed: Hv ≈ (g(w + h v) − g(w − h v)) / 2h, h = epsilon · rms(w).
  double epsilon = 1e-3;
  quant::CalibrationOptions weights{quant::CalibrationMethod::mse};  // Q_b of the weight perturbation
  ProgressCallback progress;  // after every probe
};

struct HawqLayer {
  std::string name;
  int64_t params = 0;                // n_i
  double trace = 0;                  // Tr(H_i) estimate
  std::vector<double> perturbation;  // ||W_i − Q_b(W_i)||² per option
  std::vector<double> omega;         // Tr(H_i) / n_i · perturbation, per option
};

struct HawqSensitivity {
  std::vector<HawqLayer> layers;
  int iterations = 0;
  bool converged = false;  // stopped by the tolerance rather than max_iterations
  double seconds = 0;
};

// Per-layer Hessian traces of the mean cross-entropy over `data` (model in eval mode, weights
// restored afterwards) and the resulting Ω. The probes cover every layer's weights at once and
// layer i's estimate is v_i^T (Hv)_i, unbiased like the single-layer one (PyHessian's choice):
// two gradient passes per probe for all layers. The weights are restored exactly afterwards;
// the parameters' gradients are overwritten.
HawqSensitivity hawq_sensitivity(nn::Module& model, const Shape& image_shape, const std::vector<LayerOptions>& layers,
                                 const LabelledBatches& data, const HawqOptions& options = {});

// ---- The allocation problems.

// min ½ x^T C x (C projected onto the PSD cone first when `psd`; `projection` receives the
// report) under the budgets.
AllocationProblem clado_problem(const CladoMeasurement& measurement, std::vector<AllocationBudget> budgets,
                                bool psd = true, PsdProjection* projection = nullptr);
// min Σ_i ΔL_i(b_i).
AllocationProblem independent_problem(const CladoMeasurement& measurement, std::vector<AllocationBudget> budgets);
// min Σ_i Ω_i(b_i).
AllocationProblem hawq_problem(const HawqSensitivity& sensitivity, const std::vector<LayerOptions>& layers,
                               std::vector<AllocationBudget> budgets);

// The uniform allocation: every layer with several options at one shared (w_bits, a_bits) pair
// (single-option layers, the pinned ones, keep theirs), the pair with the most bits (w_bits
// first, then a_bits) whose configuration meets every budget. Returns the option index per
// layer. ArgumentError when the layers share no pair, or when no shared pair meets the budgets
// (naming them and the cheapest pair's costs).
std::vector<int> uniform_choice(const std::vector<LayerOptions>& layers, const std::vector<AllocationBudget>& budgets);

}  // namespace bitmix::search
