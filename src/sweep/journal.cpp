// StudyJournal: keyed results of a resumable study, one JSON line each, fsync'd.
#include "quell/journal.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace quell {
namespace {

constexpr int kJournalVersion = 1;

}  // namespace

std::string json_difference(const Json& a, const Json& b) {
  std::string at;
  const Json* x = &a;
  const Json* y = &b;
  while (x->is_object() && y->is_object()) {
    const Json* nx = nullptr;
    for (const auto& [k, v] : x->items()) {
      const std::string path = at.empty() ? k : at + "." + k;
      if (!y->contains(k)) return path + " (missing in one)";
      if (v != y->at(k)) {
        at = path;
        nx = &v;
        y = &y->at(k);
        break;
      }
    }
    if (nx == nullptr) {
      for (const auto& [k, v] : y->items()) {
        if (!x->contains(k)) return (at.empty() ? k : at + "." + k) + " (missing in one)";
      }
      break;
    }
    x = nx;
  }
  std::string sa = x->dump(), sb = y->dump();
  if (sa.size() > 60) sa = sa.substr(0, 57) + "...";
  if (sb.size() > 60) sb = sb.substr(0, 57) + "...";
  return (at.empty() ? std::string("value") : at) + ": " + sa + " vs " + sb;
}

StudyJournal::StudyJournal(std::string path, std::string kind, Json fingerprint, bool writer)
    : path_(std::move(path)), writer_(writer) {
  if (path_.empty()) return;
  const Json header{{"quell_journal", kJournalVersion}, {"kind", kind},
                    {"fingerprint", fingerprint}};
  if (!std::filesystem::exists(path_)) {
    if (writer_) write_file_atomic(path_, header.dump() + "\n");
    return;
  }
  std::ifstream in(path_, std::ios::binary);
  if (!in) throw std::runtime_error(path_ + ": cannot open the journal");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string all = ss.str();
  size_t pos = 0, good = 0;
  int line_no = 0;
  while (pos < all.size()) {
    const size_t nl = all.find('\n', pos);
    if (nl == std::string::npos) break;  // torn last line: written partly when killed
    ++line_no;
    Json j;
    try {
      j = Json::parse(all.substr(pos, nl - pos));
    } catch (const Json::exception&) {
      throw std::runtime_error(path_ + ": line " + std::to_string(line_no) +
                               " is not valid JSON (corrupt journal)");
    }
    if (line_no == 1) {
      // Compared as JSON values: a header field of another type is another journal (value()
      // would throw nlohmann's type_error instead).
      if (!j.is_object() || !j.contains("fingerprint") ||
          j["quell_journal"] != Json(kJournalVersion) || j["kind"] != Json(kind)) {
        throw std::runtime_error(path_ + ": not a quell " + kind + " journal");
      }
      if (j.at("fingerprint") != fingerprint) {
        throw std::runtime_error(path_ + " holds a different " + kind + " study (" +
                                 json_difference(j.at("fingerprint"), fingerprint) +
                                 "); use another output directory or restart the study");
      }
    } else {
      if (!j.is_object() || !j.contains("key") || !j.at("key").is_string() ||
          !j.contains("value")) {
        throw std::runtime_error(path_ + ": line " + std::to_string(line_no) +
                                 " is not a journal record");
      }
      values_.emplace(j.at("key").get<std::string>(), j.at("value"));
    }
    pos = nl + 1;
    good = pos;
  }
  if (line_no == 0) throw std::runtime_error(path_ + ": empty or truncated journal");
  if (good != all.size() && writer_) std::filesystem::resize_file(path_, good);  // a torn line
  resumed_ = values_.size();
}

const Json* StudyJournal::find(const std::string& key) const {
  const auto it = values_.find(key);
  return it == values_.end() ? nullptr : &it->second;
}

void StudyJournal::append(const std::string& key, const Json& value) {
  if (!values_.emplace(key, value).second) return;
  if (!path_.empty() && writer_) {
    append_file_durably(path_, Json{{"key", key}, {"value", value}}.dump() + "\n");
  }
}

}  // namespace quell
