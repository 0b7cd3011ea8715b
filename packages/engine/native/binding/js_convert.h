// The one place where JS values become backend inputs. Every index, size and range a backend
// relies on is checked here, on the JS thread, so backends can trust what they receive and bad
// input becomes a JS error instead of a crash.
#pragma once
#include <napi.h>

#include <memory>
#include <vector>

#include "../core/backend.h"
#include "mapped_file.h"

namespace lp {

struct LoadedSpec {
  ModelSpec spec;
  std::vector<std::unique_ptr<MappedFile>> files;  // keep the weights mapped while the model lives
};

// Parses {config, files, tensors, kvBlocks, blockSize, maxAdapters, maxRank, loraPages, threads}.
// Files are mapped later (map_weights), on a worker thread.
struct ModelRequest {
  ModelSpec spec;
  std::vector<std::string> paths;
  struct Tensor { std::string key; int file; int64_t offset; DType dtype; std::vector<int64_t> shape; };
  std::vector<Tensor> tensors;
  std::string backend;
};
ModelRequest parse_model_request(const Napi::Object& o);
// Maps the files and resolves every tensor into spec (runs off the JS thread).
void map_weights(ModelRequest& req, LoadedSpec& out);

StepInput parse_step(const Napi::Object& o, const ModelSpec& spec, const std::vector<bool>& slot_bound);
// An adapter as the JS side hands it over: A and B in their stored dtype. Copying the bytes is all
// that happens on the JS thread; widen() (on a worker thread) makes the float32 AdapterSpec.
struct RawAdapter {
  AdapterSpec spec;                         // rank, scale, max_rank; a and b filled by widen()
  std::vector<std::vector<uint8_t>> a, b;   // [layers * kNumModules] raw bytes
  std::vector<DType> a_dtype, b_dtype;
  std::vector<std::vector<uint8_t>> magnitude;  // DoRA m [out] per module, empty when not DoRA
  std::vector<DType> magnitude_dtype;
  size_t dora_floats = 0;                   // elements of all magnitude vectors (the scales kept natively)
  void widen();
};
RawAdapter parse_adapter(const Napi::Object& o, const ModelSpec& spec);
Napi::Object step_output_to_js(Napi::Env env, const StepOutput& out, int max_top);

}  // namespace lp
