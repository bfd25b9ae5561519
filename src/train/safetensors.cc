// The safetensors reader (validating) and writer of include/attnkit/train/safetensors.h.
#include "attnkit/train/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "attnkit/core/checked.h"
#include "attnkit/core/error.h"
#include "nlohmann/json.hpp"

namespace attnkit::train {

namespace fs = std::filesystem;

namespace {

constexpr uint64_t kMaxHeaderBytes = 100u << 20;        // the reference implementation's bound
constexpr uint64_t kMaxFileBytes = uint64_t{16} << 30;  // 16 GiB

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1u, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    v = mant == 0 ? INFINITY : NAN;
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400u), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}

}  // namespace

int64_t DtypeSize(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
}

int64_t SafeTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float> SafeTensor::ToFloat(const std::string& name) const {
  const size_t n = static_cast<size_t>(numel());
  std::vector<float> out(n);
  if (dtype == "F32") {
    std::memcpy(out.data(), bytes.data(), n * 4);
  } else if (dtype == "BF16" || dtype == "F16") {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, bytes.data() + 2 * i, 2);
      if (dtype == "BF16") {
        const uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(&out[i], &bits, 4);
      } else {
        out[i] = HalfToFloat(h);
      }
    }
  } else {
    throw Error("tensor " + name + " has dtype " + dtype + "; expected F32, F16 or BF16");
  }
  return out;
}

SafetensorsFile ParseSafetensors(std::span<const uint8_t> file, const std::string& what) {
  auto fail = [&](auto&&... args) -> Error {
    return Error(detail::StrCat(what, ": not a valid safetensors file: ", args...));
  };
  if (file.size() < 8)
    throw fail("shorter than the 8-byte header length (", file.size(), " bytes)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file[static_cast<size_t>(i)];
  if (n > kMaxHeaderBytes) throw fail("header length ", n, " exceeds ", kMaxHeaderBytes);
  if (n > file.size() - 8) {
    throw fail("header length ", n, " runs past the end of the file (", file.size(), " bytes)");
  }
  const std::string text(reinterpret_cast<const char*>(file.data() + 8), static_cast<size_t>(n));
  if (text.find('\0') != std::string::npos) throw fail("the header holds a NUL byte");
  std::set<std::string> top_keys;
  bool duplicate = false;
  std::string duplicate_name;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(
        text, [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
          if (event == nlohmann::json::parse_event_t::key && depth == 1) {
            const std::string k = parsed.get<std::string>();
            if (!top_keys.insert(k).second && !duplicate) {
              duplicate = true;
              duplicate_name = k;
            }
          }
          return true;
        });
  } catch (const nlohmann::json::exception& e) {
    throw fail("the header is not JSON (", e.what(), ")");
  }
  if (!header.is_object()) throw fail("the header is not a JSON object");
  if (duplicate) throw fail("the header names '", duplicate_name, "' twice");
  const uint64_t data_size = file.size() - 8 - n;
  const uint8_t* data = file.data() + 8 + n;
  SafetensorsFile out;
  struct Span {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Span> spans;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) throw fail("__metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) throw fail("__metadata__ value of '", k, "' is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (name.empty()) throw fail("a tensor has an empty name");
    if (!entry.is_object()) throw fail("entry '", name, "' is not an object");
    for (const auto& [k, v] : entry.items()) {
      (void)v;
      if (k != "dtype" && k != "shape" && k != "data_offsets") {
        throw fail("entry '", name, "' has an unknown key '", k, "'");
      }
    }
    if (!entry.contains("dtype") || !entry["dtype"].is_string()) {
      throw fail("entry '", name, "' has no dtype string");
    }
    SafeTensor t;
    t.dtype = entry["dtype"].get<std::string>();
    const int64_t esize = DtypeSize(t.dtype);
    if (esize == 0) throw fail("entry '", name, "' has an unknown dtype '", t.dtype, "'");
    if (!entry.contains("shape") || !entry["shape"].is_array()) {
      throw fail("entry '", name, "' has no shape array");
    }
    uint64_t numel = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) {
        throw fail("entry '", name, "' has a shape entry that is not a non-negative integer");
      }
      const uint64_t v = d.get<uint64_t>();
      if (v > 0 && numel > (uint64_t{1} << 62) / v)
        throw fail("entry '", name, "': shape overflows");
      numel *= v;
      t.shape.push_back(static_cast<int64_t>(v));
    }
    if (!entry.contains("data_offsets") || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2 || !entry["data_offsets"][0].is_number_unsigned() ||
        !entry["data_offsets"][1].is_number_unsigned()) {
      throw fail("entry '", name, "' needs data_offsets [begin, end] of non-negative integers");
    }
    const uint64_t b = entry["data_offsets"][0].get<uint64_t>();
    const uint64_t e = entry["data_offsets"][1].get<uint64_t>();
    if (b > e || e > data_size) {
      throw fail("entry '", name, "' has data_offsets [", b, ", ", e, "] outside the data of ",
                 data_size, " bytes");
    }
    if (numel > (uint64_t{1} << 62) / static_cast<uint64_t>(esize) ||
        e - b != numel * static_cast<uint64_t>(esize)) {
      throw fail("entry '", name, "' spans ", e - b, " bytes but its shape and dtype need ",
                 numel * static_cast<uint64_t>(esize));
    }
    t.bytes.assign(data + b, data + e);
    spans.push_back({b, e, name});
    out.tensors.emplace(name, std::move(t));
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  for (const Span& s : spans) {
    if (s.begin < pos) throw fail("tensors '", s.name, "' and another overlap");
    if (s.begin > pos)
      throw fail("bytes [", pos, ", ", s.begin, ") of the data belong to no tensor");
    pos = s.end;
  }
  if (pos != data_size) {
    throw fail("bytes [", pos, ", ", data_size, ") of the data belong to no tensor");
  }
  return out;
}

std::string ReadFileLimited(const std::string& path, uint64_t max_bytes) {
  std::error_code ec;
  const bool regular = fs::is_regular_file(path, ec);
  Require(!ec && regular, path, ": cannot read (not a readable regular file)");
  const auto size = fs::file_size(path, ec);
  Require(!ec, path, ": cannot read (", ec.message(), ")");
  Require(size <= max_bytes, path, ": ", size, " bytes is larger than the ", max_bytes,
          " bytes accepted");
  std::ifstream in(path, std::ios::binary);
  Require(in.good(), path, ": cannot open for reading");
  std::string s;
  detail::CheckAllocation(static_cast<double>(size), "ReadFileLimited", "the file");
  try {
    s.resize(static_cast<size_t>(size));
  } catch (const std::bad_alloc&) {
    detail::ThrowAllocationFailed(static_cast<double>(size), "ReadFileLimited", "the file");
  }
  in.read(s.data(), static_cast<std::streamsize>(size));
  Require(in.gcount() == static_cast<std::streamsize>(size), path, ": short read");
  return s;
}

SafetensorsFile ReadSafetensors(const std::string& path) {
  const std::string bytes = ReadFileLimited(path, kMaxFileBytes);
  return ParseSafetensors(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), path);
}

std::vector<uint8_t> SerializeSafetensors(const std::vector<F32Tensor>& tensors,
                                          const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const F32Tensor& t : tensors) {
    Require(!t.name.empty() && t.name != "__metadata__", "WriteSafetensors: bad tensor name '",
            t.name, "'");
    Require(names.insert(t.name).second, "WriteSafetensors: tensor name '", t.name,
            "' appears twice");
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      Require(d >= 0, "WriteSafetensors: tensor ", t.name, " has a negative dimension");
      numel = CheckedMul(numel, d, "WriteSafetensors", "shape");
    }
    const uint64_t bytes = static_cast<uint64_t>(numel) * 4;
    header[t.name] = {
        {"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  while (text.size() % 8 != 0) text.push_back(' ');
  std::vector<uint8_t> out(8 + text.size() + offset);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(out.data() + 8, text.data(), text.size());
  uint8_t* p = out.data() + 8 + text.size();
  for (const F32Tensor& t : tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    if (numel > 0) std::memcpy(p, t.data, static_cast<size_t>(numel) * 4);
    p += numel * 4;
  }
  return out;
}

void WriteFileAtomic(const std::string& path, const std::vector<uint8_t>& bytes) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    Require(f != nullptr, path, ": cannot write (", std::strerror(errno), ")");
    const size_t written = bytes.empty() ? 0 : std::fwrite(bytes.data(), 1, bytes.size(), f);
    const bool ok = written == bytes.size() && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
    const bool closed = std::fclose(f) == 0;
    if (!ok || !closed) {
      std::remove(tmp.c_str());
      throw Error(path + ": write failed (disk full?)");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot rename the temporary file into place (" + ec.message() + ")");
  }
}

void WriteSafetensors(const std::string& path, const std::vector<F32Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  WriteFileAtomic(path, SerializeSafetensors(tensors, metadata));
}

}  // namespace attnkit::train
