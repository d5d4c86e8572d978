#pragma once
// Explicit, seedable random numbers. bitmix never uses hidden global randomness: every
// function that draws random numbers takes an Rng&, so the same seed gives the same numbers
// on every platform (the generators and the normal transform are our own, not <random>'s
// implementation-defined distributions).

#include <cstdint>
#include <span>
#include <utility>

namespace bitmix {

// xoshiro256** seeded through splitmix64.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0x5eed);

  uint64_t next_u64() noexcept;
  uint32_t next_u32() noexcept { return static_cast<uint32_t>(next_u64() >> 32); }
  // Uniform in [0, 1) with 24 bits of precision.
  float uniform() noexcept { return static_cast<float>(next_u64() >> 40) * 0x1.0p-24f; }
  float uniform(float lo, float hi) noexcept { return lo + (hi - lo) * uniform(); }
  // Uniform in [0, 1) with 53 bits of precision.
  double uniform_double() noexcept { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  // Uniform integer in [0, n), unbiased. n must be > 0.
  uint64_t below(uint64_t n) noexcept;
  // Standard normal (Box-Muller, deterministic).
  float normal() noexcept;
  float normal(float mean, float stddev) noexcept { return mean + stddev * normal(); }
  bool bernoulli(float p) noexcept { return uniform() < p; }

  // An independent generator derived from this one's seed and `stream` (does not advance this).
  Rng fork(uint64_t stream) const noexcept;

  // Fisher-Yates shuffle.
  template <typename T>
  void shuffle(std::span<T> items) noexcept {
    for (std::size_t i = items.size(); i > 1; --i) {
      std::size_t j = static_cast<std::size_t>(below(i));
      std::swap(items[i - 1], items[j]);
    }
  }

  uint64_t seed() const noexcept { return seed_; }

 private:
  uint64_t seed_;
  uint64_t s_[4];
  bool has_spare_normal_ = false;
  float spare_normal_ = 0.0f;
};

}  // namespace bitmix
