// A read-only memory map of a whole weights file; the OS pages weights in on first use and can
// drop them under memory pressure, so loading a model costs no copy.
#pragma once
#include <cstddef>
#include <string>

namespace lp {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const char* data() const { return static_cast<const char*>(data_); }
  size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace lp
