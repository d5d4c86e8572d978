#include "bitmix/core/version.hpp"

namespace bitmix {
std::string_view version() { return BITMIX_VERSION_STRING; }
}  // namespace bitmix
