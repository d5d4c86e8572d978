// bitmix import: an ONNX float CNN -> a float checkpoint of a graph model (docs/onnx.md), which
// train --init, search --init and the later stages read like any other.
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/checkpoint.hpp"
#include "bitmix/nn/run_metadata.hpp"
#include "cli.hpp"
#include "model_options.hpp"
#if BITMIX_HAVE_ONNX
#include "deploy/onnx_import.hpp"
#endif

namespace bitmix::cli {
namespace {

#if BITMIX_HAVE_ONNX
std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

std::vector<float> float_list(const ArgParser& args, const char* name) {
  std::vector<float> out;
  for (const std::string& s : split_list(args.get_string(name))) {
    char* end = nullptr;
    const float v = std::strtof(s.c_str(), &end);
    if (s.empty() || *end != '\0' || !std::isfinite(v))
      throw UsageError(fmt::format("--{} '{}': expected comma-separated numbers, one per channel", name,
                                   args.get_string(name)));
    out.push_back(v);
  }
  return out;
}
#endif

int run_import(int argc, char** argv) {
  // `bitmix import model.onnx --out DIR`: the file may come first, without a flag.
  std::vector<char*> rest(argv, argv + argc);
  std::string file;
  if (argc > 1 && argv[1][0] != '-') {
    file = argv[1];
    rest.erase(rest.begin() + 1);
  }
  ArgParser args("import", "Read a float CNN from an ONNX file (opsets 11-17; operators in docs/onnx.md) and write "
                           "it as a float checkpoint DIR/model.ckpt of a graph model, for train --init and search "
                           "--init. Anything the importer does not support is refused, naming the node, operator "
                           "and attribute; nothing is written then.");
  args.option("onnx", "FILE", "the ONNX model (or give it as the first argument)");
  args.option("mean", "M1,M2,..", "per-channel input mean of pixels in [0, 1] (default: the file's bitmix.mean "
                                  "property, else 0)");
  args.option("std", "S1,S2,..", "per-channel input std (default: the file's bitmix.std property, else 1)");
  args.option("class-names", "A,B,..", "class names (default: the file's bitmix.class_names property)");
  args.option("data-name", "NAME", "the data set the model was trained on, recorded in the metadata", "onnx");
  args.common_options(/*with_data=*/false, /*with_out=*/true);
  if (!args.parse(static_cast<int>(rest.size()), rest.data())) return 0;
  const uint64_t seed = args.apply_common();
  if (args.given("onnx")) {
    if (!file.empty()) throw UsageError("give the ONNX file once (as the first argument or with --onnx)");
    file = args.get_string("onnx");
  }
  if (file.empty()) throw UsageError("no ONNX file: bitmix import model.onnx --out DIR");
#if BITMIX_HAVE_ONNX
  deploy::OnnxImport imported = deploy::import_onnx(file);
  const nn::ModelSpec& spec = imported.spec;
  nn::RunMetadata run;
  run.model = spec;
  run.data.name = args.get_string("data-name");
  run.data.channels = spec.in_channels;
  run.data.height = spec.image_height;
  run.data.width = spec.image_width;
  run.data.classes = spec.num_classes;
  run.data.class_names = args.given("class-names") ? split_list(args.get_string("class-names")) : imported.class_names;
  if (!run.data.class_names.empty() && static_cast<int64_t>(run.data.class_names.size()) != spec.num_classes)
    throw UsageError(fmt::format("{} class names for a model with {} classes", run.data.class_names.size(),
                                 spec.num_classes));
  data::Normalization norm = imported.normalization;
  if (args.given("mean")) norm.mean = float_list(args, "mean");
  if (args.given("std")) norm.stddev = float_list(args, "std");
  const auto channels = static_cast<std::size_t>(spec.in_channels);
  if (norm.mean.empty()) norm.mean.assign(channels, 0.0f);
  if (norm.stddev.empty()) norm.stddev.assign(channels, 1.0f);
  if (norm.mean.size() != channels || norm.stddev.size() != channels)
    throw UsageError(fmt::format("{} means and {} standard deviations for {} input channels", norm.mean.size(),
                                 norm.stddev.size(), channels));
  run.normalization = norm;
  run.provenance = nn::Provenance::current("import", command_line(argc, argv), seed, file);
  run.provenance.notes = fmt::format("imported from ONNX (opset {}, producer '{}')", imported.opset, imported.producer);
  nn::Checkpoint ck;
  nn::set_run_metadata(ck, run);  // validates before anything is written
  nn::add_model_state(ck, *imported.model);
  const std::filesystem::path out = args.get_string("out");
  std::filesystem::create_directories(out);
  const std::filesystem::path path = out / "model.ckpt";
  nn::save_checkpoint(path, ck);
  const auto layers = imported.model->quantizable_layers({spec.in_channels, spec.image_height, spec.image_width});
  std::cout << fmt::format("imported {}: {} nodes, {} quantizable layers, {} parameters, input {}x{}x{}, {} classes\n",
                           file, spec.graph->nodes.size(), layers.size(), imported.model->parameter_count(),
                           spec.in_channels, spec.image_height, spec.image_width, spec.num_classes);
  for (const std::string& note : imported.notes) std::cout << "  " << note << '\n';
  std::cout << fmt::format("wrote {}\n", path.string());
  return 0;
#else
  (void)seed;
  throw Error("this bitmix was built without ONNX support: install libonnx-dev and libprotobuf-dev "
              "(scripts/setup-debian.sh) and reconfigure (BITMIX_WITH_ONNX=AUTO or ON)");
#endif
}

const bool registered = register_command({"import", "read a float CNN from ONNX into a checkpoint", run_import});

}  // namespace
}  // namespace bitmix::cli
