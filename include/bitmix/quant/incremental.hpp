#pragma once
// Incremental network quantization (INQ, Zhou et al., ICLR 2017) on an `inq` weight quantizer:
// the weights are partitioned by magnitude, and a growing fraction of them (the largest first)
// is frozen to power-of-two-or-zero levels while the rest keeps training. Frozen weights are
// stored as integer codes on a grid fixed at the first freeze, so they never move, whatever the
// optimizer does to the latent weights. The training procedure (which fraction at which epoch)
// belongs to the caller; docs/quantization.md has the formulas and bitmix's choices.

#include <cstdint>

#include "bitmix/core/tensor.hpp"
#include "bitmix/quant/quantizer.hpp"

namespace bitmix::quant {

struct InqFreezeReport {
  int64_t newly_frozen = 0;
  int64_t frozen = 0;  // in all, = round(fraction * weights)
  int64_t total = 0;
};

// Freezes the largest-magnitude weights not yet frozen (ties: lower index first) until
// round(fraction * numel) are frozen, each at its nearest level of the grid. The grid (per group,
// as the `pot` kind: top level the power of two nearest max|w|) is fixed at the first call.
// ArgumentError if q is not an `inq` weight quantizer, `weight` does not fit it, or fraction is
// outside [0, 1] or below the fraction already frozen.
InqFreezeReport inq_freeze(Quantizer& q, const Tensor& weight, double fraction);

// The fraction frozen so far (0 before the first freeze). ArgumentError unless q is `inq`.
double inq_frozen_fraction(const Quantizer& q);

}  // namespace bitmix::quant
