// Reading and writing safetensors files (https://github.com/huggingface/safetensors):
//   8 bytes: N, the header's length (unsigned little-endian)
//   N bytes: a JSON object {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, …,
//            optionally "__metadata__": {string: string}}
//   the data: tensor bytes, offsets relative to the byte after the header.
// The reader validates the header against the file and throws attnkit::Error naming the file and
// the problem for: a file shorter than 8 bytes or than its header, a header that is not a JSON
// object (or holds a NUL byte), an entry without dtype / shape / data_offsets or with extra keys,
// an unknown dtype, negative or overflowing shape, offsets not in [0, data size] or b > e,
// e − b ≠ numel · dtype size, overlapping tensors, or bytes of the data not covered by exactly
// one tensor (the rule of the reference implementation). Names must be unique and non-empty.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace attnkit::train {

struct SafeTensor {
  std::string dtype;  // "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", …
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // numel · dtype size bytes, little-endian as in the file
  int64_t numel() const;
  // The values as floats: F32 copied, F16 / BF16 widened; anything else throws attnkit::Error.
  std::vector<float> ToFloat(const std::string& name) const;
};

struct SafetensorsFile {
  std::map<std::string, SafeTensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Bytes per element of a dtype name, or 0 when unknown.
int64_t DtypeSize(const std::string& dtype);

// Parses a whole file held in memory (`what` names it in errors).
SafetensorsFile ParseSafetensors(std::span<const uint8_t> file, const std::string& what);
// Reads and parses `path` (files over 16 GiB are refused).
SafetensorsFile ReadSafetensors(const std::string& path);

// One f32 tensor to write.
struct F32Tensor {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;  // numel floats
};
// The file's bytes: tensors in the given order, packed, header padded with spaces to a multiple
// of 8 bytes. Throws attnkit::Error for an empty or repeated name.
std::vector<uint8_t> SerializeSafetensors(const std::vector<F32Tensor>& tensors,
                                          const std::map<std::string, std::string>& metadata);
// The bytes of a regular file of at most max_bytes; attnkit::Error naming `path` when it is not a
// readable regular file, is larger, or a read falls short.
std::string ReadFileLimited(const std::string& path, uint64_t max_bytes);
// Writes `path` atomically: to a temporary name in the same folder, flushed, then renamed.
void WriteFileAtomic(const std::string& path, const std::vector<uint8_t>& bytes);
void WriteSafetensors(const std::string& path, const std::vector<F32Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace attnkit::train
