#include "bitmix/quant/calibrator.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "bitmix/core/error.hpp"
#include "quant/engine.hpp"

namespace bitmix::quant {
namespace {

// Per-group statistics: exact moments and a histogram [origin, origin + bins * width).
struct GroupStatistics {
  std::vector<int64_t> counts;
  double origin = 0.0;
  double width = 0.0;
  int64_t count = 0;
  double sum = 0.0, sum_sq = 0.0;
  int64_t positive_count = 0;
  double positive_sum = 0.0, positive_sum_sq = 0.0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();

  int64_t bins() const { return static_cast<int64_t>(counts.size()); }
  double lower(int64_t bin) const { return origin + static_cast<double>(bin) * width; }
  double end() const { return lower(bins()); }

  // Grows the histogram until it covers [lo, hi], merging bin pairs (exact).
  void cover(double lo, double hi) {
    const int64_t b = bins();
    if (count == 0 && width == 0.0) {
      const double span = hi - lo;
      width = span > 0.0 ? span / static_cast<double>(b) : std::max(std::fabs(lo), 1e-30) * 1e-6;
      origin = lo;
      // The maximum falls on the upper edge: widen by a hair so it lands in the last bin.
      width *= 1.0 + 1e-9;
      return;
    }
    while (lo < origin || hi >= end()) {
      std::vector<int64_t> merged(static_cast<std::size_t>(b), 0);
      const bool grow_left = lo < origin;
      const int64_t offset = grow_left ? b / 2 : 0;
      for (int64_t i = 0; i < b; ++i) merged[static_cast<std::size_t>(offset + i / 2)] += counts[static_cast<std::size_t>(i)];
      if (grow_left) origin -= static_cast<double>(b) * width;
      width *= 2.0;
      counts.swap(merged);
    }
  }

  int64_t bin_of(double v) const {
    const double position = std::floor((v - origin) / width);
    return static_cast<int64_t>(std::clamp(position, 0.0, static_cast<double>(bins() - 1)));
  }

  double mean() const { return count > 0 ? sum / static_cast<double>(count) : 0.0; }
  double stddev() const {
    if (count == 0) return 0.0;
    const double m = mean();
    return std::sqrt(std::max(0.0, sum_sq / static_cast<double>(count) - m * m));
  }

  // Fraction of values below v, with uniform density inside each bin.
  double cdf(double v) const {
    if (count == 0) return 0.0;
    if (v <= origin) return 0.0;
    if (v >= end()) return 1.0;
    const int64_t k = bin_of(v);
    double below = 0.0;
    for (int64_t i = 0; i < k; ++i) below += static_cast<double>(counts[static_cast<std::size_t>(i)]);
    below += static_cast<double>(counts[static_cast<std::size_t>(k)]) * (v - lower(k)) / width;
    return below / static_cast<double>(count);
  }

  // The value below which a fraction q of the values lie.
  double quantile(double q) const {
    const double target = q * static_cast<double>(count);
    double cumulative = 0.0;
    for (int64_t i = 0; i < bins(); ++i) {
      const auto c = static_cast<double>(counts[static_cast<std::size_t>(i)]);
      if (c > 0.0 && cumulative + c >= target)
        return std::clamp(lower(i) + width * (target - cumulative) / c, min, max);
      cumulative += c;
    }
    return max;
  }

  // E|x - center| with uniform density inside each bin.
  double mean_abs_deviation(double center) const {
    if (count == 0) return 0.0;
    double total = 0.0;
    for (int64_t i = 0; i < bins(); ++i) {
      const auto c = static_cast<double>(counts[static_cast<std::size_t>(i)]);
      if (c == 0.0) continue;
      const double a = lower(i), b = a + width;
      double e = 0.0;
      if (center <= a)
        e = (a + b) / 2.0 - center;
      else if (center >= b)
        e = center - (a + b) / 2.0;
      else
        e = ((center - a) * (center - a) + (b - center) * (b - center)) / (2.0 * width);
      total += c * e;
    }
    return total / static_cast<double>(count);
  }
};

// Integral of (x - level)^2 over [a, b].
double squared_error_integral(double a, double b, double level) {
  const double hi = b - level, lo = a - level;
  return (hi * hi * hi - lo * lo * lo) / 3.0;
}

}  // namespace

struct Calibrator::State {
  CalibrationOptions options;
  Granularity granularity = Granularity::per_tensor;
  int64_t channels = 1;
  std::vector<GroupStatistics> groups;
  int64_t skipped = 0;
};

std::string_view to_string(CalibrationMethod method) noexcept {
  switch (method) {
    case CalibrationMethod::min_max: return "min-max";
    case CalibrationMethod::percentile: return "percentile";
    case CalibrationMethod::mse: return "mse";
    case CalibrationMethod::aciq_laplace: return "aciq-laplace";
    case CalibrationMethod::aciq_gaussian: return "aciq-gaussian";
  }
  return "?";
}

CalibrationMethod parse_calibration_method(std::string_view name) {
  for (CalibrationMethod m : {CalibrationMethod::min_max, CalibrationMethod::percentile, CalibrationMethod::mse,
                              CalibrationMethod::aciq_laplace, CalibrationMethod::aciq_gaussian})
    if (to_string(m) == name) return m;
  throw ArgumentError(fmt::format(
      "unknown calibration method '{}': expected one of min-max, percentile, mse, aciq-laplace, aciq-gaussian", name));
}

double aciq_clip_constant(AciqDistribution distribution, int bits) {
  // Minimizers of the formulas in calibrator.hpp for M = 1..9 (golden-section search to 1e-6;
  // the Laplace ones are also W(3 * 4^M), W the Lambert function). Banner et al. quote 2.83,
  // 3.89, 5.03 (Laplace) and 1.71, 2.15, 2.55 (Gaussian) for 2, 3, 4 bits.
  static constexpr double kLaplace[] = {1.8628, 2.8307, 3.8972, 5.0286, 6.2048, 7.4131, 8.6456, 9.8968, 11.1627};
  static constexpr double kGaussian[] = {1.2399, 1.7106, 2.1516, 2.5591, 2.9362, 3.2869, 3.6151, 3.9240, 4.2163};
  if (bits < 1 || bits > 9)
    throw ArgumentError(fmt::format("aciq_clip_constant: bits = {}: expected an integer from 1 to 9", bits));
  const auto i = static_cast<std::size_t>(bits - 1);
  return distribution == AciqDistribution::laplace ? kLaplace[i] : kGaussian[i];
}

Calibrator::Calibrator(CalibrationOptions options, Granularity granularity, int64_t channels)
    : state_(std::make_unique<State>()) {
  if (!(options.percentile > 50.0 && options.percentile <= 100.0))
    throw ArgumentError(fmt::format("calibration percentile = {}: expected a value in (50, 100]", options.percentile));
  if (options.histogram_bins < 16 || options.histogram_bins % 2 != 0 || options.histogram_bins > (1 << 24))
    throw ArgumentError(fmt::format("calibration histogram_bins = {}: expected an even number from 16 to 2^24",
                                    options.histogram_bins));
  if (options.mse_candidates < 8 || options.mse_candidates > 100000)
    throw ArgumentError(
        fmt::format("calibration mse_candidates = {}: expected an integer from 8 to 100000", options.mse_candidates));
  if (granularity == Granularity::per_channel && channels < 1)
    throw ArgumentError(fmt::format("calibrator: channels = {}: a per_channel calibrator needs at least 1", channels));
  state_->options = options;
  state_->granularity = granularity;
  state_->channels = granularity == Granularity::per_channel ? channels : 1;
  state_->groups.resize(static_cast<std::size_t>(state_->channels));
  for (GroupStatistics& g : state_->groups) g.counts.assign(static_cast<std::size_t>(options.histogram_bins), 0);
}

Calibrator::Calibrator(CalibrationOptions options, const Quantizer& target)
    : Calibrator(options, target.spec().granularity, target.spec().channels) {}

Calibrator::~Calibrator() = default;
Calibrator::Calibrator(Calibrator&&) noexcept = default;
Calibrator& Calibrator::operator=(Calibrator&&) noexcept = default;

const CalibrationOptions& Calibrator::options() const noexcept { return state_->options; }
int64_t Calibrator::groups() const noexcept { return state_->channels; }

int64_t Calibrator::observed() const noexcept {
  int64_t total = 0;
  for (const GroupStatistics& g : state_->groups) total += g.count;
  return total;
}

int64_t Calibrator::skipped() const noexcept { return state_->skipped; }

void Calibrator::observe(const Tensor& x) {
  State& s = *state_;
  if (s.granularity == Granularity::per_channel && (x.rank() < 1 || x.shape()[0] != s.channels))
    throw ShapeError(fmt::format("calibrator: batch of shape {}: expected axis 0 of extent {} (one range per channel)",
                                 shape_to_string(x.shape()), s.channels));
  if (x.numel() == 0) return;
  const detail::Blocks blocks(s.channels, x.numel());
  const float* xs = x.data();

  // Pass 1: finite range and moments per block (combined in block order: deterministic).
  struct Partial {
    double min = std::numeric_limits<double>::infinity(), max = -std::numeric_limits<double>::infinity();
    double sum = 0.0, sum_sq = 0.0, positive_sum = 0.0, positive_sum_sq = 0.0;
    int64_t count = 0, positive_count = 0, skipped = 0;
  };
  std::vector<Partial> partial(static_cast<std::size_t>(blocks.count));
  detail::for_each_block(blocks, [&](int64_t, int64_t begin, int64_t end, int64_t b) {
    Partial p;
    for (int64_t i = begin; i < end; ++i) {
      const float f = xs[i];
      if (!std::isfinite(f)) {
        ++p.skipped;
        continue;
      }
      const auto v = static_cast<double>(f);
      p.min = std::min(p.min, v);
      p.max = std::max(p.max, v);
      p.sum += v;
      p.sum_sq += v * v;
      ++p.count;
      if (v > 0.0) {
        p.positive_sum += v;
        p.positive_sum_sq += v * v;
        ++p.positive_count;
      }
    }
    partial[static_cast<std::size_t>(b)] = p;
  });
  for (int64_t g = 0; g < blocks.groups; ++g) {
    GroupStatistics& st = s.groups[static_cast<std::size_t>(g)];
    double lo = std::numeric_limits<double>::infinity(), hi = -std::numeric_limits<double>::infinity();
    int64_t count = 0;
    for (int64_t j = 0; j < blocks.per_group; ++j) {
      const Partial& p = partial[static_cast<std::size_t>(g * blocks.per_group + j)];
      lo = std::min(lo, p.min);
      hi = std::max(hi, p.max);
      count += p.count;
    }
    if (count > 0) st.cover(lo, hi);  // before the moments change `count`
    for (int64_t j = 0; j < blocks.per_group; ++j) {
      const Partial& p = partial[static_cast<std::size_t>(g * blocks.per_group + j)];
      st.sum += p.sum;
      st.sum_sq += p.sum_sq;
      st.positive_sum += p.positive_sum;
      st.positive_sum_sq += p.positive_sum_sq;
      st.positive_count += p.positive_count;
      st.count += p.count;
      s.skipped += p.skipped;
    }
    st.min = std::min(st.min, lo);
    st.max = std::max(st.max, hi);
  }

  // Pass 2: histogram counts, one partial histogram per block (integer sums commute).
  const auto bins = static_cast<std::size_t>(s.options.histogram_bins);
  std::vector<std::vector<int32_t>> block_counts(static_cast<std::size_t>(blocks.count));
  detail::for_each_block(blocks, [&](int64_t g, int64_t begin, int64_t end, int64_t b) {
    const GroupStatistics& st = s.groups[static_cast<std::size_t>(g)];
    std::vector<int32_t>& counts = block_counts[static_cast<std::size_t>(b)];
    counts.assign(bins, 0);
    for (int64_t i = begin; i < end; ++i) {
      const float f = xs[i];
      if (std::isfinite(f)) ++counts[static_cast<std::size_t>(st.bin_of(static_cast<double>(f)))];
    }
  });
  for (int64_t b = 0; b < blocks.count; ++b) {
    GroupStatistics& st = s.groups[static_cast<std::size_t>(b / blocks.per_group)];
    const std::vector<int32_t>& counts = block_counts[static_cast<std::size_t>(b)];
    for (std::size_t i = 0; i < bins; ++i) st.counts[i] += counts[i];
  }
}

double Calibrator::histogram_mse(int64_t group, const LevelGrid& grid) const {
  if (group < 0 || group >= groups())
    throw ArgumentError(fmt::format("histogram_mse: group {} of {}", group, groups()));
  const GroupStatistics& st = state_->groups[static_cast<std::size_t>(group)];
  if (st.count == 0) return 0.0;
  const double step = grid.step > 0.0f ? static_cast<double>(grid.step) : 1e-30;
  const double offset = static_cast<double>(grid.offset);
  const auto k_lo = static_cast<double>(grid.k_min), k_hi = static_cast<double>(grid.k_max);
  const auto cell_of = [&](double v) { return std::clamp(std::floor(v / step - offset + 0.5), k_lo, k_hi); };
  double total = 0.0;
  for (int64_t i = 0; i < st.bins(); ++i) {
    const auto c = static_cast<double>(st.counts[static_cast<std::size_t>(i)]);
    if (c == 0.0) continue;
    // The values of this bin lie in [a, b] (the observed extremes bound the outer bins).
    const double a = std::max(st.lower(i), st.min), b = std::min(st.lower(i) + st.width, st.max);
    if (b <= a) {
      const double level = step * (cell_of(a) + offset);
      total += c * (a - level) * (a - level);
      continue;
    }
    double integral = 0.0;
    for (double k = cell_of(a), last = cell_of(b); k <= last; k += 1.0) {
      const double level = step * (k + offset);
      const double cell_lo = k == k_lo ? a : std::max(a, step * (k + offset - 0.5));
      const double cell_hi = k == k_hi ? b : std::min(b, step * (k + offset + 0.5));
      if (cell_hi > cell_lo) integral += squared_error_integral(cell_lo, cell_hi, level);
    }
    total += c * integral / (b - a);
  }
  return total / static_cast<double>(st.count);
}

std::vector<ClipRange> Calibrator::ranges(const Quantizer& target) const {
  const State& s = *state_;
  if (target.groups() != groups())
    throw ArgumentError(fmt::format("calibrator with {} groups cannot calibrate {} ({} groups)", groups(),
                                    target.describe(), target.groups()));
  const RangeShape shape = target.range_shape();  // throws for quantizers without a range
  if (observed() == 0)
    throw ArgumentError(fmt::format("calibrator ({}): no finite values observed; call observe() first",
                                    to_string(s.options.method)));
  const CalibrationOptions& o = s.options;
  std::vector<ClipRange> out;
  out.reserve(s.groups.size());
  for (std::size_t gi = 0; gi < s.groups.size(); ++gi) {
    const GroupStatistics& st = s.groups[gi];
    if (st.count == 0) {
      out.push_back({0.0f, 0.0f});
      continue;
    }
    const double max_abs = std::max(std::fabs(st.min), std::fabs(st.max));
    // One-sided data (nothing negative) or a non-negative grid: clip only the top.
    const bool one_sided = shape == RangeShape::nonnegative || st.min >= 0.0;
    double lo = 0.0, hi = 0.0;
    // The min-max range in the shape the target uses.
    if (shape == RangeShape::symmetric) {
      lo = -max_abs;
      hi = max_abs;
    } else if (shape == RangeShape::nonnegative) {
      hi = std::max(st.max, 0.0);
    } else {
      lo = st.min;
      hi = st.max;
    }
    switch (o.method) {
      case CalibrationMethod::min_max: break;
      case CalibrationMethod::percentile: {
        const double q = o.percentile / 100.0;
        if (shape == RangeShape::symmetric) {
          // P(|x| <= a) = F(a) - F(-a), increasing in a: bisection.
          double a_lo = 0.0, a_hi = max_abs;
          for (int it = 0; it < 100; ++it) {
            const double mid = 0.5 * (a_lo + a_hi);
            if (st.cdf(mid) - st.cdf(-mid) < q)
              a_lo = mid;
            else
              a_hi = mid;
          }
          lo = -a_hi;
          hi = a_hi;
        } else if (shape == RangeShape::nonnegative) {
          hi = std::max(st.quantile(q), 0.0);
        } else {
          lo = st.quantile(1.0 - q);
          hi = st.quantile(q);
        }
        break;
      }
      case CalibrationMethod::mse: {
        const auto group = static_cast<int64_t>(gi);
        const double base_lo = lo, base_hi = hi;
        const auto error_at = [&](double t) {
          return histogram_mse(group, target.grid_for_range(static_cast<float>(t * base_lo),
                                                           static_cast<float>(t * base_hi)));
        };
        const int n = o.mse_candidates;
        int best = n;
        double best_error = std::numeric_limits<double>::infinity();
        for (int i = 1; i <= n; ++i) {
          const double e = error_at(static_cast<double>(i) / n);
          if (e < best_error) {  // strict: the smallest clip among equals
            best_error = e;
            best = i;
          }
        }
        // Refine between the neighbours of the best candidate (golden-section search).
        double a = static_cast<double>(best - 1) / n, b = std::min(1.0, static_cast<double>(best + 1) / n);
        const double r = (std::sqrt(5.0) - 1.0) / 2.0;
        double c = b - r * (b - a), d = a + r * (b - a);
        double fc = error_at(c), fd = error_at(d);
        for (int it = 0; it < 40; ++it) {
          if (fc < fd) {
            b = d;
            d = c;
            fd = fc;
            c = b - r * (b - a);
            fc = error_at(c);
          } else {
            a = c;
            c = d;
            fc = fd;
            d = a + r * (b - a);
            fd = error_at(d);
          }
        }
        double t = static_cast<double>(best) / n;
        const double refined = 0.5 * (a + b);
        if (error_at(refined) < best_error) t = refined;
        lo = t * base_lo;
        hi = t * base_hi;
        break;
      }
      case CalibrationMethod::aciq_laplace:
      case CalibrationMethod::aciq_gaussian: {
        const bool laplace = o.method == CalibrationMethod::aciq_laplace;
        // M: the grid has about 2^M levels on the part of the axis the data uses. One-sided data
        // on 2^M levels behaves like two-sided data on 2^(M+1) (same clipping and rounding noise
        // per unit of mass), so it takes the constant of M + 1.
        const LevelGrid unit = target.grid_for_range(one_sided ? 0.0f : -1.0f, 1.0f);
        const int32_t k_first = one_sided ? std::max(unit.k_min, 0) : unit.k_min;
        const double levels = static_cast<double>(unit.k_max) - static_cast<double>(k_first) + 1.0;
        int bits = std::clamp(static_cast<int>(std::ceil(std::log2(std::max(levels, 2.0)) - 1e-9)), 1, 8);
        if (one_sided) ++bits;
        const double c = aciq_clip_constant(laplace ? AciqDistribution::laplace : AciqDistribution::gaussian, bits);
        if (one_sided) {
          // The positive part of a zero-centred distribution: E[x | x > 0] = b (Laplace),
          // E[x^2 | x > 0] = sigma^2 (Gaussian).
          const auto n = static_cast<double>(std::max<int64_t>(1, st.positive_count));
          const double spread = laplace ? st.positive_sum / n : std::sqrt(st.positive_sum_sq / n);
          lo = shape == RangeShape::affine ? st.min : 0.0;
          hi = std::min(st.max, c * spread);
          if (shape == RangeShape::symmetric) lo = -hi;
        } else {
          const double mean = st.mean();
          const double spread = laplace ? st.mean_abs_deviation(mean) : st.stddev();
          const double alpha = c * spread;
          if (shape == RangeShape::symmetric) {
            hi = std::min(max_abs, std::fabs(mean) + alpha);
            lo = -hi;
          } else {
            lo = std::max(st.min, mean - alpha);
            hi = std::min(st.max, mean + alpha);
          }
        }
        break;
      }
    }
    out.push_back({static_cast<float>(lo), static_cast<float>(std::max(lo, hi))});
  }
  return out;
}

void Calibrator::apply(Quantizer& target) const {
  const std::vector<ClipRange> r = ranges(target);
  std::vector<float> lo(r.size()), hi(r.size());
  for (std::size_t g = 0; g < r.size(); ++g) {
    lo[g] = r[g].lo;
    hi[g] = r[g].hi;
  }
  target.set_range(lo, hi);
}

}  // namespace bitmix::quant
