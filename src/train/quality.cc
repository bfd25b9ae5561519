// The quality grid (quality.h, docs/quality.md): every variant trained on MQAR at each length and
// on text, through train::Train, with throughput, peak memory and cache bytes beside the quality.
#include "attnkit/train/quality.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <utility>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "attnkit/core/checked.h"
#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "attnkit/core/tensor.h"
#include "attnkit/layers/factory.h"
#include "attnkit/train/data.h"
#include "nlohmann/json.hpp"

namespace attnkit::train {
namespace {

// The model of a variant: the grid's, with the layer count rounded up to a multiple of the
// variant's list length.
ModelConfig VariantModel(const QualityGrid& g, const std::string& variant) {
  ModelConfig m = g.model;
  m.variant = variant;
  const auto n = static_cast<int64_t>(ParseLayerList(variant).size());
  m.layers = (m.layers + n - 1) / n * n;
  return m;
}

TrainOptions BaseOptions(const QualityGrid& g, const std::string& variant) {
  TrainOptions o;
  o.model = VariantModel(g, variant);
  o.optim.lr = g.lr;
  o.seed = g.seed;
  o.mqar_pairs = g.mqar_pairs;
  o.mqar_vocab = g.mqar_vocab;
  o.eval_sequences = g.eval_sequences;
  o.text_path = g.text_path;
  o.eval_bytes = g.eval_bytes;
  return o;
}

TrainOptions MqarOptions(const QualityGrid& g, const std::string& variant, int64_t length) {
  TrainOptions o = BaseOptions(g, variant);
  o.task = "mqar";
  o.seqlen = length;
  o.batch = g.batch;
  o.steps = g.steps;
  o.optim.warmup = g.steps / 3;
  return o;
}

TrainOptions TextOptions(const QualityGrid& g, const std::string& variant) {
  TrainOptions o = BaseOptions(g, variant);
  o.task = "text";
  o.seqlen = g.text_seqlen;
  o.batch = g.text_batch;
  o.steps = g.text_steps;
  o.optim.warmup = g.text_steps / 10;
  return o;
}

// The text task's source, or "" when it is skipped (`why` says why).
std::string TextSource(const QualityGrid& g, std::string* why) {
  if (!g.text) {
    *why = "text task not asked for";
    return "";
  }
  if (!g.text_path.empty()) return g.text_path;
  const std::string dir = FindBrownCorpus();
  if (dir.empty()) {
    *why =
        "text task skipped: the Brown corpus is not installed (scripts/setup.sh, or "
        "ATTNKIT_BROWN_DIR) and no --text FILE was given";
  }
  return dir.empty() ? "" : "Brown corpus (" + dir + ")";
}

std::string Mib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", bytes / (1024.0 * 1024.0));
  return buf;
}

}  // namespace

void QualityGrid::Check() const {
  Require(!variants.empty(), "quality grid: no variants");
  Require(!lengths.empty(), "quality grid: no MQAR lengths");
  for (const std::string& v : variants) {
    try {
      (void)ParseLayerList(v);
    } catch (const Error& e) {
      throw Error(std::string("quality grid: variant: ") + e.what());
    }
  }
  Require(mqar_pairs >= 1 && mqar_vocab >= 4 && mqar_pairs < mqar_vocab / 2,
          "quality grid: need 1 <= pairs < mqar_vocab / 2, got pairs ", mqar_pairs, ", vocab ",
          mqar_vocab);
  for (int64_t l : lengths) {
    Require(4 * mqar_pairs <= l + 1, "quality grid: MQAR length ", l, " cannot hold ", mqar_pairs,
            " pairs (needs 4·pairs <= length + 1)");
  }
  Require(steps >= 1 && batch >= 1 && text_steps >= 1 && text_batch >= 1 && text_seqlen >= 2,
          "quality grid: steps, batch, text steps and text batch must be >= 1 and text seqlen "
          ">= 2");
  Require(eval_sequences >= 1 && eval_bytes >= 1,
          "quality grid: eval sequences and eval bytes must be >= 1");
  Require(std::isfinite(lr) && lr > 0, "quality grid: lr must be positive, got ", lr);
}

std::string QualityGrid::Budget() const {
  const ModelConfig m = [&] {
    ModelConfig c = model;
    c.vocab = 256;
    c.max_seqlen = std::max(text_seqlen, *std::max_element(lengths.begin(), lengths.end()));
    return c.Resolved();
  }();
  std::ostringstream s;
  s << m.layers << " blocks, hidden " << m.hidden << ", " << m.heads << " heads of " << m.head_dim
    << ", SwiGLU " << m.ffn << (m.window > 0 ? ", window " + std::to_string(m.window) : "")
    << "; MQAR: " << steps << " steps × " << batch << " sequences at each length (" << mqar_pairs
    << " pairs, vocabulary " << mqar_vocab << ", lr " << lr << "), accuracy on " << eval_sequences
    << " held-out sequences";
  if (text) {
    s << "; text: " << text_steps << " steps × " << text_batch << " windows of " << text_seqlen
      << " bytes, bits per byte on " << eval_bytes << " validation bytes";
  }
  s << "; seed " << seed;
  return s.str();
}

QualityGrid SmokeGrid() {
  QualityGrid g;
  g.name = "smoke";
  g.variants = {"mha", "swa", "gated_deltanet"};
  g.lengths = {16};
  g.model.hidden = 16;
  g.model.heads = 2;
  g.model.layers = 1;
  g.model.window = 4;
  g.steps = 8;
  g.batch = 8;
  g.eval_sequences = 16;
  g.text_seqlen = 16;
  g.text_steps = 4;
  g.text_batch = 4;
  g.eval_bytes = 512;
  return g;
}

QualityGrid DefaultGrid() {
  QualityGrid g;
  g.name = "default";
  g.variants = {"mha",
                "swa",
                "gated",
                "mla",
                "performer",
                "linear_elu",
                "deltanet",
                "gated_deltanet",
                "kda",
                "chunked",
                "gated_deltanet,gated"};
  g.lengths = {16, 32, 64};
  g.model.hidden = 32;
  g.model.heads = 2;
  g.model.layers = 2;
  g.model.window = 8;
  g.steps = 300;
  g.batch = 32;
  g.text_seqlen = 64;
  g.text_steps = 100;
  g.text_batch = 16;
  g.eval_bytes = 16384;
  return g;
}

QualityGrid FullGrid() {
  QualityGrid g = DefaultGrid();
  g.name = "full";
  g.variants = {"mha",
                "gqa",
                "mqa",
                "swa",
                "sinks",
                "gated",
                "qknorm",
                "mla",
                "performer",
                "linear_elu",
                "linear_relu",
                "deltanet",
                "gated_deltanet",
                "kda",
                "strided",
                "fixed",
                "bigbird",
                "longformer",
                "chunked",
                "gated_deltanet,gated",
                "kda,mla"};
  g.lengths = {32, 64, 128, 256};
  g.model.hidden = 64;
  g.model.heads = 4;
  g.model.layers = 2;
  g.model.window = 16;
  g.steps = 400;
  g.batch = 64;
  g.mqar_pairs = 8;
  g.mqar_vocab = 64;
  g.text_seqlen = 256;
  g.text_steps = 400;
  g.text_batch = 16;
  g.eval_bytes = 65536;
  return g;
}

QualityGrid GuideQuickGrid() {
  QualityGrid g = DefaultGrid();
  g.name = "guide-quick";
  g.variants = {"mha", "swa", "gated_deltanet"};
  g.lengths = {16, 32};
  // Hidden 64 in 4 heads: at hidden 32 exact attention learned length 32 only to 46 % in this
  // budget; at 64 to 99 % (docs/quality.md).
  g.model.hidden = 64;
  g.model.heads = 4;
  g.text_steps = 60;
  g.eval_bytes = 8192;
  return g;
}

int64_t QualityRuns(const QualityGrid& g) {
  return static_cast<int64_t>(g.variants.size()) *
         (static_cast<int64_t>(g.lengths.size()) + (g.text ? 1 : 0));
}

int64_t ContextBytes(const ModelConfig& config, int64_t tokens) {
  Require(tokens >= 1, "ContextBytes: tokens must be >= 1, got ", tokens);
  ModelConfig c = config;
  c.max_seqlen = tokens;  // a contiguous KV cache allocates its capacity up front
  c = c.Resolved();
  const LayerShape shape = ModelLayerShape(c);
  Tensor<float> x(1, 1, tokens, c.hidden);
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = 0.01f * static_cast<float>(i % 7 - 3);
  Tensor<float> out(1, 1, tokens, c.hidden);
  int64_t total = 0;
  for (const std::string& kind : c.LayerKindList()) {
    auto layer = MakeLayer(kind, shape, 1);
    layer->Forward(std::as_const(x).view(), 0, out.view());
    total += static_cast<int64_t>(layer->CacheBytes());
  }
  return total;
}

QualityResult RunQuality(const QualityGrid& grid, const QualityCallbacks& cb) {
  grid.Check();
  QualityResult result;
  result.grid = grid;
  result.threads = GetNumThreads();
  std::string why;
  const std::string source = TextSource(grid, &why);
  result.text_run = !source.empty();
  result.text_source = result.text_run ? source : why;
  if (result.text_run && !grid.text_path.empty()) {
    // A text file that is unreadable, empty or too small is refused before any training.
    CheckCorpus(LoadTextFile(grid.text_path), grid.text_seqlen);
  }
  // Every variant is built once up front so that an unknown or untrainable kind is refused
  // before any training.
  for (const std::string& v : grid.variants) {
    ModelConfig m = VariantModel(grid, v);
    m.vocab = grid.mqar_vocab;
    m.max_seqlen = grid.lengths.front();
    try {
      Model probe(m, grid.seed);
    } catch (const Error& e) {
      throw Error("quality grid: variant '" + v + "': " + e.what());
    }
  }
  const int64_t total = static_cast<int64_t>(grid.variants.size()) *
                        (static_cast<int64_t>(grid.lengths.size()) + (result.text_run ? 1 : 0));
  const bool peak_ok = ResetPeakResident() && ProcStatusBytes("VmHWM") > 0;
  const auto start = std::chrono::steady_clock::now();
  int64_t done = 0;
  TrainCallbacks tcb;
  tcb.on_step = cb.on_step;
  for (const std::string& v : grid.variants) {
    QualityRow row;
    row.variant = v;
    row.layers = VariantModel(grid, v).layers;
    const auto row_start = std::chrono::steady_clock::now();
    // One run: its peak resident memory above the resident size before it.
    auto run = [&](const TrainOptions& o, const std::string& what) -> TrainResult {
      if (cb.on_run) cb.on_run(done, total, what);
        // Freed heap pages of earlier runs go back to the system first, so that this run's
        // buffers are faulted in afresh and counted, not reused unseen.
#ifdef __GLIBC__
      malloc_trim(0);
#endif
      const int64_t base = peak_ok && ResetPeakResident() ? ProcStatusBytes("VmRSS") : -1;
      TrainResult r = Train(o, tcb);
      if (base >= 0) {
        int64_t& peak = o.task == "text" ? row.text_peak_bytes : row.peak_bytes;
        peak = std::max(peak, std::max<int64_t>(0, ProcStatusBytes("VmHWM") - base));
      }
      if (o.task == "mqar")
        row.estimate_bytes =
            std::max(row.estimate_bytes,
                     EstimateTrainBytes(TaskModelConfig(o).Resolved(), o.batch, o.seqlen));
      row.params = r.num_params;
      ++done;
      return r;
    };
    try {
      for (int64_t len : grid.lengths) {
        const TrainOptions o = MqarOptions(grid, v, len);
        const TrainResult r = run(o, v + " MQAR@" + std::to_string(len));
        const EvalResult& e = r.evals.back();
        row.mqar_accuracy.push_back(e.accuracy);
        row.mqar_loss.push_back(e.loss);
        row.mqar_answers.push_back(e.tokens);
        row.mqar_tokens_per_s.push_back(r.tokens_per_s);
        row.context_bytes.push_back(ContextBytes(TaskModelConfig(o), len));
      }
      if (result.text_run) {
        const TrainResult r = run(TextOptions(grid, v), v + " text");
        const EvalResult& e = r.evals.back();
        row.bits_per_byte = e.bits_per_byte;
        row.loss_by_position = e.loss_by_position;
        row.text_tokens_per_s = r.tokens_per_s;
      }
    } catch (const Error& e) {
      row.error = e.what();
      done = static_cast<int64_t>(result.rows.size() + 1) *
             (static_cast<int64_t>(grid.lengths.size()) + (result.text_run ? 1 : 0));
    }
    row.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - row_start).count();
    result.rows.push_back(std::move(row));
  }
  if (cb.on_run) cb.on_run(total, total, "done");
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

std::string QualityResult::Table() const {
  std::ostringstream s;
  s << "quality grid \"" << grid.name << "\" (" << threads << " threads, " << rows.size()
    << " variants, " << std::llround(seconds) << " s): " << grid.Budget() << "\n";
  const int64_t longest = grid.lengths.back();
  std::vector<std::string> header = {"variant", "layers", "params"};
  for (int64_t l : grid.lengths) header.push_back("MQAR@" + std::to_string(l));
  header.insert(header.end(), {"bits/byte", "tok/s@" + std::to_string(longest), "peak MiB",
                               "est MiB", "ctx B/tok@" + std::to_string(longest), "s"});
  std::vector<std::vector<std::string>> cells = {header};
  char buf[64];
  for (const QualityRow& r : rows) {
    std::vector<std::string> c = {r.variant, std::to_string(r.layers), std::to_string(r.params)};
    for (size_t i = 0; i < grid.lengths.size(); ++i) {
      if (i < r.mqar_accuracy.size()) {
        std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * r.mqar_accuracy[i]);
        c.push_back(buf);
      } else {
        c.push_back("—");
      }
    }
    if (r.bits_per_byte >= 0) {
      std::snprintf(buf, sizeof buf, "%.3f", r.bits_per_byte);
      c.push_back(buf);
    } else {
      c.push_back("—");
    }
    const bool full = r.mqar_tokens_per_s.size() == grid.lengths.size();
    std::snprintf(buf, sizeof buf, "%.0f", full ? r.mqar_tokens_per_s.back() : 0.0);
    c.push_back(full ? buf : "—");
    c.push_back(r.peak_bytes >= 0 ? Mib(static_cast<double>(r.peak_bytes)) : "—");
    c.push_back(Mib(r.estimate_bytes));
    std::snprintf(
        buf, sizeof buf, "%.0f",
        full ? static_cast<double>(r.context_bytes.back()) / static_cast<double>(longest) : 0.0);
    c.push_back(full ? buf : "—");
    std::snprintf(buf, sizeof buf, "%.1f", r.seconds);
    c.push_back(buf);
    cells.push_back(std::move(c));
  }
  std::vector<size_t> width(header.size(), 0);
  for (const auto& row : cells) {
    for (size_t i = 0; i < row.size(); ++i) {
      // Count code points, not bytes ("—", "@" are fine; "—" is three bytes).
      size_t n = 0;
      for (unsigned char ch : row[i]) n += (ch & 0xC0) != 0x80;
      width[i] = std::max(width[i], n);
    }
  }
  for (const auto& row : cells) {
    for (size_t i = 0; i < row.size(); ++i) {
      size_t n = 0;
      for (unsigned char ch : row[i]) n += (ch & 0xC0) != 0x80;
      const std::string fill(width[i] - n, ' ');
      s << (i == 0 ? row[i] + fill : "  " + fill + row[i]);
    }
    s << "\n";
  }
  for (const QualityRow& r : rows) {
    if (!r.error.empty()) s << r.variant << ": failed: " << r.error << "\n";
  }
  s << "MQAR@L: recall accuracy on held-out sequences of L tokens (chance 1/" << grid.mqar_vocab / 2
    << "). bits/byte: " << text_source
    << ". tok/s: training throughput at the longest length. peak MiB: resident memory of the "
       "variant's largest MQAR run above the resident size before it (Linux VmHWM reset through "
       "/proc/self/clear_refs; — where unavailable); est MiB: the trainer's estimate "
       "(EstimateTrainBytes). ctx B/tok: the model's cache or recurrent state after prefilling "
       "the longest length (Layer::CacheBytes summed over layers), divided by that length.\n";
  return s.str();
}

std::vector<std::string> QualityResult::JsonLines() const {
  std::vector<std::string> lines;
  for (const QualityRow& r : rows) {
    nlohmann::json j = {{"event", "quality"},
                        {"variant", r.variant},
                        {"layers", r.layers},
                        {"params", r.params},
                        {"lengths", grid.lengths},
                        {"mqar_accuracy", r.mqar_accuracy},
                        {"mqar_loss", r.mqar_loss},
                        {"mqar_answers", r.mqar_answers},
                        {"mqar_tokens_per_s", r.mqar_tokens_per_s},
                        {"context_bytes", r.context_bytes},
                        {"peak_bytes", r.peak_bytes},
                        {"text_peak_bytes", r.text_peak_bytes},
                        {"estimate_bytes", r.estimate_bytes},
                        {"seconds", r.seconds}};
    if (r.bits_per_byte >= 0) {
      j["bits_per_byte"] = r.bits_per_byte;
      j["text_tokens_per_s"] = r.text_tokens_per_s;
      j["loss_by_position"] = r.loss_by_position;
    }
    if (!r.error.empty()) j["error"] = r.error;
    lines.push_back(j.dump());
  }
  nlohmann::json done = {{"event", "quality_done"}, {"grid", grid.name},
                         {"budget", grid.Budget()}, {"text", text_source},
                         {"text_run", text_run},    {"threads", threads},
                         {"seconds", seconds}};
  lines.push_back(done.dump());
  return lines;
}

}  // namespace attnkit::train
