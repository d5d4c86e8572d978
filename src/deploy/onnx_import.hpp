#pragma once
// ONNX import: a float CNN in an ONNX file (opsets 11-17) becomes an nn graph model (arch
// "graph", nn/graph.hpp) with the file's weights. The operators and attributes accepted are
// listed in docs/onnx.md; anything else is a FormatError naming the node, the operator and the
// attribute, so a model is imported exactly or not at all.
//
// Built only when ONNX support is configured (BITMIX_WITH_ONNX: Debian's libonnx-dev and
// libprotobuf-dev); the target bitmix_onnx holds it, so the core libraries and their installed
// package do not depend on protobuf.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bitmix/data/loader.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/module.hpp"

namespace bitmix::deploy {

struct OnnxImport {
  nn::ModelSpec spec;                  // arch "graph", image shape and classes from the file
  std::unique_ptr<nn::Module> model;   // built from spec, holding the file's weights (eval mode)
  // From the model's metadata properties "bitmix.mean", "bitmix.std" (comma-separated, one per
  // channel) and "bitmix.class_names" (comma-separated); empty when absent.
  data::Normalization normalization;
  std::vector<std::string> class_names;
  int64_t opset = 0;
  std::string producer;               // producer_name and producer_version of the file
  std::vector<std::string> notes;     // what was folded or dropped, for the user
};

// Reads and converts `path`. Throws IoError when it cannot be read, FormatError for anything
// malformed or unsupported.
OnnxImport import_onnx(const std::filesystem::path& path);
// The same for bytes in memory; `source` names them in messages.
OnnxImport import_onnx_bytes(const std::string& bytes, std::string_view source);

}  // namespace bitmix::deploy
