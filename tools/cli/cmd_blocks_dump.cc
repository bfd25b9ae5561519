// `attnkit blocks-dump DIR`: writes small GQA and MLA blocks (weights, inputs, outputs of a full
// pass and of prefill + decode) as .npy files plus meta.json per case, for the torch cross-check
// in tests/python/test_blocks_torch.py. Not meant for users; it exists so that an outside
// implementation can check the C++ blocks without the Python bindings.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "attnkit/layers/gqa.h"
#include "attnkit/layers/mla.h"
#include "command.h"
#include "nlohmann/json.hpp"

namespace attnkit::cli {
namespace {

namespace fs = std::filesystem;

// Writes a little-endian f32 array in NumPy's .npy format (version 1.0).
void WriteNpy(const fs::path& path, const float* data, const std::vector<int64_t>& shape) {
  std::string dims;
  int64_t n = 1;
  for (int64_t s : shape) {
    dims += std::to_string(s) + ", ";
    n *= s;
  }
  if (shape.size() > 1) dims.erase(dims.size() - 2);  // "(a, b)"; "(a,)" for one dim
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  Require(f.good(), "blocks-dump: cannot write ", path.string());
  const uint16_t len = static_cast<uint16_t>(header.size());
  f.write("\x93NUMPY\x01\x00", 8);
  f.write(reinterpret_cast<const char*>(&len), 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * sizeof(float)));
}

void WriteMatrix(const fs::path& dir, const char* name, const Matrix& m) {
  if (!m.empty()) WriteNpy(dir / (std::string(name) + ".npy"), m.data.data(), {m.rows, m.cols});
}
void WriteVector(const fs::path& dir, const char* name, const std::vector<float>& v) {
  if (!v.empty()) {
    WriteNpy(dir / (std::string(name) + ".npy"), v.data(), {static_cast<int64_t>(v.size())});
  }
}
void WriteHidden(const fs::path& dir, const char* name, const Tensor<float>& t) {
  WriteNpy(dir / (std::string(name) + ".npy"), t.data(),
           {t.shape()[0], t.shape()[2], t.shape()[3]});
}

Tensor<float> RandomX(int64_t batch, int64_t tokens, int64_t hidden, uint64_t seed) {
  Tensor<float> x(batch, 1, tokens, hidden);
  FillUniform(x.data(), static_cast<size_t>(x.numel()), 1.7f, seed);
  return x;
}

nlohmann::json RopeJson(const RopeConfig& r) {
  return {{"theta", r.theta}, {"layout", RopeLayoutName(r.layout)}, {"fraction", r.fraction}};
}

void DumpGqa(const fs::path& dir, const GqaConfig& c, int64_t tokens, int64_t prefill,
             uint64_t seed) {
  fs::create_directories(dir);
  const GqaWeights w = GqaWeights::Random(c, seed);
  const Tensor<float> x = RandomX(c.batch, tokens, c.hidden, seed + 1);
  GqaConfig full_cfg = c;
  full_cfg.max_step = tokens;
  GqaBlock full(full_cfg, w), inc(c, w);
  WriteHidden(dir, "x", x);
  WriteHidden(dir, "out_full", ForwardInChunks(full, x, {tokens}));
  WriteHidden(dir, "out_incremental",
              ForwardInChunks(inc, x, PrefillThenDecodeChunks(prefill, tokens)));
  WriteMatrix(dir, "w_q", w.w_q);
  WriteMatrix(dir, "w_k", w.w_k);
  WriteMatrix(dir, "w_v", w.w_v);
  WriteMatrix(dir, "w_o", w.w_o);
  WriteMatrix(dir, "w_gate", w.w_gate);
  WriteVector(dir, "q_norm", w.q_norm);
  WriteVector(dir, "k_norm", w.k_norm);
  WriteVector(dir, "sinks", w.sinks);
  nlohmann::json meta = {{"kind", "gqa"},
                         {"hidden", c.hidden},
                         {"num_heads_q", c.num_heads_q},
                         {"num_heads_kv", c.num_heads_kv},
                         {"head_dim", c.head_dim},
                         {"head_dim_v", c.dv()},
                         {"use_rope", c.use_rope},
                         {"rope", RopeJson(c.rope)},
                         {"qk_norm", c.qk_norm},
                         {"qk_norm_zero_centred", c.qk_norm_zero_centred},
                         {"norm_eps", c.norm_eps},
                         {"output_gate", c.output_gate},
                         {"sinks", c.sinks},
                         {"window", c.window},
                         {"softcap", c.softcap},
                         {"batch", c.batch},
                         {"tokens", tokens},
                         {"prefill", prefill}};
  std::ofstream(dir / "meta.json") << meta.dump(2) << "\n";
}

void DumpMla(const fs::path& dir, const MlaConfig& c, int64_t tokens, int64_t prefill,
             uint64_t seed) {
  fs::create_directories(dir);
  const MlaWeights w = MlaWeights::Random(c, seed);
  const Tensor<float> x = RandomX(c.batch, tokens, c.hidden, seed + 1);
  MlaConfig naive = c, absorbed = c;
  naive.path = MlaPath::kNaive;
  absorbed.path = MlaPath::kAbsorbed;
  MlaBlock n_full(naive, w), a_full(absorbed, w), n_inc(naive, w), a_inc(absorbed, w);
  WriteHidden(dir, "x", x);
  WriteHidden(dir, "out_naive_full", ForwardInChunks(n_full, x, {tokens}));
  WriteHidden(dir, "out_absorbed_full", ForwardInChunks(a_full, x, {tokens}));
  WriteHidden(dir, "out_naive_incremental",
              ForwardInChunks(n_inc, x, PrefillThenDecodeChunks(prefill, tokens)));
  WriteHidden(dir, "out_absorbed_incremental",
              ForwardInChunks(a_inc, x, PrefillThenDecodeChunks(prefill, tokens)));
  // The latent cache rows of the tokens seen: [batch, tokens, kv_lora_rank + qk_rope_head_dim].
  std::vector<float> cache;
  for (int64_t b = 0; b < c.batch; ++b) {
    const float* p = a_inc.latent_cache().data() + b * c.max_tokens * c.latent_dim();
    cache.insert(cache.end(), p, p + tokens * c.latent_dim());
  }
  WriteNpy(dir / "latent_cache.npy", cache.data(), {c.batch, tokens, c.latent_dim()});
  WriteMatrix(dir, "w_dq", w.w_dq);
  WriteVector(dir, "q_norm", w.q_norm);
  WriteMatrix(dir, "w_uq", w.w_uq);
  WriteMatrix(dir, "w_dkv", w.w_dkv);
  WriteVector(dir, "kv_norm", w.kv_norm);
  WriteMatrix(dir, "w_kr", w.w_kr);
  WriteMatrix(dir, "w_uk", w.w_uk);
  WriteMatrix(dir, "w_uv", w.w_uv);
  WriteMatrix(dir, "w_o", w.w_o);
  nlohmann::json meta = {{"kind", "mla"},
                         {"hidden", c.hidden},
                         {"num_heads", c.num_heads},
                         {"q_lora_rank", c.q_lora_rank},
                         {"kv_lora_rank", c.kv_lora_rank},
                         {"qk_nope_head_dim", c.qk_nope_head_dim},
                         {"qk_rope_head_dim", c.qk_rope_head_dim},
                         {"v_head_dim", c.v_head_dim},
                         {"rope", RopeJson(c.rope)},
                         {"norm_eps", c.norm_eps},
                         {"batch", c.batch},
                         {"tokens", tokens},
                         {"prefill", prefill}};
  std::ofstream(dir / "meta.json") << meta.dump(2) << "\n";
}

int RunBlocksDump(const std::vector<std::string>& args) {
  ArgParser p("attnkit blocks-dump DIR [--seed N]",
              "Internal: write small GQA and MLA blocks (weights, inputs, outputs) as .npy files "
              "for the torch cross-check (tests/python/test_blocks_torch.py).");
  p.AddPositional("DIR", "output directory (created)", 1, 1);
  p.AddOption("seed", "1", "seed of the random weights and inputs");
  if (!p.Parse(args)) return 0;
  const fs::path dir = p.Positionals()[0];
  const uint64_t seed = p.GetSeed();

  GqaConfig g;  // Llama/Qwen3-style: GQA, rotate-half RoPE, QK-norm
  g.hidden = 64;
  g.num_heads_q = 4;
  g.num_heads_kv = 2;
  g.head_dim = 16;
  g.qk_norm = true;
  g.max_tokens = 32;
  DumpGqa(dir / "gqa_rope_qknorm", g, 13, 6, seed);

  GqaConfig o;  // every option at once, batch 2, a ring buffer that wraps
  o.hidden = 48;
  o.num_heads_q = 6;
  o.num_heads_kv = 2;
  o.head_dim = 16;
  o.head_dim_v = 12;
  o.rope = RopeConfig{1e6f, RopeLayout::kInterleaved, 0.5f};
  o.qk_norm = true;
  o.qk_norm_zero_centred = true;
  o.output_gate = true;
  o.sinks = true;
  o.window = 5;
  o.softcap = 30.0f;
  o.batch = 2;
  o.max_tokens = 32;
  DumpGqa(dir / "gqa_all_options", o, 15, 4, seed + 10);

  MlaConfig m;  // DeepSeek-V3 structure, small
  m.hidden = 64;
  m.num_heads = 4;
  m.q_lora_rank = 32;
  m.kv_lora_rank = 24;
  m.qk_nope_head_dim = 16;
  m.qk_rope_head_dim = 8;
  m.v_head_dim = 12;
  m.max_tokens = 32;
  DumpMla(dir / "mla", m, 12, 5, seed + 20);

  MlaConfig d = m;  // DeepSeek-V2-Lite style: no q LoRA; interleaved rope; batch 2
  d.q_lora_rank = 0;
  d.num_heads = 3;
  d.rope.layout = RopeLayout::kInterleaved;
  d.batch = 2;
  DumpMla(dir / "mla_direct_q", d, 11, 3, seed + 30);
  std::cout << "wrote 4 cases to " << dir.string() << "\n";
  return 0;
}

const CommandRegistrar kRegistrar({"blocks-dump",
                                   "internal: dump small GQA/MLA blocks for the torch check",
                                   RunBlocksDump});

}  // namespace
}  // namespace attnkit::cli
