#pragma once
// The one exception hierarchy of bitmix. Every message names the file, layer or parameter at
// fault and what was expected, so a user can act on it without reading the source.

#include <stdexcept>
#include <string>

namespace bitmix {

// Root of everything bitmix throws on bad input or failed I/O.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A file or directory that is missing, unreadable or unwritable.
class IoError : public Error {
 public:
  using Error::Error;
};

// A file whose contents are malformed: wrong magic, truncated, inconsistent sizes, bad checksum.
class FormatError : public Error {
 public:
  using Error::Error;
};

// Tensor shapes that do not fit together (names the layer or argument).
class ShapeError : public Error {
 public:
  using Error::Error;
};

// An argument outside its accepted range: bitwidths, flags, options, configuration entries.
class ArgumentError : public Error {
 public:
  using Error::Error;
};

}  // namespace bitmix
