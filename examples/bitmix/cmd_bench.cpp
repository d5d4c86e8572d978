// bitmix bench: latency of an integer .bmx model, op by op.
#include <fmt/format.h>

#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/file_io.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/core/timer.hpp"
#include "bitmix/runtime/session.hpp"
#include "cli.hpp"

namespace bitmix::cli {
namespace {

std::string bits_of(const runtime::Model& model, const runtime::Op& op) {
  const auto& values = model.values();
  switch (op.kind) {
    case runtime::OpKind::conv2d:
    case runtime::OpKind::linear: {
      const runtime::ValueInfo& in = values[static_cast<std::size_t>(op.inputs[0])];
      const runtime::ValueInfo& out = values[static_cast<std::size_t>(op.output)];
      std::string text = fmt::format("W{}A{}", op.conv().weights.spec().bits, in.quant.bits);
      if (out.kind == runtime::ValueKind::packed) text += fmt::format("->A{}", out.quant.bits);
      return text;
    }
    case runtime::OpKind::quantize:
      return fmt::format("A{}", op.quantize().quant.bits);
    default:
      return "fp32";
  }
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

int run_bench(int argc, char** argv) {
  ArgParser args("bench",
                 "Measure the latency of an integer .bmx model on random images: a table of every op (output shape, "
                 "bits, mean time, share of the total) and the end-to-end median and mean.");
  args.option("model", "FILE", "the .bmx model", "", true);
  args.option("batch", "N", "images per run", "1");
  args.option("threads", "N", "worker threads (default: BITMIX_NUM_THREADS or all hardware threads)");
  args.option("seconds", "S", "minimum measuring time", "2");
  args.option("min-runs", "N", "minimum measured runs", "10");
  args.option("warmup", "N", "untimed runs first", "3");
  args.option("json", "FILE", "also write the results as JSON", "");
  args.choice("float-gemm", {"never", "narrow", "exact"},
              "convolutions run as an exact float GEMM instead of bit-serial: never, those reading <= 4 channels "
              "(the first layer), or all where the accumulator provably stays exact",
              "narrow");
  args.choice("kernel-family", {"auto", "popcount", "int8", "lut"},
              "kernel family of every convolution: auto (BITMIX_KERNEL_FAMILY, else per layer by the cost model) or "
              "one family for all",
              "auto");
  if (!args.parse(argc, argv)) return 0;
  if (args.given("threads")) set_num_threads(static_cast<int>(args.get_int("threads", 1, 1024)));
  const int64_t batch = args.get_int("batch", 1, 1 << 16);
  const double seconds = args.get_double("seconds", 0.0, 3600.0);
  const int64_t min_runs = args.get_int("min-runs", 1, 1 << 30);

  const runtime::Model model = runtime::Model::load(args.get_string("model"));
  runtime::SessionOptions options;
  const std::string gemm = args.get_string("float-gemm");
  options.float_gemm = gemm == "never"    ? runtime::FloatGemmPolicy::never
                       : gemm == "narrow" ? runtime::FloatGemmPolicy::narrow_inputs
                                          : runtime::FloatGemmPolicy::when_exact;
  options.kernel_family = kernels::parse_kernel_family(args.get_string("kernel-family"), "--kernel-family");
  runtime::Session session(model, options);
  const Shape& s = model.info().input_shape;
  Tensor images({batch, s[0], s[1], s[2]});
  Rng rng(1);
  for (float& v : images.values()) v = static_cast<float>(rng.below(256)) / 255.0f;
  Tensor logits;
  for (int64_t i = 0, n = args.get_int("warmup", 0, 1 << 20); i < n; ++i) session.run(images, logits);
  session.reset_timings();
  std::vector<double> runs;
  std::vector<std::vector<double>> per_op(model.ops().size());
  Stopwatch total;
  while (static_cast<int64_t>(runs.size()) < min_runs || total.seconds() < seconds) {
    session.run(images, logits);
    runs.push_back(session.last_run_seconds());
    for (std::size_t i = 0; i < per_op.size(); ++i) per_op[i].push_back(session.timings()[i].last_seconds);
  }
  const double mean_run = [&] {
    double sum = 0;
    for (double r : runs) sum += r;
    return sum / static_cast<double>(runs.size());
  }();
  // Medians: robust against other processes on a shared machine; the shares are of their sum.
  std::vector<double> op_median(per_op.size());
  double op_sum = 0;
  for (std::size_t i = 0; i < per_op.size(); ++i) op_sum += op_median[i] = median(per_op[i]);

  std::cout << fmt::format("{} ({}), batch {}, {} threads, {} path, {} runs\n", model.info().name,
                           args.get_string("model"), batch, num_threads(), isa_name(active_isa()), runs.size());
  std::cout << fmt::format("{:<4} {:<26} {:<40} {:<16} {:<10} {:>10} {:>10} {:>7}\n", "#", "op", "what", "output",
                           "bits", "median us", "mean us", "share");
  nlohmann::ordered_json ops = nlohmann::ordered_json::array();
  for (std::size_t i = 0; i < model.ops().size(); ++i) {
    const runtime::Op& op = model.ops()[i];
    const runtime::OpTiming& t = session.timings()[i];
    const double mean = t.total_seconds / static_cast<double>(t.calls);
    const Shape& out = model.values()[static_cast<std::size_t>(op.output)].shape;
    std::string what = runtime::describe(model, op);
    if (session.runs_as_float_gemm(i)) what += " [gemm]";
    const kernels::KernelFamily family = session.kernel_family(i);
    if (family != kernels::KernelFamily::automatic) what += fmt::format(" [{}]", kernels::kernel_family_name(family));
    if (session.skips(i)) what += " [fused]";
    std::cout << fmt::format("{:<4} {:<26} {:<40} {:<16} {:<10} {:>10.1f} {:>10.1f} {:>6.1f}%\n", i, op.name, what,
                             runtime::shape_text(out), bits_of(model, op), op_median[i] * 1e6, mean * 1e6,
                             100.0 * op_median[i] / op_sum);
    ops.push_back({{"name", op.name},
                   {"kind", std::string(runtime::op_kind_name(op.kind))},
                   {"what", runtime::describe(model, op)},
                   {"shape", out},
                   {"bits", bits_of(model, op)},
                   {"median_us", op_median[i] * 1e6},
                   {"mean_us", mean * 1e6},
                   {"share", op_median[i] / op_sum},
                   {"float_gemm", session.runs_as_float_gemm(i)},
                   {"kernel_family", family == kernels::KernelFamily::automatic
                                         ? std::string()
                                         : std::string(kernels::kernel_family_name(family))},
                   {"skipped", session.skips(i)}});
  }
  const double med = median(runs);
  std::cout << fmt::format("total: median {:.1f} us, mean {:.1f} us per batch of {} ({:.1f} images/s; sum of op medians {:.1f} us)\n",
                           med * 1e6, mean_run * 1e6, batch, static_cast<double>(batch) / med, op_sum * 1e6);
  if (const std::string path = args.get_string("json"); !path.empty()) {
    nlohmann::ordered_json j;
    j["model"] = model.info().name;
    j["file"] = args.get_string("model");
    j["batch"] = batch;
    j["threads"] = num_threads();
    j["isa"] = std::string(isa_name(active_isa()));
    j["runs"] = runs.size();
    j["median_us"] = med * 1e6;
    j["mean_us"] = mean_run * 1e6;
    j["ops"] = ops;
    write_file_atomic(path, j.dump(2) + "\n");
  }
  return 0;
}

const bool registered =
    register_command({"bench", "measure a .bmx model's latency, with a per-op table (shape, bits, time, share)", run_bench});

}  // namespace
}  // namespace bitmix::cli
