#pragma once
// Internal to nn's trainer: a guard that puts the weight averages into the model for its
// lifetime and the trained weights back afterwards (also when evaluation throws).

#include <functional>
#include <utility>

namespace bitmix::nn::detail {

class AverageInModel {
 public:
  explicit AverageInModel(std::function<void()> swap) : swap_(std::move(swap)) { swap_(); }
  ~AverageInModel() { swap_(); }
  AverageInModel(const AverageInModel&) = delete;
  AverageInModel& operator=(const AverageInModel&) = delete;

 private:
  std::function<void()> swap_;  // an involution: exchanges the averages and the model's values
};

}  // namespace bitmix::nn::detail
