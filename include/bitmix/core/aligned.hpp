#pragma once
// 64-byte aligned storage: one cache line, and the width of an AVX-512 register, so that
// packed bit planes and tensors can be loaded with aligned vector loads on every ISA.

#include <cstddef>
#include <new>
#include <vector>

namespace bitmix {

inline constexpr std::size_t kAlignment = 64;

template <typename T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() noexcept = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U>&) noexcept {}  // NOLINT: allocator rebinding

  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{kAlignment}));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{kAlignment}); }

  template <typename U>
  bool operator==(const AlignedAllocator<U>&) const noexcept { return true; }
};

// A std::vector whose data() is 64-byte aligned.
template <typename T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace bitmix
