// bitmix_nn_bench: training and inference throughput of the CIFAR ResNets (batch 128, images per
// second) for bitmix and, in the same run, for PyTorch on the same machine
// (scripts/bench-train-pytorch.py under /usr/bin/python3, torch.set_num_threads equal to
// bitmix's); plus the fp32 GEMM on convolution-shaped products against oneDNN's sgemm when
// oneDNN is installed. At the end it prints bitmix / PyTorch ratios from the medians of the
// repetitions.
//
//   bitmix_nn_bench                                  # 2 threads, ResNet-20, 3 interleaved repetitions
//   BITMIX_BENCH_THREADS=1 bitmix_nn_bench --benchmark_filter=resnet20
//
// The training step is forward + softmax cross-entropy + backward + SGD (momentum 0.9, weight
// decay 5e-4), as in the PyTorch script. PyTorch is skipped with a message when it is absent.
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/sgemm.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/nn/functional.hpp"
#include "bitmix/nn/models.hpp"
#include "bitmix/nn/optimizer.hpp"

#if defined(BITMIX_BENCH_ONEDNN)
#include <oneapi/dnnl/dnnl.h>
#endif
#if defined(BITMIX_BENCH_OPENMP)
#include <omp.h>
#endif

namespace {

using namespace bitmix;

constexpr int64_t kBatch = 128;

int bench_threads() {
  const char* env = std::getenv("BITMIX_BENCH_THREADS");
  return env != nullptr && std::atoi(env) > 0 ? std::atoi(env) : 2;
}

std::unique_ptr<nn::Module> resnet(int depth) {
  nn::ModelSpec spec;
  spec.arch = fmt::format("resnet{}", depth);
  return nn::make_model(spec);
}

struct Inputs {
  Tensor images{Shape{kBatch, 3, 32, 32}};
  std::vector<int> labels = std::vector<int>(kBatch);
  Inputs() {
    Rng rng(1);
    for (float& v : images.values()) v = rng.normal();
    for (int64_t i = 0; i < kBatch; ++i) labels[static_cast<std::size_t>(i)] = static_cast<int>(rng.below(10));
  }
};

void bitmix_train(benchmark::State& state, int depth) {
  set_num_threads(bench_threads());
  auto model = resnet(depth);
  model->set_input_grad_needed(false);
  nn::SgdOptions so;
  so.momentum = 0.9f;
  so.weight_decay = 5e-4f;
  so.decay_all = true;  // as torch.optim.SGD(weight_decay=...) does
  nn::Sgd sgd(model->named_parameters(), so);
  Inputs in;
  Tensor grad;
  auto step = [&] {
    sgd.zero_grad();
    const Tensor& logits = model->forward(in.images);
    nn::softmax_cross_entropy(logits, in.labels, 0.0f, &grad);
    model->backward(grad);
    sgd.step(0.01f);
  };
  for (int i = 0; i < 2; ++i) step();  // allocate buffers, warm caches
  for (auto _ : state) step();
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["images_per_second"] = benchmark::Counter(static_cast<double>(state.iterations() * kBatch),
                                                           benchmark::Counter::kIsRate);
  state.counters["threads"] = num_threads();
}

void bitmix_infer(benchmark::State& state, int depth) {
  set_num_threads(bench_threads());
  auto model = resnet(depth);
  model->eval();
  Inputs in;
  for (int i = 0; i < 2; ++i) model->forward(in.images);
  for (auto _ : state) benchmark::DoNotOptimize(model->forward(in.images).data());
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["images_per_second"] = benchmark::Counter(static_cast<double>(state.iterations() * kBatch),
                                                           benchmark::Counter::kIsRate);
  state.counters["threads"] = num_threads();
}

// Runs the PyTorch script once per iteration; the iteration time is set from its measured rate
// so that the counters read like bitmix's.
void pytorch_peer(benchmark::State& state, int depth, bool train) {
  const char* python_env = std::getenv("BITMIX_PYTHON");
  const std::string python = python_env != nullptr ? python_env : "/usr/bin/python3";
  const std::string command = fmt::format("{} {}/scripts/bench-train-pytorch.py --depth {} --batch {} --threads {} "
                                          "--seconds 6 --phase {} 2>/dev/null",
                                          python, BITMIX_SOURCE_DIR, depth, kBatch, bench_threads(),
                                          train ? "train" : "infer");
  for (auto _ : state) {
    FILE* pipe = popen(command.c_str(), "r");
    std::string output;
    if (pipe != nullptr) {
      char buffer[512];
      while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
    }
    const int status = pipe != nullptr ? pclose(pipe) : -1;
    const std::string key = train ? "\"train_images_per_second\": " : "\"infer_images_per_second\": ";
    const std::size_t at = output.find(key);
    if (status != 0 || at == std::string::npos) {
      state.SkipWithError(fmt::format("PyTorch peer skipped: '{}' failed (exit status {}); is python3-torch installed?",
                                      command, status)
                              .c_str());
      return;
    }
    const double ips = std::atof(output.c_str() + at + key.size());
    state.SetIterationTime(static_cast<double>(kBatch) / ips);
    state.counters["images_per_second"] = ips;
    state.counters["threads"] = bench_threads();
  }
}

// ---- fp32 GEMM on the products of a ResNet-20 convolution for one image (M = out channels,
// N = pixels, K = in channels x 9), one thread, against oneDNN's sgemm.
struct GemmShape {
  int64_t m, n, k;
};
const GemmShape kGemmShapes[] = {{16, 1024, 144}, {32, 256, 288}, {64, 64, 576}, {128, 128, 128}, {256, 256, 256}};

void bitmix_sgemm(benchmark::State& state, GemmShape s) {
  set_num_threads(1);
  Rng rng(2);
  std::vector<float> a(static_cast<std::size_t>(s.m * s.k)), b(static_cast<std::size_t>(s.k * s.n)),
      c(static_cast<std::size_t>(s.m * s.n));
  for (float& v : a) v = rng.uniform(-1.0f, 1.0f);
  for (float& v : b) v = rng.uniform(-1.0f, 1.0f);
  for (auto _ : state) {
    sgemm(Transpose::no, Transpose::no, s.m, s.n, s.k, 1.0f, a.data(), s.k, b.data(), s.n, 0.0f, c.data(), s.n);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOPS"] = benchmark::Counter(static_cast<double>(2 * s.m * s.n * s.k) * static_cast<double>(state.iterations()) / 1e9,
                                                benchmark::Counter::kIsRate);
  state.SetLabel(std::string(isa_name(active_isa())));
}

#if defined(BITMIX_BENCH_ONEDNN)
void onednn_sgemm(benchmark::State& state, GemmShape s) {
#if defined(BITMIX_BENCH_OPENMP)
  omp_set_num_threads(1);
#endif
  Rng rng(2);
  std::vector<float> a(static_cast<std::size_t>(s.m * s.k)), b(static_cast<std::size_t>(s.k * s.n)),
      c(static_cast<std::size_t>(s.m * s.n));
  for (float& v : a) v = rng.uniform(-1.0f, 1.0f);
  for (float& v : b) v = rng.uniform(-1.0f, 1.0f);
  for (auto _ : state) {
    dnnl_sgemm('N', 'N', s.m, s.n, s.k, 1.0f, a.data(), s.k, b.data(), s.n, 0.0f, c.data(), s.n);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOPS"] = benchmark::Counter(static_cast<double>(2 * s.m * s.n * s.k) * static_cast<double>(state.iterations()) / 1e9,
                                                benchmark::Counter::kIsRate);
}
#endif

// Collects images_per_second / GFLOPS per benchmark to print medians and ratios at the end.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred || run.run_type != Run::RT_Iteration) continue;
      for (const char* counter : {"images_per_second", "GFLOPS"}) {
        const auto it = run.counters.find(counter);
        if (it != run.counters.end()) values_[run.run_name.function_name].push_back(it->second.value);
      }
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    auto median = [&](const std::string& name) -> double {
      auto it = values_.find(name);
      if (it == values_.end() || it->second.empty()) return 0.0;
      std::vector<double> v = it->second;
      std::sort(v.begin(), v.end());
      return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
    };
    std::printf("\nmedians over repetitions (%d threads for networks, 1 for GEMM):\n", bench_threads());
    for (const auto& [name, v] : values_) std::printf("  %-40s %10.1f  (%zu runs)\n", name.c_str(), median(name), v.size());
    std::printf("ratios bitmix / peer:\n");
    for (const auto& [name, v] : values_) {
      const std::size_t at = name.find("/bitmix");
      if (at == std::string::npos) continue;
      for (const char* peer : {"/pytorch", "/onednn"}) {
        const std::string peer_name = name.substr(0, at) + peer;
        const double ours = median(name), theirs = median(peer_name);
        if (theirs > 0) std::printf("  %-40s %6.2fx %s\n", name.substr(0, at).c_str(), ours / theirs, peer + 1);
      }
    }
  }

 private:
  std::map<std::string, std::vector<double>> values_;
};

void register_all() {
  for (int depth : {20, 56}) {
    benchmark::RegisterBenchmark(fmt::format("resnet{}/train/bitmix", depth).c_str(), bitmix_train, depth)
        ->Unit(benchmark::kMillisecond)
        ->MinTime(4.0)
        ->UseRealTime();
    benchmark::RegisterBenchmark(fmt::format("resnet{}/train/pytorch", depth).c_str(), pytorch_peer, depth, true)
        ->Unit(benchmark::kMillisecond)
        ->Iterations(1)
        ->UseManualTime();
    benchmark::RegisterBenchmark(fmt::format("resnet{}/infer/bitmix", depth).c_str(), bitmix_infer, depth)
        ->Unit(benchmark::kMillisecond)
        ->MinTime(3.0)
        ->UseRealTime();
    benchmark::RegisterBenchmark(fmt::format("resnet{}/infer/pytorch", depth).c_str(), pytorch_peer, depth, false)
        ->Unit(benchmark::kMillisecond)
        ->Iterations(1)
        ->UseManualTime();
  }
  for (const GemmShape& s : kGemmShapes) {
    const std::string shape = fmt::format("sgemm_m{}_n{}_k{}", s.m, s.n, s.k);
    benchmark::RegisterBenchmark((shape + "/bitmix").c_str(), bitmix_sgemm, s)->Unit(benchmark::kMicrosecond);
#if defined(BITMIX_BENCH_ONEDNN)
    benchmark::RegisterBenchmark((shape + "/onednn").c_str(), onednn_sgemm, s)->Unit(benchmark::kMicrosecond);
#endif
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  // Defaults suited to a shared machine: repetitions interleaved at random, so a burst of load
  // from another process hits bitmix and its peers alike. Command-line flags override them.
  std::vector<char*> args(argv, argv + argc);
  std::string reps = "--benchmark_repetitions=3", interleave = "--benchmark_enable_random_interleaving=true";
  bool has_reps = false;
  for (int i = 1; i < argc; ++i) has_reps |= std::string(argv[i]).rfind("--benchmark_repetitions", 0) == 0;
  if (!has_reps) {
    args.insert(args.begin() + 1, reps.data());
    args.insert(args.begin() + 2, interleave.data());
  }
  int count = static_cast<int>(args.size());
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  benchmark::AddCustomContext("cpu", bitmix::cpu_summary());
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
