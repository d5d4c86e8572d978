// A program outside the bitmix tree, built against the installed package (configured without
// Eigen or nlohmann_json: the package must not need them).
#include <bitmix/bitmix.hpp>

#include <atomic>
#include <iostream>

int main() {
  bitmix::Tensor t({2, 3, 4, 4}, 1.5f);
  std::atomic<int64_t> count{0};
  bitmix::parallel_for(t.numel(), [&](int64_t begin, int64_t end) { count += end - begin; });
  if (count != t.numel() || t.at(1, 2, 3, 3) != 1.5f) return 1;
  try {
    t.at(2, 0, 0, 0);
    return 1;
  } catch (const bitmix::Error&) {
  }
  // Symbols of support (fmt inside), quant (nlohmann_json inside) and runtime, linked from the
  // static libraries.
  if (bitmix::format_duration(185) != "3m05s") return 1;
  if (bitmix::runtime::parse_op_kind("conv2d") != bitmix::runtime::OpKind::conv2d) return 1;
  const bitmix::quant::BitConfig config = bitmix::quant::BitConfig::parse(
      bitmix::quant::BitConfig::uniform("m", {"conv1", "fc"}, 4, 4, bitmix::quant::QuantizerKind::lsq,
                                        bitmix::quant::QuantizerKind::lsq)
          .to_json());
  if (config.layers.size() != 2) return 1;
  std::cout << bitmix::cpu_summary() << "\n" << config.layers.size() << " layers\nconsumer ok\n";
  return 0;
}
