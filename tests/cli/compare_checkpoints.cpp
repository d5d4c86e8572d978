// compare_checkpoints A B: exit 0 if the two checkpoints hold the same entries (kind, name,
// shape) with bit-identical values, 1 naming the first difference otherwise. The metadata is
// not compared: it records times and command lines, which differ between two runs.
#include <cstdio>
#include <cstring>
#include <exception>

#include "bitmix/nn/checkpoint.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: compare_checkpoints A.ckpt B.ckpt\n");
    return 2;
  }
  try {
    const bitmix::nn::Checkpoint a = bitmix::nn::load_checkpoint(argv[1]), b = bitmix::nn::load_checkpoint(argv[2]);
    if (a.entries.size() != b.entries.size()) {
      std::printf("%zu entries against %zu\n", a.entries.size(), b.entries.size());
      return 1;
    }
    for (std::size_t i = 0; i < a.entries.size(); ++i) {
      const auto &x = a.entries[i], &y = b.entries[i];
      if (x.name != y.name || x.kind != y.kind || x.value.shape() != y.value.shape()) {
        std::printf("entry %zu: '%s' against '%s' (or another kind or shape)\n", i, x.name.c_str(), y.name.c_str());
        return 1;
      }
      if (x.value.numel() > 0 &&
          std::memcmp(x.value.data(), y.value.data(), static_cast<std::size_t>(x.value.numel()) * sizeof(float)) != 0) {
        for (int64_t k = 0; k < x.value.numel(); ++k)
          if (std::memcmp(&x.value.data()[k], &y.value.data()[k], sizeof(float)) != 0) {
            std::printf("'%s'[%lld]: %.9g against %.9g\n", x.name.c_str(), static_cast<long long>(k),
                        static_cast<double>(x.value.data()[k]), static_cast<double>(y.value.data()[k]));
            return 1;
          }
      }
    }
    std::printf("%zu entries identical\n", a.entries.size());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "compare_checkpoints: %s\n", e.what());
    return 1;
  }
}
