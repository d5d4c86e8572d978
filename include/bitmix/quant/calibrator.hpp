#pragma once
// Post-training calibration: choose the clip range of a range-based quantizer (uniform,
// symmetric, pact, lsq) from data.
//
//   Calibrator cal(CalibrationOptions{CalibrationMethod::mse}, quantizer);
//   for (const Tensor& batch : batches) cal.observe(batch);
//   cal.apply(quantizer);           // quantizer.set_range(cal.ranges(quantizer))
//
// A calibrator keeps, per group, exact moments and a value histogram whose range grows by
// merging bins pairwise (exact, no interpolation) when a batch falls outside it, so any number
// of batches can be observed in bounded memory. Methods:
//   min_max        the observed range
//   percentile     the range holding `percentile` percent of the values (of |x| for symmetric grids)
//   mse            the scaled observed range t * [lo, hi] minimizing the quantization MSE on the
//                  target's exact level grid (histogram with uniform density inside each bin)
//   aciq_laplace   ACIQ (Banner et al. 2019): alpha = c_M * b with b = E|x - mean|
//   aciq_gaussian  ACIQ: alpha = c_M * sigma
// Non-finite values are skipped (and counted). docs/quantization.md derives the ACIQ constants.

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "bitmix/core/tensor.hpp"
#include "bitmix/quant/quantizer.hpp"

namespace bitmix::quant {

enum class CalibrationMethod : uint8_t { min_max, percentile, mse, aciq_laplace, aciq_gaussian };

std::string_view to_string(CalibrationMethod method) noexcept;  // "min-max", "percentile", "mse", "aciq-laplace", "aciq-gaussian"
CalibrationMethod parse_calibration_method(std::string_view name);  // ArgumentError naming the accepted names

struct CalibrationOptions {
  CalibrationMethod method = CalibrationMethod::min_max;
  double percentile = 99.99;  // percentile: percent of the values kept inside the range, in (50, 100]
  int histogram_bins = 2048;  // per group, even, >= 16: resolution of percentile and mse
  int mse_candidates = 128;   // mse: clip scales t = 1/N ... N/N of the observed range, then refined
};

struct ClipRange {
  float lo = 0.0f;
  float hi = 0.0f;
};

// ACIQ's optimal clip in units of the Laplace scale b or the Gaussian sigma, for 2^M uniform bins
// over [-alpha, alpha]: the minimizer of clipping + rounding noise,
//   Laplace:  2 b^2 exp(-alpha/b) + alpha^2 / (3 * 4^M)
//   Gaussian: (alpha^2 + s^2) (1 - erf(alpha / (s sqrt 2))) - sqrt(2/pi) alpha s exp(-alpha^2 / (2 s^2)) + alpha^2 / (3 * 4^M)
// for M in 1..9 (a one-sided M-bit grid on non-negative data uses M + 1).
enum class AciqDistribution : uint8_t { laplace, gaussian };
double aciq_clip_constant(AciqDistribution distribution, int bits);

class Calibrator {
 public:
  // Throws ArgumentError on bad options or a bad granularity/channel count.
  explicit Calibrator(CalibrationOptions options, Granularity granularity = Granularity::per_tensor,
                      int64_t channels = 1);
  // A calibrator with the target's granularity and channel count.
  Calibrator(CalibrationOptions options, const Quantizer& target);
  ~Calibrator();
  Calibrator(Calibrator&&) noexcept;
  Calibrator& operator=(Calibrator&&) noexcept;

  // Accumulates the values of one batch (per_channel: axis 0 must have `channels` entries).
  void observe(const Tensor& x);

  const CalibrationOptions& options() const noexcept;
  int64_t groups() const noexcept;
  int64_t observed() const noexcept;  // finite values seen, over all groups
  int64_t skipped() const noexcept;   // non-finite values ignored

  // One range per group for `target`, whose level grid and range shape (affine, symmetric,
  // non-negative) the methods take into account. Throws ArgumentError if nothing was observed,
  // the group counts differ, or the target does not accept a range.
  std::vector<ClipRange> ranges(const Quantizer& target) const;
  // target.set_range(ranges(target)).
  void apply(Quantizer& target) const;

  // Mean squared quantization error of one group's observed values on `grid` (the histogram
  // estimate the mse method minimizes).
  double histogram_mse(int64_t group, const LevelGrid& grid) const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace bitmix::quant
