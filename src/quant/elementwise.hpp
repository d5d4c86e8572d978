#pragma once
// Internal interface between the quantizer engine (engine.cpp, baseline flags) and the
// elementwise kernels, compiled once per instruction set (elementwise_scalar.cpp,
// elementwise_avx2.cpp, elementwise_avx512.cpp from the one source elementwise_kernels.inc).
//
// A kernel call covers one block of one group (see Blocks in engine.hpp) and one or more
// quantizers ("candidates") of that group, and makes ONE pass over the block's data however many
// candidates there are: the EBS mixture y = Σ_k w_k Q_k(x) and its backward read x (and the
// gradient) once, where a loop over Quantizer calls reads them once per candidate.
//
// Exactness: every element goes through the same operations in the same order on every ISA
// (no FMA contraction: the kernel sources are built with -ffp-contract=off), candidates are
// summed in the order given, and reductions use 16 fixed lanes (element i of a block feeds lane
// i mod 16) combined in lane order, whatever the vector width. So the ISAs agree bit for bit, and
// a call with k candidates equals k calls with one candidate each, bit for bit.
//
// This header holds only plain structs, function pointers and the extern tables: the ISA
// translation units must not share inline functions or templates with the baseline code (the
// linker would keep one copy, possibly the AVX-512 one, for all callers; the rule is stated in
// src/core/isa_dispatch.hpp).

#include <cstdint>

namespace bitmix::quant::detail {

// How a quantizer maps an input to a level (the forward pass); constants in GroupGrid.
enum class GridKind : uint8_t {
  identity,      // y = x (float bypass)
  uniform,       // k = round_half_even(clamp(x * in_mul, k_min, k_max)), y = scale * k, code = k + zero_point
  odd,           // k = floor(clamp(t * in_mul, k_min, k_max)), c = 2k + 1, y = scale * c, code = c
  power_of_two,  // m = |x| * in_mul; c = sign(x) * (0 or 2^j, j <= k_max), y = scale * c, code = c
  ternary,       // c = sign(x) if |x| > in_mul else 0, y = scale * c, code = c
};

// One group's grid.
struct GroupGrid {
  float in_mul = 1.0f;  // multiplier applied to the input (uniform, odd, power_of_two) or threshold (ternary)
  float scale = 1.0f;   // output = scale * integer level
  float k_min = 0.0f;   // integer bounds (uniform, odd); power_of_two: unused
  float k_max = 0.0f;   // power_of_two: the largest exponent index
  int32_t zero_point = 0;
};

// The straight-through rule of the backward pass (constants in GroupGate). `gradient` below is
// weight * grad_output[i]; dL/dx[i] is the gradient where the rule passes it, else 0.
enum class GateKind : uint8_t {
  everything,  // identity STE: passes every gradient
  clip,        // t = x * mul; passes where lo <= t <= hi (range quantizers, DoReFa activations)
  abs_clip,    // passes where |x| * mul <= hi (SAWB with mul 1, power-of-two)
  lsq,         // v = x * mul; passes where lo < v < hi; parameter term (lo < v < hi ? round(c) - v : c) * g,
               // c = clamp(v, lo, hi) (LSQ's dQ/ds times grad_output)
  lsq_binary,  // as lsq with sign(v) (+1 at 0) for round(c) (1-bit LSQ weights)
  pact,        // high = x >= hi ? g : 0; dL/dx = x >= 0 ? weight * (g - high) : 0; parameter term high
  custom,      // not elementwise (DoReFa weights): the quantizer runs its own backward
};

struct GroupGate {
  float mul = 1.0f;
  float lo = 0.0f;
  float hi = 0.0f;
};

// One candidate on the block being processed.
struct CandidateBlock {
  GroupGrid grid;
  GroupGate gate;
  float weight = 1.0f;  // mixing weight (1 for a plain forward or backward)
};

// What a backward call adds up per candidate over the block.
struct CandidateSums {
  double dot = 0.0;    // sum_i grad_output[i] * Q(x)[i] (when asked for)
  double param = 0.0;  // sum_i of the gate's parameter term (lsq, lsq_binary, pact; else 0)
};

// The largest number of candidates one kernel call takes; the engine splits larger sets.
inline constexpr int kMaxCandidatesPerCall = 8;

struct ElementKernels {
  // out[i] = base[i] + Σ_k c[k].weight * Q_k(x[i]), summed left to right in candidate order;
  // base[i] is init[i], or the constant init_value when init is null. 1 <= count <=
  // kMaxCandidatesPerCall, all candidates on `grid` (`tanh_input`: on tanh(x)). out may equal x
  // or init.
  //   A plain forward is init_value = -0.0f (-0 + v == v for every v, so it stores Q(x) itself)
  //   with weight 1; forward_accumulate passes init = out.
  void (*forward)(GridKind grid, bool tanh_input, const CandidateBlock* c, int count, const float* x, int64_t n,
                  const float* init, float init_value, float* out);

  // The backward of the same sum, with g = grad_output:
  //   with grad_input: grad_input[i] = base[i] + Σ_k (gate_k passes x[i] ? c[k].weight * g[i] : 0)
  //     (pact: the pact rule), base as in forward; grad_input may equal g or init;
  //   with want_dot: sums[k].dot = Σ_i g[i] * Q_k(x[i]) in double;
  //   sums[k].param = the gate's parameter term summed (float lanes, combined in double).
  // grad_input == nullptr asks for the dot products only (gate ignored). The engine only passes
  // grid/gate pairs with a kernel (has_backward).
  // tanh_input: the dot products are of the grid on tanh(x) (gates always see x).
  void (*backward)(GridKind grid, GateKind gate, const CandidateBlock* c, int count, bool want_dot, bool tanh_input,
                   const float* x, const float* g, int64_t n, const float* init, float init_value, float* grad_input,
                   CandidateSums* sums);
};

// True if ElementKernels::backward handles this pair with grad_input (dot products alone work
// for every grid).
bool has_backward(GridKind grid, GateKind gate, bool want_dot) noexcept;

// Per-ISA tables (defined only when compiled in), one per translation unit; engine.cpp chooses.
extern const ElementKernels kElementKernelsScalar;
#if defined(BITMIX_HAVE_AVX2)
extern const ElementKernels kElementKernelsAvx2;
#endif
#if defined(BITMIX_HAVE_AVX512)
extern const ElementKernels kElementKernelsAvx512;
#endif

}  // namespace bitmix::quant::detail
