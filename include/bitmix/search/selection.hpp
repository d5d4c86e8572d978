#pragma once
// From learned strengths to one bitwidth per layer, and the expected cost the search optimizes.

#include <vector>

#include "bitmix/search/cost.hpp"

namespace bitmix::search {

// Candidate bitwidths and, per layer, the probability of each (softmax of the strength logits).
struct Candidates {
  std::vector<int> w_bits;  // ascending, each in 1..8
  std::vector<int> a_bits;
};
// Throws ArgumentError unless both lists are non-empty, strictly ascending and within 1..8.
void validate_candidates(const Candidates& candidates);

struct LayerProbabilities {
  std::vector<double> w;  // one per Candidates::w_bits, summing to 1
  std::vector<double> a;
};

// E[C] = Σ_l Σ_i Σ_j p_l,i q_l,j f_l(b_i, b_j) and its gradient with respect to every p and q.
// Pinned layers contribute their fixed cost and have empty gradients.
struct ExpectedCost {
  double value = 0;
  std::vector<LayerProbabilities> gradient;
};
ExpectedCost expected_cost(const CostModel& model, const Candidates& candidates,
                           const std::vector<LayerProbabilities>& probabilities);

struct SelectionOptions {
  // After meeting the budget, spend what is left: raise bits (where the strengths object least)
  // while the total stays within the budget, so the result lands on the budget, not far below.
  bool fill = true;
};

struct Selection {
  std::vector<LayerBits> bits;
  double cost = 0;
  double argmax_cost = 0;  // before repair/fill
  int lowered = 0;         // bit decrements made by the repair step
  int raised = 0;          // bit increments made by the fill step
};

// Argmax per layer, then a repair step: while the cost exceeds the budget, lower the
// (layer, weights|activations) bitwidth to its next candidate with the smallest loss of
// log-probability per unit of cost saved. Then (optionally) the fill step above.
// Throws ArgumentError if even the lowest candidates exceed the budget.
Selection select_bits(const CostModel& model, const Candidates& candidates,
                      const std::vector<LayerProbabilities>& probabilities, double budget,
                      const SelectionOptions& options = {});

}  // namespace bitmix::search
