#pragma once
#include <string_view>

namespace bitmix {
std::string_view version();  // "0.1.0"
}  // namespace bitmix
