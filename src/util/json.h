// Internal helpers for readers of JSON configurations (not part of the public API).
#pragma once

#include <initializer_list>
#include <stdexcept>
#include <string>

#include "quell/io.h"
#include "util/text.h"

namespace quell::json {

/// Rejects keys a JSON object should not have: a typo must not silently leave a value at its
/// default. Throws std::invalid_argument naming `what`, the key and the known keys.
inline void check_keys(const Json& j, std::initializer_list<const char*> allowed,
                       const std::string& what) {
  if (!j.is_object()) throw std::invalid_argument(what + " must be a JSON object");
  for (const auto& kv : j.items()) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || kv.key() == a;
    if (!ok) {
      std::string known;
      for (const char* a : allowed) known += (known.empty() ? "" : ", ") + std::string(a);
      throw std::invalid_argument(what + ": unknown key '" + text::printable(kv.key()) +
                                  "' (known: " + known + ")");
    }
  }
}

/// Runs `read`; a value of the wrong JSON type is nlohmann's error, which names no field: it
/// becomes std::invalid_argument naming `what` ("device: type must be number, but is string").
template <typename F>
auto part(const std::string& what, F&& read) -> decltype(read()) {
  try {
    return read();
  } catch (const Json::exception& e) {
    const std::string s = e.what();  // "[json.exception.type_error.302] type must be ..."
    const auto end = s.find("] ");
    throw std::invalid_argument(what + ": " + (end == std::string::npos ? s : s.substr(end + 2)));
  }
}

}  // namespace quell::json
