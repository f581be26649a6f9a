#include "base/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <random>

namespace pcfarm {
namespace {

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

std::string ParentDir(const std::string& path) {
  std::filesystem::path p(path);
  auto parent = p.parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

}  // namespace

Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError(Errno("open directory", dir));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return IoError(Errno("fsync directory", dir));
  return Status::Ok();
}

Status WriteFileAtomic(const std::string& path, std::string_view data,
                       unsigned mode) {
  std::random_device rd;
  std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." +
                    std::to_string(rd());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return IoError(Errno("create", tmp));
  // The umask may have cleared bits; set exactly what was asked.
  if (::fchmod(fd, mode) != 0) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return IoError(Errno("chmod", tmp));
  }
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      ::unlink(tmp.c_str());
      return IoError(Errno("write", tmp));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return IoError(Errno("fsync", tmp));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return IoError(Errno("rename to", path));
  }
  return SyncDir(ParentDir(path));
}

Result<std::string> ReadFile(const std::string& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound("no such file: " + path);
    return IoError(Errno("open", path));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return IoError(Errno("stat", path));
  }
  if (static_cast<size_t>(st.st_size) > max_bytes) {
    ::close(fd);
    return ResourceExhausted(path + ": " + std::to_string(st.st_size) +
                             " bytes is over the limit of " +
                             std::to_string(max_bytes));
  }
  // st_size is only a hint: files under /proc report 0. Read to the end.
  std::string out;
  out.resize(std::max<size_t>(static_cast<size_t>(st.st_size), 4096));
  size_t done = 0;
  while (true) {
    if (done == out.size()) {
      if (out.size() >= max_bytes) {
        // Exactly max_bytes so far: over the limit only if more follows.
        char extra;
        ssize_t more;
        do {
          more = ::read(fd, &extra, 1);
        } while (more < 0 && errno == EINTR);
        if (more == 0) break;
        ::close(fd);
        return ResourceExhausted(path + " is over the limit of " +
                                 std::to_string(max_bytes) + " bytes");
      }
      out.resize(std::min(max_bytes, out.size() * 2));
    }
    ssize_t n = ::read(fd, out.data() + done, out.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return IoError(Errno("read", path));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(done);
  return out;
}

Status CheckPrivateFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return NotFound("no such file: " + path);
    return IoError(Errno("stat", path));
  }
  if ((st.st_mode & 077) != 0) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", st.st_mode & 07777);
    return PermissionDenied(path + ": mode " + buf +
                            " lets other users read it; run chmod 600 " + path);
  }
  return Status::Ok();
}

Status MakeDirs(const std::string& dir, unsigned mode) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return IoError("create directory " + dir + ": " + ec.message());
  ::chmod(dir.c_str(), mode);
  return Status::Ok();
}

}  // namespace pcfarm
