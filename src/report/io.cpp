// Result output: atomic file writes, provenance, CSV.

#include "quell/io.h"

#include <ATen/Parallel.h>
#include <fcntl.h>
#include <torch/version.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <utility>

// Generated at every build by cmake/version.cmake.
#include "quell/version_info.h"

namespace quell {
namespace {

[[noreturn]] void throw_write_error(const std::string& path, const char* what, int err) {
  throw std::runtime_error("cannot write '" + path + "': " + what + ": " + std::strerror(err));
}

// Directory part of `path` ("." if none), for fsync after the rename.
std::string parent_directory(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& content) {
  if (path.empty()) throw std::runtime_error("cannot write '': empty path");
  // A temporary name unique per process and per call, so concurrent writers (threads or
  // processes) never share one; same directory as `path`, so rename() stays atomic.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = path + ".tmp." + std::to_string(static_cast<long long>(::getpid())) +
                          "." + std::to_string(counter.fetch_add(1));

  // "x": fail rather than reuse a file left behind by a crashed process with a recycled pid.
  std::FILE* file = std::fopen(tmp.c_str(), "wbx");
  if (file == nullptr) throw_write_error(path, "creating temporary file", errno);

  const char* failed_step = nullptr;
  int err = 0;
  if (!content.empty() && std::fwrite(content.data(), 1, content.size(), file) != content.size()) {
    failed_step = "writing";
    err = errno;
  } else if (std::fflush(file) != 0) {
    failed_step = "flushing";
    err = errno;
  } else if (::fsync(::fileno(file)) != 0) {
    failed_step = "syncing";
    err = errno;
  }
  if (std::fclose(file) != 0 && failed_step == nullptr) {
    failed_step = "closing";
    err = errno;
  }
  if (failed_step == nullptr && std::rename(tmp.c_str(), path.c_str()) != 0) {
    failed_step = "renaming temporary file";
    err = errno;
  }
  if (failed_step != nullptr) {
    std::remove(tmp.c_str());
    throw_write_error(path, failed_step, err);
  }

  // Make the rename itself durable. Best effort: the new content is already in place.
  const int dir_fd = ::open(parent_directory(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

void append_file_durably(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw_write_error(path, "opening for appending", errno);
  const off_t start = ::lseek(fd, 0, SEEK_END);
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t w = ::write(fd, text.data() + off, text.size() - off);
    if (w < 0) {
      const int err = errno;
      // A full disk takes part of the text: cut it off again, so the file never ends in half a
      // record (the journals would drop a torn last line, but only as the last one).
      if (off > 0 && start >= 0 && ::ftruncate(fd, start) != 0) {
        // Nothing more to do: the error below is reported either way.
      }
      ::close(fd);
      throw_write_error(path, "appending", err);
    }
    off += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    throw_write_error(path, "syncing", err);
  }
  ::close(fd);
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  if (::gmtime_r(&now, &utc) == nullptr) return "1970-01-01T00:00:00Z";
  char buf[32];
  const size_t len = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return std::string(buf, len);
}

std::string version_string() { return QUELL_VERSION " (" QUELL_GIT_COMMIT ")"; }

namespace {

// RFC 4180: a field with a comma, quote, CR or LF is enclosed in quotes, quotes doubled.
void append_csv_field(std::string& out, const std::string& field) {
  if (field.find_first_of(",\"\r\n") == std::string::npos) {
    out += field;
    return;
  }
  out += '"';
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
}

void append_csv_row(std::string& out, const std::vector<std::string>& row) {
  for (size_t i = 0; i < row.size(); ++i) {
    if (i > 0) out += ',';
    append_csv_field(out, row[i]);
  }
  out += '\n';
}

}  // namespace

CsvTable::CsvTable(std::vector<std::string> header) : header_(std::move(header)) {}

void CsvTable::add_row(std::vector<std::string> row) {
  if (row.size() != header_.size()) {
    throw std::invalid_argument("CsvTable::add_row: row " + std::to_string(rows_.size()) + " has " +
                                std::to_string(row.size()) + " fields, header has " +
                                std::to_string(header_.size()));
  }
  rows_.push_back(std::move(row));
}

std::string CsvTable::str() const {
  std::string out;
  append_csv_row(out, header_);
  for (const auto& row : rows_) append_csv_row(out, row);
  return out;
}

namespace {

std::string format_g(double v, int precision) {
  const int len = std::snprintf(nullptr, 0, "%.*g", precision, v);
  std::string out(static_cast<size_t>(len) + 1, '\0');
  std::snprintf(out.data(), out.size(), "%.*g", precision, v);
  out.resize(static_cast<size_t>(len));
  return out;
}

}  // namespace

std::string fmt_double(double v, int precision) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (precision > 0) return format_g(v, precision);
  // precision <= 0: the shortest "%g" form that reads back as exactly v (17 digits always do).
  for (int digits = 1; digits < 17; ++digits) {
    std::string s = format_g(v, digits);
    if (std::strtod(s.c_str(), nullptr) == v) return s;
  }
  return format_g(v, 17);
}

}  // namespace quell
