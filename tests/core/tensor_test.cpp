#include "bitmix/core/tensor.hpp"

#include <gtest/gtest.h>

#include <cstdint>

#include "bitmix/core/error.hpp"

namespace bitmix {
namespace {

TEST(Tensor, ZeroInitializedAndAligned) {
  Tensor t({2, 3, 5, 7});
  EXPECT_EQ(t.numel(), 210);
  EXPECT_EQ(t.rank(), 4);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.data()) % kAlignment, 0u);
  for (float v : t.values()) EXPECT_EQ(v, 0.0f);
}

TEST(Tensor, NchwIndexingIsRowMajor) {
  Tensor t({2, 3, 4, 5});
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(i);
  EXPECT_EQ(t.at(1, 2, 3, 4), static_cast<float>(((1 * 3 + 2) * 4 + 3) * 5 + 4));
  EXPECT_EQ(t.at(0, 1, 0, 2), static_cast<float>(1 * 20 + 2));
}

TEST(Tensor, CheckedAccessRejectsOutOfRange) {
  Tensor t({2, 3, 4, 5});
  EXPECT_THROW(t.at(2, 0, 0, 0), ShapeError);
  EXPECT_THROW(t.at(0, 0, 0, -1), ShapeError);
  EXPECT_THROW(t.at(0, 0), ShapeError);  // wrong rank
  EXPECT_THROW(t.at(120), ShapeError);
  EXPECT_THROW(t.dim(4), ShapeError);
  EXPECT_EQ(t.dim(-1), 5);
  try {
    t.at(0, 3, 0, 0);
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 3, 4, 5]"), std::string::npos) << e.what();
  }
}

TEST(Tensor, CopyIsDeepMoveIsCheap) {
  Tensor a({4}, {1, 2, 3, 4});
  Tensor b = a;
  b[0] = 10;
  EXPECT_EQ(a[0], 1.0f);
  const float* p = b.data();
  Tensor c = std::move(b);
  EXPECT_EQ(c.data(), p);
}

TEST(Tensor, ReshapeKeepsDataAndInfersOneExtent) {
  Tensor a({2, 6}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  Tensor b = a.reshaped({3, -1});
  EXPECT_EQ(b.shape(), (Shape{3, 4}));
  EXPECT_EQ(b.at(2, 3), 11.0f);
  EXPECT_THROW(a.reshaped({5, -1}), ShapeError);
  EXPECT_THROW(a.reshaped({-1, -1}), ShapeError);
  EXPECT_THROW(a.reshaped({13}), ShapeError);
}

TEST(Tensor, ConstructionValidatesValueCount) {
  EXPECT_THROW(Tensor({2, 2}, {1.0f, 2.0f, 3.0f}), ShapeError);
  EXPECT_THROW(Tensor(Shape{-1, 2}), ShapeError);
  EXPECT_THROW(Tensor(Shape{int64_t{1} << 40, int64_t{1} << 40}), ShapeError);
}

TEST(Tensor, ExpectShapeNamesWhat) {
  Tensor a({1, 3, 8, 8});
  EXPECT_NO_THROW(a.expect_shape({1, 3, 8, 8}, "input"));
  try {
    a.expect_shape({1, 1, 8, 8}, "layer1.0.conv1 input");
    FAIL();
  } catch (const ShapeError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("layer1.0.conv1 input"), std::string::npos);
    EXPECT_NE(msg.find("[1, 1, 8, 8]"), std::string::npos);
    EXPECT_NE(msg.find("[1, 3, 8, 8]"), std::string::npos);
  }
}

}  // namespace
}  // namespace bitmix
