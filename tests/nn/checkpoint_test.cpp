// Checkpoint format: round trip, every kind of corruption named in the error, loading into a
// model with strict and tolerant options, optimizer state.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/models.hpp"

namespace bitmix::nn {
namespace {

Checkpoint sample() {
  Checkpoint ck;
  ck.metadata = R"({"epoch": 3})";
  ck.add(CheckpointTensorKind::parameter, "conv1.weight", Tensor({2, 1, 3, 3}, 0.5f));
  Tensor ramp({5});
  for (int64_t i = 0; i < 5; ++i) ramp[i] = static_cast<float>(i) - 2.0f;
  ck.add(CheckpointTensorKind::buffer, "bn1.running_var", ramp);
  ck.add(CheckpointTensorKind::optimizer_state, "main/step", Tensor({1}, 7.0f));
  ck.add(CheckpointTensorKind::extra, "empty", Tensor({0}));
  return ck;
}

// Recomputes the CRC after an edit, so a structural check (not the checksum) must catch it.
void refresh_crc(std::vector<uint8_t>& bytes) {
  const std::size_t end = bytes.size() - 8;
  const uint32_t crc = crc32(std::span<const uint8_t>(bytes.data(), end));
  for (int i = 0; i < 4; ++i) bytes[end + static_cast<std::size_t>(i)] = static_cast<uint8_t>(crc >> (8 * i));
}

void put_u64(std::vector<uint8_t>& bytes, std::size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) bytes[at + static_cast<std::size_t>(i)] = static_cast<uint8_t>(v >> (8 * i));
}

void expect_format_error(const std::vector<uint8_t>& bytes, const std::string& fragment) {
  try {
    parse_checkpoint(bytes, "test.ckpt");
    ADD_FAILURE() << "expected FormatError containing '" << fragment << "'";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("test.ckpt"), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, RoundTripsThroughAFile) {
  const auto path = std::filesystem::temp_directory_path() / "bitmix_nn_checkpoint_test.ckpt";
  const Checkpoint ck = sample();
  save_checkpoint(path, ck);
  const Checkpoint back = load_checkpoint(path);
  std::filesystem::remove(path);
  EXPECT_EQ(back.metadata, ck.metadata);
  ASSERT_EQ(back.entries.size(), ck.entries.size());
  for (std::size_t i = 0; i < ck.entries.size(); ++i) {
    EXPECT_EQ(back.entries[i].name, ck.entries[i].name);
    EXPECT_EQ(back.entries[i].kind, ck.entries[i].kind);
    EXPECT_EQ(back.entries[i].value.shape(), ck.entries[i].value.shape());
    for (int64_t k = 0; k < ck.entries[i].value.numel(); ++k)
      EXPECT_EQ(back.entries[i].value[k], ck.entries[i].value[k]);
  }
  EXPECT_NE(back.find(CheckpointTensorKind::buffer, "bn1.running_var"), nullptr);
  EXPECT_EQ(back.find(CheckpointTensorKind::parameter, "bn1.running_var"), nullptr);
}

TEST(Checkpoint, LayoutIsAlignedAndChecksummed) {
  const std::vector<uint8_t> bytes = serialize_checkpoint(sample());
  ASSERT_GE(bytes.size(), 72u);
  EXPECT_EQ(std::memcmp(bytes.data(), "BMXCKPT\0", 8), 0);
  EXPECT_EQ(bytes[8], kCheckpointVersion);
  EXPECT_EQ(std::memcmp(bytes.data() + bytes.size() - 4, "BMXE", 4), 0);
  EXPECT_EQ((bytes.size() - 8) % 64, 0u);
  const uint32_t crc = crc32(std::span<const uint8_t>(bytes.data(), bytes.size() - 8));
  uint32_t stored = 0;
  for (int i = 0; i < 4; ++i) stored |= static_cast<uint32_t>(bytes[bytes.size() - 8 + static_cast<std::size_t>(i)]) << (8 * i);
  EXPECT_EQ(crc, stored);
}

TEST(Checkpoint, RejectsCorruptionNamingTheProblem) {
  const std::vector<uint8_t> good = serialize_checkpoint(sample());
  EXPECT_NO_THROW(parse_checkpoint(good, "test.ckpt"));
  {
    std::vector<uint8_t> b = good;
    b[0] = 'X';
    expect_format_error(b, "bad magic");
  }
  {
    std::vector<uint8_t> b = good;
    b[8] = 9;
    expect_format_error(b, "version 9");
  }
  {
    std::vector<uint8_t> b(good.begin(), good.end() - 20);
    expect_format_error(b, "truncated");
  }
  {
    std::vector<uint8_t> b(good.begin(), good.begin() + 30);
    expect_format_error(b, "too short");
  }
  {
    std::vector<uint8_t> b = good;
    b[b.size() - 20] ^= 0x01;  // a bit of tensor data
    expect_format_error(b, "checksum");
  }
  {
    std::vector<uint8_t> b = good;
    put_u64(b, 32, 1u << 30);  // metadata size beyond the file
    refresh_crc(b);
    expect_format_error(b, "metadata section");
  }
  {
    // The first table entry's data offset (after its name, kind, rank and dims) moved off alignment.
    std::vector<uint8_t> b = good;
    uint64_t table = 0;
    for (int i = 0; i < 8; ++i) table |= uint64_t{b[40 + static_cast<std::size_t>(i)]} << (8 * i);
    const std::size_t offset_at = static_cast<std::size_t>(table) + 2 + std::strlen("conv1.weight") + 2 + 4 * 8;
    uint64_t offset = 0;
    for (int i = 0; i < 8; ++i) offset |= uint64_t{b[offset_at + static_cast<std::size_t>(i)]} << (8 * i);
    put_u64(b, offset_at, offset + 4);
    refresh_crc(b);
    expect_format_error(b, "conv1.weight");
  }
  {
    // Data size inconsistent with the shape.
    std::vector<uint8_t> b = good;
    uint64_t table = 0;
    for (int i = 0; i < 8; ++i) table |= uint64_t{b[40 + static_cast<std::size_t>(i)]} << (8 * i);
    const std::size_t size_at = static_cast<std::size_t>(table) + 2 + std::strlen("conv1.weight") + 2 + 4 * 8 + 8;
    put_u64(b, size_at, 12);
    refresh_crc(b);
    expect_format_error(b, "needs 72 bytes");
  }
  {
    std::vector<uint8_t> b = good;
    b[61] = 2;  // the reserved u32 at byte 60
    refresh_crc(b);
    expect_format_error(b, "reserved header field at byte 60 is 512, expected 0");
  }
  Checkpoint dup = sample();
  dup.add(CheckpointTensorKind::parameter, "conv1.weight", Tensor({1}));
  EXPECT_THROW(serialize_checkpoint(dup), ArgumentError);
  EXPECT_THROW(load_checkpoint("/nonexistent/dir/model.ckpt"), IoError);
}

TEST(Checkpoint, ModelStateLoadsStrictlyOrPartially) {
  ModelSpec spec;
  spec.arch = "resnet8";
  spec.width = 4;
  spec.seed = 1;
  auto source = make_model(spec);
  Checkpoint ck;
  add_model_state(ck, *source);
  spec.seed = 2;
  auto target = make_model(spec);
  const LoadReport report = load_model_state(*target, ck);
  EXPECT_TRUE(report.missing.empty());
  EXPECT_TRUE(report.unexpected.empty());
  const auto ps = source->named_parameters(), pt = target->named_parameters();
  for (std::size_t i = 0; i < ps.size(); ++i)
    for (int64_t k = 0; k < ps[i].parameter->value.numel(); ++k)
      ASSERT_EQ(ps[i].parameter->value[k], pt[i].parameter->value[k]) << ps[i].name;

  // A model with an extra parameter (like a quantizer's step size): strict load names it.
  Checkpoint partial = ck;
  partial.entries.erase(partial.entries.begin());  // drop conv1.weight
  try {
    load_model_state(*target, partial, {}, "float.ckpt");
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("conv1.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("float.ckpt"), std::string::npos) << e.what();
  }
  LoadOptions tolerant;
  tolerant.allow_missing = true;
  EXPECT_EQ(load_model_state(*target, partial, tolerant).missing, (std::vector<std::string>{"conv1.weight"}));

  Checkpoint extra = ck;
  extra.add(CheckpointTensorKind::parameter, "layer9.conv.weight", Tensor({1}));
  EXPECT_THROW(load_model_state(*target, extra), FormatError);
  tolerant.allow_unexpected = true;
  EXPECT_EQ(load_model_state(*target, extra, tolerant).unexpected, (std::vector<std::string>{"layer9.conv.weight"}));

  // Shape mismatch: wider model.
  spec.width = 8;
  auto wide = make_model(spec);
  try {
    load_model_state(*wide, ck, tolerant, "narrow.ckpt");
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("conv1.weight' has shape [4, 3, 3, 3], the model expects [8, 3, 3, 3]"),
              std::string::npos)
        << e.what();
  }
}

TEST(Checkpoint, OptimizerStateRoundTrips) {
  Parameter w("w", Tensor({2}, 1.0f));
  Sgd a({{"w", &w}}, SgdOptions{});
  w.grad.fill(0.5f);
  a.step(0.1f);
  Checkpoint ck;
  add_optimizer_state(ck, a, "main");
  EXPECT_NE(ck.find(CheckpointTensorKind::optimizer_state, "main/w.momentum"), nullptr);
  Sgd b({{"w", &w}}, SgdOptions{});
  load_optimizer_state(b, ck, "main");
  EXPECT_EQ(b.steps(), 1);
  EXPECT_THROW(load_optimizer_state(b, ck, "strengths"), FormatError);
}

}  // namespace
}  // namespace bitmix::nn
