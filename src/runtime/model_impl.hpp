#pragma once
// The shared state behind runtime::Model (private to the runtime module).

#include <vector>

#include "bitmix/runtime/model.hpp"

namespace bitmix::runtime {

struct Model::Impl {
  ModelInfo info;
  std::vector<ValueInfo> values;
  std::vector<Op> ops;
  int32_t output = 0;
};

}  // namespace bitmix::runtime
