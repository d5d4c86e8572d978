#pragma once
// What every fuzz target asserts: a reader given any bytes either accepts them or throws an
// exception derived from bitmix::Error. Anything else (a crash, a sanitizer report, another
// exception type escaping, a hang, a leak) is a bug that libFuzzer reports with the input.

#include <cstddef>
#include <cstdint>
#include <span>

#include "bitmix/core/error.hpp"

#define BITMIX_FUZZ_TARGET(body)                                                     \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {     \
    const std::span<const uint8_t> input(data, size);                                \
    try {                                                                            \
      body                                                                           \
    } catch (const bitmix::Error&) {                                                 \
      /* rejected with a message: the expected outcome for malformed input */        \
    }                                                                                \
    return 0;                                                                        \
  }
