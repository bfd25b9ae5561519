// Measurements of the backward passes, shared by `attnkit bench backward` and the visual guide.
//
// Each engine family contributes its cases through its own function returning BackwardCase rows
// (BenchDenseBackward here; the linear / recurrent families add theirs in their own files), and
// the front end prints them side by side with the sgemm ceiling measured in the same process.
// FLOPs follow FlashAttention's convention: a backward counts 2.5 × its forward's FLOPs (the dense
// kernel actually executes 3.5 ×: it recomputes S and dP in both passes), so forward + backward
// counts 3.5 × the forward. Times are medians over `repeats` runs after one warm-up run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace attnkit::bench {

struct BackwardBenchConfig {
  int threads = 0;   // 0 → GetNumThreads()
  int repeats = 3;   // timed runs per case (median)
  bool peer = true;  // also time PyTorch autograd of naive attention (where it fits)
  std::string python = "/usr/bin/python3";  // the interpreter with torch for the peer
  double peer_memory_fraction = 0.4;        // of MemAvailable the peer may use
  bool quick = false;                       // small shapes (tests, smoke runs)
};

// One measured case, whatever the family.
struct BackwardCase {
  std::string family;       // "dense", ...
  std::string name;         // e.g. "causal_4096_mha"
  std::string description;  // mask / variant, shape
  int64_t batch = 1, seqlen = 0, num_heads_q = 0, num_heads_kv = 0, head_dim = 0;
  double forward_flops = 0, backward_flops = 0;  // counted (backward = 2.5 × forward)
  double forward_ms = 0, backward_ms = 0;        // medians
  double forward_gflops = 0, backward_gflops = 0, total_gflops = 0;  // total = (f + b) / (f + b)
  // A prediction from another case (dense window: causal time × pair ratio); 0 = none.
  double predicted_backward_ms = 0;
  std::string predicted_from;
  // The peer (PyTorch autograd of naive attention), when it ran.
  bool peer_ran = false;
  double peer_forward_ms = 0, peer_backward_ms = 0;
  std::string peer_note;  // why it did not run, or how it ran (chunks of heads, threads)
};

// The dense engine's cases at head_dim 128: causal 4096 with 8/8 and 32/8 heads, causal sliding
// window 1024 at 16384 (8/8 heads, with the time its pair fraction predicts from causal 4096).
// `quick`: 512 / 2048 tokens.
std::vector<BackwardCase> BenchDenseBackward(const BackwardBenchConfig& config);

// Peak resident memory of one dense causal backward call (1 head, head_dim 128, f32): the
// tensors (q, k, v, out, lse, dout, dq, dk, dv; allocated and resident before the call) and what
// the call adds beyond the resident set before it (extra = peak − before), sampled every ms.
struct BackwardPeakMemory {
  int64_t seqlen = 0;
  double tensor_bytes = 0, rss_before_bytes = 0, peak_bytes = 0, extra_bytes = 0, seconds = 0;
  bool measured = false;
};
BackwardPeakMemory MeasureDenseBackwardPeakMemory(int64_t seqlen, int threads);

// PyTorch autograd of naive attention (matmul, mask, softmax, matmul; K/V repeated over the
// group) on random data, through `config.python`: forward and backward medians in ms. `mask` is
// "causal" or "window:W". Heads run in chunks so that the N × N tensors autograd keeps fit in
// config.peer_memory_fraction of MemAvailable; returns false (with the reason in *note) when not
// even one head fits or the interpreter / torch is missing. Cases longer than 8192 tokens run
// once without a warm-up (each takes ~10 s per head); the others take config.repeats runs.
bool RunTorchAttentionPeer(const BackwardBenchConfig& config, const std::string& mask,
                           int64_t seqlen, int64_t num_heads_q, int64_t num_heads_kv,
                           int64_t head_dim, double* forward_ms, double* backward_ms,
                           std::string* note);

}  // namespace attnkit::bench
