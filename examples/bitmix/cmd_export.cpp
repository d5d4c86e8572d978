// bitmix export: compile a fine-tuned (QAT) checkpoint and its BitConfig into an integer .bmx
// model for the bit-serial runtime.
#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <optional>

#include "bitmix/core/error.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/core/version.hpp"
#include "bitmix/deploy/compiler.hpp"
#include "bitmix/runtime/model.hpp"
#include "cli.hpp"
#if BITMIX_HAVE_ONNX
#include "deploy/onnx_import.hpp"
#endif

namespace bitmix::cli {
namespace {

int run_export(int argc, char** argv) {
  ArgParser args("export",
                 "Compile a quantization-aware checkpoint into an integer .bmx model: weights packed into bit planes, "
                 "BatchNorm folded into per-channel scales and biases, each activation quantizer fused into the "
                 "previous layer as requantization (docs/runtime.md). Layers that cannot run on the integer kernels "
                 "are refused with a message naming them.");
  args.option("init", "CKPT", "the fine-tuned checkpoint (bitmix train --bits ... or --quant ...)", "", true);
  args.option("bits", "FILE",
              "the BitConfig it was fine-tuned with (default: the one the quantized checkpoint records)");
  args.option("out", "FILE", "the .bmx (or, with --format onnx, .onnx) model to write (atomically)", "", true);
  args.choice("format", {"bmx", "onnx"},
              "bmx: the integer runtime's model; onnx: ONNX with QuantizeLinear/DequantizeLinear pairs (graph models, "
              "docs/onnx.md)",
              "bmx");
  args.option("name", "NAME", "model name stored in the file (default: <arch>-w<W>a<A> or <arch>-mixed)");
  args.option("threads", "N", "worker threads (default: BITMIX_NUM_THREADS or all hardware threads)");
  if (!args.parse(argc, argv)) return 0;
  if (args.given("threads")) set_num_threads(static_cast<int>(args.get_int("threads", 1, 1024)));

  const std::filesystem::path out = args.get_string("out");
  std::optional<std::filesystem::path> bits;
  if (args.given("bits")) bits = args.get_string("bits");
  deploy::QatModel qat = deploy::load_qat_model(args.get_string("init"), bits);
  deploy::CompileOptions options = qat.compile_options();
  if (args.given("name")) options.name = args.get_string("name");
  if (args.get_string("format") == "onnx") {
#if BITMIX_HAVE_ONNX
    deploy::OnnxExportOptions o;
    o.mean = options.mean;
    o.stddev = options.stddev;
    o.class_names = options.class_names;
    o.bit_config_json = qat.config.to_json();
    o.producer_version = std::string(version());
    const std::string bytes = deploy::export_onnx_qdq(*qat.model, qat.spec, o);
    write_file_atomic(out, bytes);
    std::cout << fmt::format("{}: ONNX QDQ, {}\nwrote {} ({:.1f} KiB)\n", options.name, qat.config.summary(),
                             out.string(), static_cast<double>(bytes.size()) / 1024.0);
    return 0;
#else
    throw Error("this bitmix was built without ONNX support: install libonnx-dev and libprotobuf-dev "
                "(scripts/setup-debian.sh) and reconfigure");
#endif
  }
  deploy::CompileReport report;
  const runtime::Model model = deploy::compile(*qat.model, qat.image_shape(), options, &report);
  model.save(out);

  const runtime::ModelStats s = model.stats();
  const auto file_bytes = static_cast<double>(std::filesystem::file_size(out));
  const double params_kib = static_cast<double>(s.packed_weight_bytes + s.epilogue_bytes) / 1024.0;
  const double float_kib = static_cast<double>(s.float_parameter_bytes) / 1024.0;
  std::cout << fmt::format("{}: {} ops, {} weights; {}\n", model.info().name, model.ops().size(), s.weight_count,
                           qat.config.summary());
  std::cout << fmt::format("  parameters {:.1f} KiB packed vs {:.1f} KiB fp32 ({:.1f}x smaller); {:.3f} GBitOPs/image\n",
                           params_kib, float_kib, float_kib / params_kib, static_cast<double>(s.bitops) * 1e-9);
  for (const std::string& note : report.notes) std::cout << "  note: " << note << '\n';
  std::cout << fmt::format("wrote {} ({:.1f} KiB)\n", out.string(), file_bytes / 1024.0);
  return 0;
}

const bool registered =
    register_command({"export", "compile a quantized checkpoint + BitConfig into an integer .bmx model", run_export});

}  // namespace
}  // namespace bitmix::cli
