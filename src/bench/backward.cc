// Backward-pass measurements: the dense engine's forward + backward against its own FLOP count,
// its peak memory, and the PyTorch autograd peer. Used by `attnkit bench backward`.
#include "attnkit/bench/backward.h"

#include <stdlib.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

#include "attnkit/bench/dense.h"
#include "attnkit/core/checked.h"
#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "attnkit/core/tensor.h"
#include "attnkit/kernels/dense.h"
#include "attnkit/kernels/dense_backward.h"
#include "nlohmann/json.hpp"

namespace attnkit::bench {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median seconds of `repeats` runs of fn after one warm-up run.
double Median(const std::function<void()>& fn, int repeats) {
  fn();
  std::vector<double> t;
  for (int r = 0; r < std::max(1, repeats); ++r) {
    const double t0 = Now();
    fn();
    t.push_back(Now() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void Fill(Tensor<float>& t, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = dist(rng);
}

// /proc/self/statm resident pages × page size, or -1.
int64_t Resident() {
  std::ifstream in("/proc/self/statm");
  int64_t size = 0, resident = -1;
  if (!(in >> size >> resident)) return -1;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

struct DenseCaseSpec {
  std::string name, mask;
  int64_t seqlen, hq, hkv;
};

BackwardCase TimeDense(const DenseCaseSpec& c, const BackwardBenchConfig& cfg) {
  constexpr int64_t d = 128;
  BackwardCase r;
  r.family = "dense";
  r.name = c.name;
  r.seqlen = c.seqlen;
  r.num_heads_q = c.hq;
  r.num_heads_kv = c.hkv;
  r.head_dim = d;
  const MaskPtr mask = ParseMaskSpec(c.mask);
  r.description = (mask ? mask->Describe() : std::string("none"));
  Tensor<float> q(1, c.hq, c.seqlen, d), k(1, c.hkv, c.seqlen, d), v(1, c.hkv, c.seqlen, d);
  Tensor<float> o(1, c.hq, c.seqlen, d), lse(1, c.hq, c.seqlen, 1), dout(1, c.hq, c.seqlen, d);
  Tensor<float> dq(1, c.hq, c.seqlen, d), dk(1, c.hkv, c.seqlen, d), dv(1, c.hkv, c.seqlen, d);
  Fill(q, 1);
  Fill(k, 2);
  Fill(v, 3);
  Fill(dout, 4);
  DenseOptions opt;
  opt.mask = mask.get();
  opt.num_threads = cfg.threads;
  r.forward_flops = DenseFlops(1, c.hq, c.seqlen, c.seqlen, d, d, mask.get());
  r.backward_flops = DenseBackwardFlops(1, c.hq, c.seqlen, c.seqlen, d, d, mask.get());
  const DenseGrads grads{dq.view(), dk.view(), dv.view()};
  r.forward_ms =
      1e3 * Median([&] { DenseForward(q.view(), k.view(), v.view(), o.view(), opt, lse.view()); },
                   cfg.repeats);
  r.backward_ms = 1e3 * Median(
                            [&] {
                              DenseBackward(q.view(), k.view(), v.view(), o.view(), lse.view(),
                                            dout.view(), grads, opt);
                            },
                            cfg.repeats);
  r.forward_gflops = r.forward_flops / r.forward_ms / 1e6;
  r.backward_gflops = r.backward_flops / r.backward_ms / 1e6;
  r.total_gflops = (r.forward_flops + r.backward_flops) / (r.forward_ms + r.backward_ms) / 1e6;
  return r;
}

// The peer: PyTorch autograd of naive attention, heads in chunks (see RunTorchAttentionPeer).
constexpr const char* kTorchPeer = R"PY(
import json, sys, time
import torch
seqlen, hq, hkv, d, chunk, threads, repeats, warmup = (int(x) for x in sys.argv[1:9])
mask_spec = sys.argv[9]
torch.set_num_threads(threads)
torch.manual_seed(0)
g = hq // hkv
i = torch.arange(seqlen).unsqueeze(1)
j = torch.arange(seqlen).unsqueeze(0)
allowed = j <= i
if mask_spec.startswith("window:"):
    allowed = allowed & (i - j < int(mask_spec.split(":")[1]))
scale = d ** -0.5
q = torch.randn(1, hq, seqlen, d)
k = torch.randn(1, hkv, seqlen, d)
v = torch.randn(1, hkv, seqlen, d)
do = torch.randn(1, hq, seqlen, d)

def run():
    fwd = bwd = 0.0
    for h0 in range(0, hq, chunk):
        h1 = min(hq, h0 + chunk)
        qc = q[:, h0:h1].clone().requires_grad_()
        kv_heads = [h // g for h in range(h0, h1)]
        kc = k[:, kv_heads].clone().requires_grad_()  # the group's K/V repeated per query head
        vc = v[:, kv_heads].clone().requires_grad_()
        t0 = time.perf_counter()
        s = torch.matmul(qc, kc.transpose(-1, -2)) * scale
        s = s.masked_fill(~allowed, float("-inf"))
        p = torch.softmax(s, dim=-1)
        o = torch.matmul(p, vc)
        t1 = time.perf_counter()
        o.backward(do[:, h0:h1])
        t2 = time.perf_counter()
        fwd += t1 - t0
        bwd += t2 - t1
        del s, p, o, qc, kc, vc
    return fwd, bwd

if warmup:
    run()
times = [run() for _ in range(repeats)]
times.sort(key=lambda t: t[0] + t[1])
f, b = times[len(times) // 2]
print(json.dumps({"forward_ms": 1e3 * f, "backward_ms": 1e3 * b, "torch": torch.__version__,
                  "threads": torch.get_num_threads()}))
)PY";

}  // namespace

bool RunTorchAttentionPeer(const BackwardBenchConfig& config, const std::string& mask,
                           int64_t seqlen, int64_t num_heads_q, int64_t num_heads_kv,
                           int64_t head_dim, double* forward_ms, double* backward_ms,
                           std::string* note) {
  // autograd of the naive form keeps S, the masked S, P and (during backward) dP and dS: about
  // five N × N f32 tensors per head at once, plus the bool mask.
  const double per_head = 5.0 * 4.0 * static_cast<double>(seqlen) * static_cast<double>(seqlen);
  const double budget = config.peer_memory_fraction * static_cast<double>(MemAvailableBytes()) -
                        1.0 * static_cast<double>(seqlen) * static_cast<double>(seqlen);
  const int64_t chunk = std::min<int64_t>(num_heads_q, static_cast<int64_t>(budget / per_head));
  if (chunk < 1) {
    std::ostringstream os;
    os << "skipped: one head needs ~" << per_head / 1e9 << " GB of N×N tensors, "
       << "more than " << config.peer_memory_fraction << " of MemAvailable";
    *note = os.str();
    return false;
  }
  // Long cases (a 16384² score matrix per head) run once without a warm-up: ~10 s per head.
  const int repeats = seqlen > 8192 ? 1 : std::max(1, config.repeats);
  char path[] = "/tmp/attnkit_torch_peer_XXXXXX.py";
  const int fd = mkstemps(path, 3);
  if (fd < 0) {
    *note = "skipped: cannot write the peer script to /tmp";
    return false;
  }
  const std::string script = kTorchPeer;
  const bool wrote = write(fd, script.data(), script.size()) == static_cast<ssize_t>(script.size());
  close(fd);
  std::string output;
  int status = -1;
  if (wrote) {
    std::ostringstream cmd;
    cmd << config.python << " " << path << " " << seqlen << " " << num_heads_q << " "
        << num_heads_kv << " " << head_dim << " " << chunk << " " << ResolveThreads(config.threads)
        << " " << repeats << " " << (repeats > 1 ? 1 : 0) << " " << mask << " 2>&1";
    if (FILE* p = popen(cmd.str().c_str(), "r")) {
      char buf[4096];
      while (fgets(buf, sizeof buf, p)) output += buf;
      status = pclose(p);
    }
  }
  unlink(path);
  const size_t brace = output.rfind('{');
  if (status != 0 || brace == std::string::npos) {
    const std::string last = output.substr(output.find_last_of('\n', output.size() - 2) + 1);
    *note = "peer failed (" + config.python + "): " + (last.empty() ? "no output" : last);
    while (!note->empty() && note->back() == '\n') note->pop_back();
    return false;
  }
  const auto j = nlohmann::json::parse(output.substr(brace));
  *forward_ms = j.at("forward_ms").get<double>();
  *backward_ms = j.at("backward_ms").get<double>();
  std::ostringstream os;
  os << "torch " << j.at("torch").get<std::string>() << ", " << j.at("threads").get<int>()
     << " threads, heads in chunks of " << chunk << ", "
     << (repeats > 1 ? "median of " + std::to_string(repeats) + " after a warm-up"
                     : std::string("one run, no warm-up"));
  *note = os.str();
  return true;
}

std::vector<BackwardCase> BenchDenseBackward(const BackwardBenchConfig& config) {
  Require(config.repeats >= 1, "BenchDenseBackward: repeats must be >= 1, got ", config.repeats);
  const int64_t n = config.quick ? 512 : 4096, n_win = config.quick ? 2048 : 16384;
  const int64_t win = config.quick ? 256 : 1024;
  const std::vector<DenseCaseSpec> specs = {
      {"causal_" + std::to_string(n) + "_mha", "causal", n, 8, 8},
      {"causal_" + std::to_string(n) + "_gqa", "causal", n, 32, 8},
      {"window" + std::to_string(win) + "_" + std::to_string(n_win),
       "window:" + std::to_string(win), n_win, 8, 8},
  };
  std::vector<BackwardCase> out;
  for (const auto& s : specs) {
    BackwardCase r = TimeDense(s, config);
    if (s.mask != "causal") {  // predicted from causal (8/8 heads) by the ratio of pairs
      const BackwardCase& base = out.front();
      r.predicted_backward_ms = base.backward_ms * r.backward_flops / base.backward_flops;
      r.predicted_from = base.name;
    }
    if (config.peer) {
      r.peer_ran = RunTorchAttentionPeer(config, s.mask, s.seqlen, s.hq, s.hkv, 128,
                                         &r.peer_forward_ms, &r.peer_backward_ms, &r.peer_note);
    }
    out.push_back(r);
  }
  return out;
}

BackwardPeakMemory MeasureDenseBackwardPeakMemory(int64_t seqlen, int threads) {
  Require(seqlen > 0, "MeasureDenseBackwardPeakMemory: seqlen must be positive, got ", seqlen);
  constexpr int64_t d = 128;
  BackwardPeakMemory r;
  r.seqlen = seqlen;
  Tensor<float> q(1, 1, seqlen, d), k(1, 1, seqlen, d), v(1, 1, seqlen, d), o(1, 1, seqlen, d);
  Tensor<float> lse(1, 1, seqlen, 1), dout(1, 1, seqlen, d), dq(1, 1, seqlen, d);
  Tensor<float> dk(1, 1, seqlen, d), dv(1, 1, seqlen, d);  // zeroed: every page is resident
  Fill(q, 1);
  Fill(k, 2);
  Fill(v, 3);
  Fill(dout, 4);
  r.tensor_bytes = 4.0 * static_cast<double>(8 * q.numel() + lse.numel());
  const MaskPtr causal = CausalMask();
  DenseOptions opt;
  opt.mask = causal.get();
  opt.num_threads = threads;
  DenseForward(q.view(), k.view(), v.view(), o.view(), opt, lse.view());
  // The forward's pooled scratch and freed heap go back first, so that "before" is the tensors
  // and the process; the sampler then sees what the backward call itself adds.
  ReleaseScratchMemory();
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  const int64_t before = Resident();
  std::atomic<bool> stop{false};
  std::atomic<int64_t> peak{before};
  std::thread sampler([&] {
    while (!stop.load()) {
      const int64_t now = Resident();
      if (now > peak.load()) peak.store(now);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  const double t0 = Now();
  DenseBackward(q.view(), k.view(), v.view(), o.view(), lse.view(), dout.view(),
                DenseGrads{dq.view(), dk.view(), dv.view()}, opt);
  r.seconds = Now() - t0;
  stop.store(true);
  sampler.join();
  if (before >= 0) {
    r.measured = true;
    r.rss_before_bytes = static_cast<double>(before);
    r.peak_bytes = static_cast<double>(peak.load());
    r.extra_bytes = r.peak_bytes - r.rss_before_bytes;
  }
  return r;
}

}  // namespace attnkit::bench
