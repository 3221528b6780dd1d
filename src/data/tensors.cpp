// Datasets from tensors: in memory (a Python caller's, or a program's own) and from tensor
// files written by torch.save or NumPy (.pt, .pth, .npy, .npz), read without Python.
#include <torch/csrc/jit/serialization/pickle.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>

#include "quell/data.h"
#include "quell/io.h"
#include "util/text.h"
#include "util/zip.h"

namespace quell {
namespace fs = std::filesystem;
namespace {

std::string shape_text(const torch::Tensor& t) { return text::shape(t.sizes().vec()); }

// ---------------------------------------------------------------------------------------------
// NumPy .npy

struct NpyType {
  const char* descr;  // without the byte-order character
  torch::ScalarType type;
};
constexpr NpyType kNpyTypes[] = {{"f4", torch::kFloat},  {"f8", torch::kDouble},
                                 {"f2", torch::kHalf},   {"i8", torch::kLong},
                                 {"i4", torch::kInt},    {"i2", torch::kShort},
                                 {"i1", torch::kChar},   {"u1", torch::kByte},
                                 {"b1", torch::kBool}};

// The value of 'key' in the header dict: the text after "'key':" up to the next top-level ','.
std::string header_field(const std::string& header, const std::string& key,
                         const std::string& where) {
  const auto k = header.find("'" + key + "'");
  if (k == std::string::npos) throw std::runtime_error(where + ": the .npy header has no '" + key + "'");
  auto p = header.find(':', k);
  if (p == std::string::npos) throw std::runtime_error(where + ": malformed .npy header");
  ++p;
  while (p < header.size() && header[p] == ' ') ++p;
  if (p < header.size() && header[p] == '(') {
    const auto e = header.find(')', p);
    if (e == std::string::npos) throw std::runtime_error(where + ": malformed .npy shape");
    return header.substr(p, e - p + 1);
  }
  auto e = p;
  while (e < header.size() && header[e] != ',' && header[e] != '}') ++e;
  std::string v = header.substr(p, e - p);
  while (!v.empty() && v.back() == ' ') v.pop_back();
  return v;
}

torch::Tensor parse_npy(const uint8_t* data, size_t size, const std::string& where) {
  static const uint8_t kMagic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (size < 10 || std::memcmp(data, kMagic, 6) != 0) {
    throw std::runtime_error(where + ": not a NumPy .npy file (bad magic)");
  }
  const int major = data[6];
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = data[8] | (static_cast<size_t>(data[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) throw std::runtime_error(where + ": truncated .npy header");
    header_len = data[8] | (static_cast<size_t>(data[9]) << 8) |
                 (static_cast<size_t>(data[10]) << 16) | (static_cast<size_t>(data[11]) << 24);
    offset = 12;
  } else {
    throw std::runtime_error(where + ": unsupported .npy version " + std::to_string(major));
  }
  if (header_len > size - offset) throw std::runtime_error(where + ": truncated .npy header");
  const std::string header(reinterpret_cast<const char*>(data + offset), header_len);
  offset += header_len;

  std::string descr = header_field(header, "descr", where);
  if (descr.size() < 2 || (descr.front() != '\'' && descr.front() != '"')) {
    throw std::runtime_error(where + ": unsupported .npy dtype " + text::printable(descr));
  }
  descr = descr.substr(1, descr.size() - 2);
  if (descr.size() != 3 || (descr[0] != '<' && descr[0] != '|' && descr[0] != '=' && descr[0] != '>')) {
    throw std::runtime_error(where + ": unsupported .npy dtype '" + text::printable(descr) +
                             "' (expected float, int, uint8 or bool)");
  }
  if (descr[0] == '>' && descr.substr(1) != "u1" && descr.substr(1) != "i1" &&
      descr.substr(1) != "b1") {
    throw std::runtime_error(where + ": big-endian .npy data ('" + text::printable(descr) +
                             "') is not supported");
  }
  const NpyType* type = nullptr;
  for (const auto& t : kNpyTypes) {
    if (descr.substr(1) == t.descr) type = &t;
  }
  if (!type) {
    throw std::runtime_error(where + ": unsupported .npy dtype '" + text::printable(descr) +
                             "' (expected f2, f4, f8, i1, i2, i4, i8, u1 or b1)");
  }
  const std::string order = header_field(header, "fortran_order", where);
  if (order != "False" && order != "True") {
    throw std::runtime_error(where + ": malformed .npy fortran_order " + text::printable(order));
  }
  const std::string shape_text = header_field(header, "shape", where);
  if (shape_text.size() < 2 || shape_text.front() != '(') {
    throw std::runtime_error(where + ": malformed .npy shape " + text::printable(shape_text));
  }
  std::vector<int64_t> shape;
  size_t numel = 1;
  {
    std::string inner = shape_text.substr(1, shape_text.size() - 2);
    size_t p = 0;
    while (p < inner.size()) {
      while (p < inner.size() && (inner[p] == ' ' || inner[p] == ',')) ++p;
      if (p >= inner.size()) break;
      size_t e = p;
      while (e < inner.size() && std::isdigit(static_cast<unsigned char>(inner[e]))) ++e;
      if (e == p || e - p > 15) {
        throw std::runtime_error(where + ": malformed .npy shape " + text::printable(shape_text));
      }
      const int64_t d = std::stoll(inner.substr(p, e - p));
      shape.push_back(d);
      if (d != 0 && numel > (size_t{1} << 40) / static_cast<size_t>(d)) {
        throw std::runtime_error(where + ": .npy shape " + text::printable(shape_text) +
                                 " is too large");
      }
      numel *= static_cast<size_t>(d);
      p = e;
      while (p < inner.size() && inner[p] == ' ') ++p;
      if (p < inner.size() && inner[p] != ',') {
        throw std::runtime_error(where + ": malformed .npy shape " + text::printable(shape_text));
      }
    }
    if (shape.size() > 8) throw std::runtime_error(where + ": .npy arrays of more than 8 dimensions are not supported");
  }
  const size_t item = c10::elementSize(type->type);
  const size_t bytes = numel * item;
  if (size - offset != bytes) {
    throw std::runtime_error(where + ": .npy payload has " + std::to_string(size - offset) +
                             " bytes, the header promises " + std::to_string(bytes) +
                             (size - offset < bytes ? " (truncated)" : ""));
  }
  std::vector<int64_t> storage_shape = shape;
  if (order == "True") std::reverse(storage_shape.begin(), storage_shape.end());
  torch::Tensor t = torch::empty(storage_shape, torch::TensorOptions().dtype(type->type));
  if (bytes) std::memcpy(t.data_ptr(), data + offset, bytes);
  if (type->type == torch::kBool) {
    // NumPy bools are bytes; anything but 0/1 is not a bool array.
    const auto* b = data + offset;
    for (size_t i = 0; i < numel; ++i) {
      if (b[i] > 1) throw std::runtime_error(where + ": .npy bool array holds a byte other than 0 or 1");
    }
  }
  if (order == "True" && t.dim() > 1) {
    std::vector<int64_t> perm(static_cast<size_t>(t.dim()));
    for (int64_t i = 0; i < t.dim(); ++i) perm[i] = t.dim() - 1 - i;
    t = t.permute(perm).contiguous();
  }
  return t;
}

std::string npy_descr(const torch::Tensor& t) {
  for (const auto& n : kNpyTypes) {
    if (n.type == t.scalar_type()) {
      return std::string(c10::elementSize(n.type) == 1 ? "|" : "<") + n.descr;
    }
  }
  throw std::invalid_argument("write_npy: dtype " + std::string(c10::toString(t.scalar_type())) +
                              " has no NumPy equivalent here");
}

std::string npy_bytes(const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
  std::string shape = "(";
  for (int64_t i = 0; i < t.dim(); ++i) shape += (i ? ", " : "") + std::to_string(t.size(i));
  shape += t.dim() == 1 ? ",)" : ")";
  std::string header = "{'descr': '" + npy_descr(t) + "', 'fortran_order': False, 'shape': " +
                       shape + ", }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out.append(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()) * t.element_size());
  return out;
}

// LibTorch's unpickler sizes a string or bytes object by the length its opcode claims before it
// reads the data (Unpickler::readBytes), so a pickle of a few bytes claiming 28 GB makes it
// allocate (and zero) that much. This walk over the opcodes checks every such length against
// what is left of the pickle first. It stops at STOP or at an opcode it does not know (LibTorch
// reports those); newline-terminated arguments need no check (their text is read as it comes).
void check_pickle_lengths(const std::vector<uint8_t>& pkl, const std::string& where) {
  size_t p = 0;
  const size_t n = pkl.size();
  auto need = [&](uint64_t bytes, const char* what) {
    if (bytes > n - p) {
      throw std::runtime_error(where + ": cannot read the torch.save file (the pickle claims " +
                               what + " of " + std::to_string(bytes) + " bytes at byte " +
                               std::to_string(p) + ", only " + std::to_string(n - p) +
                               " are left)");
    }
  };
  auto length = [&](int width) {  // a little-endian length of `width` bytes, consumed
    need(static_cast<uint64_t>(width), "an argument");
    uint64_t v = 0;
    for (int i = width; i-- > 0;) v = (v << 8) | pkl[p + static_cast<size_t>(i)];
    p += static_cast<size_t>(width);
    return v;
  };
  auto data = [&](int width, const char* what) {  // a length, then that many bytes
    const uint64_t bytes = length(width);
    need(bytes, what);
    p += static_cast<size_t>(bytes);
  };
  auto line = [&]() -> bool {  // a newline-terminated argument; false: none (LibTorch reports it)
    const auto* end = std::find(pkl.data() + p, pkl.data() + n, '\n');
    if (end == pkl.data() + n) return false;
    p = static_cast<size_t>(end - pkl.data()) + 1;
    return true;
  };
  while (p < n) {
    switch (pkl[p++]) {
      case '.':  // STOP
        return;
      case 'U': case 'C': case 0x8c:  // SHORT_BINSTRING, SHORT_BINBYTES, SHORT_BINUNICODE
        data(1, "a string");
        break;
      case 0x8a:  // LONG1
        data(1, "an integer");
        break;
      case 'T': case 'X': case 'B':  // BINSTRING, BINUNICODE, BINBYTES
        data(4, "a string");
        break;
      case 0x8b:  // LONG4
        data(4, "an integer");
        break;
      case 0x8d: case 0x8e: case 0x96:  // BINUNICODE8, BINBYTES8, BYTEARRAY8
        data(8, "a string");
        break;
      case 0x80: case 'q': case 'h': case 'K': case 0x82:  // PROTO, BINPUT, BINGET, BININT1, EXT1
        need(1, "an argument");
        p += 1;
        break;
      case 'M': case 0x83:  // BININT2, EXT2
        need(2, "an argument");
        p += 2;
        break;
      case 'J': case 'r': case 'j': case 0x84:  // BININT, LONG_BINPUT, LONG_BINGET, EXT4
        need(4, "an argument");
        p += 4;
        break;
      case 'G': case 0x95:  // BINFLOAT, FRAME (its length frames the opcodes that follow)
        need(8, "an argument");
        p += 8;
        break;
      case 'I': case 'L': case 'F': case 'S': case 'V': case 'p': case 'g': case 'P':
        if (!line()) return;  // INT, LONG, FLOAT, STRING, UNICODE, PUT, GET, PERSID
        break;
      case 'c': case 'i':  // GLOBAL, INST: module and name on two lines
        if (!line() || !line()) return;
        break;
      case '(': case '0': case '1': case '2': case 'N': case 'Q': case 'R': case 'a': case 'b':
      case 'd': case '}': case 'e': case 'l': case ']': case 'o': case 's': case 't': case ')':
      case 'u': case 0x81: case 0x85: case 0x86: case 0x87: case 0x88: case 0x89: case 0x8f:
      case 0x90: case 0x91: case 0x92: case 0x93: case 0x94: case 0x97: case 0x98:
        break;  // no argument
      default:
        return;  // not a pickle opcode: LibTorch's unpickler reports it
    }
  }
}

void put16(std::string& s, uint32_t v) {
  s += static_cast<char>(v & 0xff);
  s += static_cast<char>((v >> 8) & 0xff);
}
void put32(std::string& s, uint32_t v) {
  put16(s, v & 0xffff);
  put16(s, v >> 16);
}

// ---------------------------------------------------------------------------------------------
// torch.save files, through LibTorch's unpickler.

void flatten(const c10::IValue& v, const std::string& name, std::map<std::string, torch::Tensor>& out,
             const std::string& where, int depth) {
  if (depth > 8) throw std::runtime_error(where + ": nesting deeper than 8 levels");
  const std::string prefix = name.empty() ? "" : name + ".";
  if (v.isTensor()) {
    out[name.empty() ? "0" : name] = v.toTensor();
  } else if (v.isInt()) {
    out[name] = torch::tensor(v.toInt(), torch::kLong);
  } else if (v.isDouble()) {
    out[name] = torch::tensor(v.toDouble(), torch::kDouble);
  } else if (v.isBool()) {
    out[name] = torch::tensor(v.toBool());
  } else if (v.isTuple()) {
    const auto& elems = v.toTupleRef().elements();
    for (size_t i = 0; i < elems.size(); ++i) flatten(elems[i], prefix + std::to_string(i), out, where, depth + 1);
  } else if (v.isList()) {
    const auto list = v.toListRef();
    for (size_t i = 0; i < list.size(); ++i) flatten(list[i], prefix + std::to_string(i), out, where, depth + 1);
  } else if (v.isGenericDict()) {
    for (const auto& kv : v.toGenericDict()) {
      std::string key;
      if (kv.key().isString()) {
        key = kv.key().toStringRef();
      } else if (kv.key().isInt()) {
        key = std::to_string(kv.key().toInt());
      } else {
        throw std::runtime_error(where + ": dict keys must be strings or integers");
      }
      flatten(kv.value(), prefix + key, out, where, depth + 1);
    }
  } else if (v.isNone() || v.isString()) {
    // Notes and metadata beside the tensors: not data.
  } else {
    throw std::runtime_error(where + ": holds a " + v.tagKind() +
                             " (expected tensors, numbers and tuples, lists or dicts of them)");
  }
}

using text::ends_with;

// The first of `names` present in `t`, or "".
std::string first_present(const std::map<std::string, torch::Tensor>& t,
                          const std::vector<std::string>& names) {
  for (const auto& n : names) {
    if (t.count(n)) return n;
  }
  return "";
}

std::vector<std::string> role_names(const std::string& split, bool inputs) {
  const std::vector<std::string> roles =
      inputs ? std::vector<std::string>{"inputs", "x", "0"}
             : std::vector<std::string>{"targets", "y", "labels", "1"};
  std::vector<std::string> out;
  for (const auto& r : roles) {
    if (split.empty()) {
      out.push_back(r);
    } else {
      out.push_back(split + "." + r);
      if (r != "0" && r != "1") {
        out.push_back(split + "_" + r);
        out.push_back(r + "_" + split);
      }
    }
  }
  return out;
}

std::string names_of(const std::map<std::string, torch::Tensor>& t) {
  std::string s;
  for (const auto& [k, v] : t) s += (s.empty() ? "" : ", ") + text::printable(k);
  return s.empty() ? "nothing" : s;
}

}  // namespace

const char* target_kind_name(TargetKind kind) {
  switch (kind) {
    case TargetKind::kClass:
      return "class ids";
    case TargetKind::kSequence:
      return "per-position ids";
    case TargetKind::kReal:
      return "real values";
  }
  return "?";
}

TargetKind Dataset::target_kind() const {
  if (targets.defined() && targets.is_floating_point()) return TargetKind::kReal;
  if (targets.defined() && targets.dim() == 2) return TargetKind::kSequence;
  return TargetKind::kClass;
}

Dataset dataset_from_tensors(torch::Tensor inputs, torch::Tensor targets, int64_t num_classes,
                             const std::string& name) {
  const std::string what = "dataset '" + name + "': ";
  if (!inputs.defined() || !targets.defined()) {
    throw std::invalid_argument(what + "inputs and targets are both needed");
  }
  if (inputs.dim() < 1 || targets.dim() < 1) {
    throw std::invalid_argument(what + "inputs and targets need a sample dimension first, got " +
                                shape_text(inputs) + " and " + shape_text(targets));
  }
  if (inputs.is_complex() || inputs.scalar_type() == torch::kBool) {
    throw std::invalid_argument(what + "inputs must be floating point or integer token ids, got " +
                                std::string(c10::toString(inputs.scalar_type())));
  }
  if (targets.is_complex() || targets.scalar_type() == torch::kBool) {
    throw std::invalid_argument(what + "targets must be integer ids or real values, got " +
                                std::string(c10::toString(targets.scalar_type())));
  }
  if (targets.size(0) != inputs.size(0)) {
    throw std::invalid_argument(what + "targets must have N = " + std::to_string(inputs.size(0)) +
                                " samples (the inputs'), got " + shape_text(targets));
  }
  if (inputs.size(0) == 0) throw std::invalid_argument(what + "no samples");
  if (num_classes < 0) {
    throw std::invalid_argument(what + "num_classes must be >= 0, got " + std::to_string(num_classes));
  }
  Dataset d;
  d.name = name;
  // No copy when the tensors are already float32 / int64, contiguous, on the CPU.
  d.inputs = inputs.to(torch::kCPU).to(inputs.is_floating_point() ? torch::kFloat : torch::kLong)
                 .contiguous();
  const bool real = targets.is_floating_point();
  d.targets = targets.to(torch::kCPU).to(real ? torch::kFloat : torch::kLong).contiguous();
  if (d.inputs.is_floating_point() && !torch::isfinite(d.inputs).all().item<bool>()) {
    throw std::invalid_argument(what + "inputs hold NaN or infinite values");
  }
  if (!d.inputs.is_floating_point() && d.inputs.min().item<int64_t>() < 0) {
    throw std::invalid_argument(what + "integer inputs (token ids) must be >= 0, got " +
                                std::to_string(d.inputs.min().item<int64_t>()));
  }
  if (real) {
    if (!torch::isfinite(d.targets).all().item<bool>()) {
      throw std::invalid_argument(what + "targets hold NaN or infinite values");
    }
    d.num_classes = 0;
  } else {
    if (d.targets.dim() > 2) {
      throw std::invalid_argument(what + "integer targets must be [N] class ids or [N, T] ids per "
                                  "position, got " + shape_text(d.targets));
    }
    const bool sequence = d.targets.dim() == 2;
    const torch::Tensor used = sequence ? d.targets.masked_select(d.targets.ge(0)) : d.targets;
    if (used.numel() == 0) throw std::invalid_argument(what + "every target position is ignored (negative)");
    const int64_t lo = used.min().item<int64_t>(), hi = used.max().item<int64_t>();
    if (num_classes == 0) num_classes = hi + 1;
    if (lo < 0 || hi >= num_classes) {
      throw std::invalid_argument(what + "targets must be class ids in [0, " +
                                  std::to_string(num_classes) + "), got values in [" +
                                  std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    d.num_classes = num_classes;
  }
  // Per-channel normalisation constants of image-like inputs: as given (none applied).
  const int64_t c = d.inputs.dim() == 4 ? d.inputs.size(1) : 1;
  d.mean.assign(static_cast<size_t>(c), 0.0);
  d.stddev.assign(static_cast<size_t>(c), 1.0);
  return d;
}

std::map<std::string, torch::Tensor> read_tensor_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open tensor file: No such file or directory");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string ext = text::lower(fs::path(path).extension().string());
  std::map<std::string, torch::Tensor> out;
  const auto* u = reinterpret_cast<const uint8_t*>(bytes.data());
  if (ext == ".npy") {
    out[fs::path(path).stem().string()] = parse_npy(u, bytes.size(), path);
  } else if (ext == ".npz") {
    for (auto& [name, data] : read_zip({u, bytes.size()}, path)) {
      if (!ends_with(name, ".npy")) continue;
      const std::string key = name.substr(0, name.size() - 4);
      out[key] = parse_npy(data.data(), data.size(), path + ":" + text::printable(name));
    }
    if (out.empty()) throw std::runtime_error(path + ": the .npz archive holds no arrays");
  } else if (ext == ".pt" || ext == ".pth") {
    if (bytes.size() < 4 || !(bytes[0] == 'P' && bytes[1] == 'K')) {
      throw std::runtime_error(path + ": not a torch.save file (zip format of PyTorch >= 1.6; "
                               "save with torch.save(obj, path))");
    }
    // The archive's structure and the pickle's claimed lengths first: LibTorch allocates what a
    // corrupt header or pickle claims before it finds out that the data is not there.
    const auto is_pickle = [](const std::string& name) {
      return name == "data.pkl" || ends_with(name, "/data.pkl");
    };
    std::vector<std::pair<std::string, std::vector<uint8_t>>> pickles;
    try {
      pickles = read_zip({u, bytes.size()}, path, is_pickle);
    } catch (const std::runtime_error& e) {  // "PATH: what" -> "PATH: not a torch.save file (what)"
      throw std::runtime_error(path + ": not a torch.save file (" +
                               std::string(e.what()).substr(path.size() + 2) + ")");
    }
    for (const auto& [name, pkl] : pickles) {
      check_pickle_lengths(pkl, path + ":" + text::printable(name));
    }
    if (pickles.empty()) {
      throw std::runtime_error(path + ": not a torch.save file (no data.pkl in the archive)");
    }
    c10::IValue v;
    try {
      v = torch::jit::pickle_load(bytes);
    } catch (const std::exception& e) {
      // c10::Error, or a standard exception of the unpickler's own on a corrupt pickle
      // (std::out_of_range: an index past the end of one of its tables): the first line.
      const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
      std::string msg = c10_error ? c10_error->what_without_backtrace() : e.what();
      msg = msg.substr(0, msg.find('\n'));
      throw std::runtime_error(path + ": cannot read the torch.save file (" + msg + ")");
    }
    flatten(v, "", out, path, 0);
    if (out.empty()) throw std::runtime_error(path + ": holds no tensors");
  } else {
    throw std::runtime_error(path + ": unknown tensor file type '" + ext +
                             "' (expected .pt, .pth, .npy or .npz)");
  }
  for (auto& [name, t] : out) {
    if (t.is_sparse() || t.is_quantized()) {
      throw std::runtime_error(path + ": tensor " + text::printable(name) +
                               " is sparse or quantized (not supported)");
    }
    t = t.to(torch::kCPU);
  }
  return out;
}

void write_npy(const std::string& path, const torch::Tensor& t) {
  write_file_atomic(path, npy_bytes(t));
}

void write_npz(const std::string& path, const std::map<std::string, torch::Tensor>& tensors) {
  std::string out, directory;
  uint32_t count = 0;
  for (const auto& [name, t] : tensors) {
    const std::string data = npy_bytes(t);
    const std::string file = name + ".npy";
    const uint32_t crc = crc32(0L, reinterpret_cast<const Bytef*>(data.data()),
                               static_cast<uInt>(data.size()));
    const auto offset = static_cast<uint32_t>(out.size());
    put32(out, 0x04034b50);
    put16(out, 20), put16(out, 0), put16(out, 0), put16(out, 0), put16(out, 0x21);
    put32(out, crc), put32(out, static_cast<uint32_t>(data.size()));
    put32(out, static_cast<uint32_t>(data.size()));
    put16(out, static_cast<uint32_t>(file.size())), put16(out, 0);
    out += file;
    out += data;
    put32(directory, 0x02014b50);
    put16(directory, 20), put16(directory, 20), put16(directory, 0), put16(directory, 0);
    put16(directory, 0), put16(directory, 0x21);
    put32(directory, crc), put32(directory, static_cast<uint32_t>(data.size()));
    put32(directory, static_cast<uint32_t>(data.size()));
    put16(directory, static_cast<uint32_t>(file.size()));
    put16(directory, 0), put16(directory, 0), put16(directory, 0), put16(directory, 0);
    put32(directory, 0), put32(directory, offset);
    directory += file;
    ++count;
  }
  const auto cd_offset = static_cast<uint32_t>(out.size());
  out += directory;
  put32(out, 0x06054b50);
  put16(out, 0), put16(out, 0), put16(out, count), put16(out, count);
  put32(out, static_cast<uint32_t>(directory.size())), put32(out, cd_offset);
  put16(out, 0);
  write_file_atomic(path, out);
}

Dataset read_tensor_dataset(const DataOptions& opts) {
  const std::string split = opts.split == Split::kTrain ? "train" : "test";
  if (opts.dir.empty()) {
    throw std::runtime_error("dataset 'tensors' needs a file or folder (--data-dir PATH)");
  }
  std::map<std::string, torch::Tensor> t;
  std::string source = opts.dir, prefix = split;
  if (fs::is_directory(opts.dir)) {
    prefix.clear();
    for (const char* ext : {".pt", ".pth", ".npz"}) {
      const fs::path f = fs::path(opts.dir) / (split + ext);
      if (fs::exists(f)) {
        source = f.string();
        t = read_tensor_file(source);
        break;
      }
    }
    if (t.empty()) {
      for (const auto& [a, b] : {std::pair<const char*, const char*>{"inputs", "targets"},
                                 {"x", "y"}}) {
        const fs::path x = fs::path(opts.dir) / (split + "_" + a + ".npy");
        const fs::path y = fs::path(opts.dir) / (split + "_" + b + ".npy");
        if (fs::exists(x) && fs::exists(y)) {
          t["inputs"] = read_tensor_file(x.string()).begin()->second;
          t["targets"] = read_tensor_file(y.string()).begin()->second;
          source = x.string();
          const fs::path nc = fs::path(opts.dir) / "num_classes.npy";
          if (fs::exists(nc)) t["num_classes"] = read_tensor_file(nc.string()).begin()->second;
          break;
        }
      }
    }
    if (t.empty()) {
      throw std::runtime_error(opts.dir + ": no " + split + " split: expected " + split +
                               ".pt, " + split + ".pth, " + split + ".npz or " + split +
                               "_inputs.npy with " + split + "_targets.npy");
    }
  } else if (fs::exists(opts.dir)) {
    t = read_tensor_file(opts.dir);
  } else {
    throw std::runtime_error(opts.dir + ": cannot open tensor data: No such file or directory");
  }
  const std::string x = first_present(t, role_names(prefix, true));
  const std::string y = first_present(t, role_names(prefix, false));
  if (x.empty() || y.empty()) {
    throw std::runtime_error(source + ": no " + (x.empty() ? "inputs" : "targets") + " for the " +
                             split + " split (looked for " +
                             (x.empty() ? role_names(prefix, true) : role_names(prefix, false))[0] +
                             " and its aliases; the file holds " + names_of(t) + ")");
  }
  int64_t classes = 0;
  const std::string nc = first_present(t, {prefix.empty() ? "num_classes" : prefix + ".num_classes",
                                           "num_classes", "classes"});
  if (!nc.empty()) {
    const torch::Tensor& c = t.at(nc);
    if (c.numel() != 1 || c.is_floating_point()) {
      throw std::runtime_error(source + ": " + nc + " must be one integer");
    }
    classes = c.item<int64_t>();
    if (classes < 1) throw std::runtime_error(source + ": " + nc + " must be >= 1, got " + std::to_string(classes));
  }
  torch::Tensor inputs = t.at(x), targets = t.at(y);
  if (inputs.dim() >= 1 && targets.dim() >= 1 && inputs.size(0) == targets.size(0)) {
    const int64_t n = inputs.size(0);
    if (opts.shuffle_seed != 0) {
      at::Generator gen = at::detail::createCPUGenerator(opts.shuffle_seed);
      const auto perm = torch::randperm(n, gen, torch::kLong);
      inputs = inputs.index_select(0, perm);
      targets = targets.index_select(0, perm);
    }
    if (opts.limit > 0 && opts.limit < n) {
      inputs = inputs.narrow(0, 0, opts.limit);
      targets = targets.narrow(0, 0, opts.limit);
    }
  }
  try {
    return dataset_from_tensors(inputs, targets, classes, "tensors");
  } catch (const std::invalid_argument& e) {
    std::string msg = e.what();
    const std::string tag = "dataset 'tensors': ";
    if (msg.rfind(tag, 0) == 0) msg = msg.substr(tag.size());
    throw std::runtime_error(source + " (" + split + "): " + msg);
  }
}

}  // namespace quell
