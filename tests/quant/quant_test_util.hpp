#pragma once
// Helpers shared by the quant tests.

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "bitmix/core/rng.hpp"
#include "bitmix/core/tensor.hpp"
#include "bitmix/quant/quantizer.hpp"

namespace bitmix::quant::testing {

inline Tensor gaussian(Shape shape, uint64_t seed, float stddev = 1.0f) {
  Tensor t(std::move(shape));
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = rng.normal(0.0f, stddev);
  return t;
}

inline Tensor relu(Tensor t) {
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = t[i] > 0.0f ? t[i] : 0.0f;
  return t;
}

inline bool bitwise_equal(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

inline void expect_bitwise_equal(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  int64_t mismatches = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (!bitwise_equal(a[i], b[i]) && mismatches++ < 5)
      ADD_FAILURE() << what << ": element " << i << ": " << a[i] << " vs " << b[i];
  }
  EXPECT_EQ(mismatches, 0) << what;
}

inline void expect_values(const Tensor& t, const std::vector<float>& expected, const std::string& what) {
  ASSERT_EQ(t.numel(), static_cast<int64_t>(expected.size())) << what;
  for (int64_t i = 0; i < t.numel(); ++i)
    EXPECT_FLOAT_EQ(t[i], expected[static_cast<std::size_t>(i)]) << what << ": element " << i;
}

// Every valid spec over kinds, roles, bits 1..8 and granularities, for property tests (INQ aside).
inline std::vector<QuantizerSpec> all_valid_specs(int64_t channels) {
  std::vector<QuantizerSpec> out;
  for (QuantizerKind kind : all_quantizer_kinds()) {
    // INQ is a procedure over per-weight state, not a function of its input: incremental_test.cpp.
    if (kind == QuantizerKind::inq) continue;
    for (Role role : {Role::weight, Role::activation}) {
      for (int bits = kMinBits; bits <= kMaxBits; ++bits) {
        for (Granularity g : {Granularity::per_tensor, Granularity::per_channel}) {
          for (bool is_signed : {false, true}) {
            if (is_signed && role == Role::weight) continue;
            QuantizerSpec s;
            s.kind = kind;
            s.role = role;
            s.bits = kind == QuantizerKind::float_bypass ? kFloatBits : bits;
            s.granularity = g;
            s.channels = g == Granularity::per_channel ? channels : 1;
            s.signed_activations = is_signed;
            if (check(s).empty()) out.push_back(s);
          }
        }
        if (kind == QuantizerKind::float_bypass) break;
      }
    }
  }
  return out;
}

}  // namespace bitmix::quant::testing
