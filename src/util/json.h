// Internal helpers for readers of JSON configurations (not part of the public API).
#pragma once

#include <cmath>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

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

/// `v` as an integer of type T: a JSON integer, or a number with no fraction (2.0), within T's
/// range; else std::invalid_argument "`what` must be an integer ..., got <v>". nlohmann's own
/// get<int>() converts a double beyond the range (1e20) with undefined behaviour and cuts a
/// fraction off silently.
template <typename T = int>
T integer(const Json& v, const std::string& what) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>);
  const auto lo = static_cast<long double>(std::numeric_limits<T>::min());
  const auto hi = static_cast<long double>(std::numeric_limits<T>::max());
  bool ok = false;
  if (v.is_number_unsigned()) {
    ok = static_cast<long double>(v.get<uint64_t>()) <= hi;
  } else if (v.is_number_integer()) {
    const auto x = static_cast<long double>(v.get<int64_t>());
    ok = x >= lo && x <= hi;
  } else if (v.is_number_float()) {
    const auto x = static_cast<long double>(v.get<double>());
    ok = std::isfinite(static_cast<double>(x)) && x == std::floor(x) && x >= lo && x <= hi;
  }
  if (!ok) {
    throw std::invalid_argument(
        what + " must be an integer in [" + std::to_string(+std::numeric_limits<T>::min()) + ", " +
        std::to_string(+std::numeric_limits<T>::max()) + "], got " + text::printable(v.dump()));
  }
  if (v.is_number_float()) return static_cast<T>(v.get<double>());
  if (v.is_number_unsigned()) return static_cast<T>(v.get<uint64_t>());
  return static_cast<T>(v.get<int64_t>());
}

/// j[key] read by integer(), or `fallback` when `j` has no `key` (nlohmann's value() with an
/// integer default converts like get<int>()).
template <typename T>
T integer_or(const Json& j, const char* key, T fallback) {
  return j.contains(key) ? integer<T>(j.at(key), key) : fallback;
}

/// j[key], an array of integers each read by integer(), or an empty vector without `key`.
template <typename T>
std::vector<T> integers_or_empty(const Json& j, const char* key) {
  std::vector<T> out;
  if (!j.contains(key)) return out;
  const Json& a = j.at(key);
  if (!a.is_array()) {
    throw std::invalid_argument(std::string(key) + " must be an array of integers, got " +
                                text::printable(a.dump()));
  }
  for (const Json& v : a) out.push_back(integer<T>(v, key));
  return out;
}

}  // namespace quell::json
