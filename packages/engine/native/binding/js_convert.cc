#include "js_convert.h"

#include <cstring>
#include <string>

#include "../core/dtype.h"

namespace lp {

[[noreturn]] static void fail(const std::string& msg) { throw EngineFailure("INVALID_ARGUMENT", msg); }

static int64_t get_int(const Napi::Object& o, const char* key, int64_t lo, int64_t hi) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) fail(std::string(key) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != double(int64_t(d)) || d < double(lo) || d > double(hi))
    fail(std::string(key) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(d));
  return int64_t(d);
}

static double get_num(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) fail(std::string(key) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

template <typename T, napi_typedarray_type K>
static std::vector<T> get_array(const Napi::Object& o, const char* key, const char* tname) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != K) fail(std::string(key) + " must be a " + tname);
  auto a = v.As<Napi::TypedArrayOf<T>>();
  return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
}
#define I32(o, k) get_array<int32_t, napi_int32_array>(o, k, "Int32Array")
#define U32(o, k) get_array<uint32_t, napi_uint32_array>(o, k, "Uint32Array")
#define U8(o, k) get_array<uint8_t, napi_uint8_array>(o, k, "Uint8Array")
#define F32(o, k) get_array<float, napi_float32_array>(o, k, "Float32Array")
#define F64(o, k) get_array<double, napi_float64_array>(o, k, "Float64Array")

static DType parse_dtype(const std::string& s) {
  if (s == "F32") return DType::F32;
  if (s == "F16") return DType::F16;
  if (s == "BF16") return DType::BF16;
  fail("unsupported weight dtype " + s + " (expected F32, F16 or BF16)");
}

ModelRequest parse_model_request(const Napi::Object& o) {
  ModelRequest r;
  ModelSpec& s = r.spec;
  Napi::Value cv = o.Get("config");
  if (!cv.IsObject()) fail("config must be an object");
  Napi::Object c = cv.As<Napi::Object>();
  s.vocab = int(get_int(c, "vocab", 1, 1 << 24));
  s.hidden = int(get_int(c, "hidden", 1, 1 << 20));
  s.intermediate = int(get_int(c, "intermediate", 1, 1 << 22));
  s.layers = int(get_int(c, "layers", 1, 4096));
  s.heads = int(get_int(c, "heads", 1, 4096));
  s.kv_heads = int(get_int(c, "kvHeads", 1, s.heads));
  s.head_dim = int(get_int(c, "headDim", 2, 1024));
  if (s.heads % s.kv_heads != 0) fail("heads must be a multiple of kvHeads");
  if (s.head_dim % 2 != 0) fail("headDim must be even");
  s.rms_eps = float(get_num(c, "rmsEps"));
  s.sliding_window = int(get_int(c, "slidingWindow", 0, 1 << 30));
  s.inv_freq = F32(c, "invFreq");
  Napi::Value qn = c.Get("qkNorm");
  if (!qn.IsUndefined() && !qn.IsBoolean()) fail("qkNorm must be a boolean");
  s.qk_norm = qn.IsBoolean() && qn.As<Napi::Boolean>().Value();
  if (int(s.inv_freq.size()) != s.head_dim / 2) fail("invFreq must have headDim / 2 entries");
  s.kv_blocks = int(get_int(o, "kvBlocks", 1, 1 << 24));
  s.block_size = int(get_int(o, "blockSize", 1, 4096));
  s.max_adapters = int(get_int(o, "maxAdapters", 0, 1 << 16));
  s.max_rank = int(get_int(o, "maxRank", 1, 1024));
  s.lora_pages = int(get_int(o, "loraPages", 0, 1 << 24));
  s.threads = int(get_int(o, "threads", 0, 1024));
  Napi::Value ld = o.Get("loraDtype");
  if (!ld.IsUndefined()) {
    if (!ld.IsString()) fail("loraDtype must be F32 or BF16");
    s.lora_dtype = parse_dtype(ld.As<Napi::String>().Utf8Value());
    if (s.lora_dtype == DType::F16) fail("loraDtype must be F32 or BF16");
  }
  Napi::Value bv = o.Get("backend");
  r.backend = bv.IsString() ? bv.As<Napi::String>().Utf8Value() : "cpu";
  Napi::Value fv = o.Get("files");
  if (!fv.IsArray()) fail("files must be an array of paths");
  Napi::Array files = fv.As<Napi::Array>();
  for (uint32_t i = 0; i < files.Length(); i++) {
    Napi::Value p = files.Get(i);
    if (!p.IsString()) fail("files must be an array of paths");
    r.paths.push_back(p.As<Napi::String>().Utf8Value());
  }
  Napi::Value tv = o.Get("tensors");
  if (!tv.IsArray()) fail("tensors must be an array");
  Napi::Array ts = tv.As<Napi::Array>();
  for (uint32_t i = 0; i < ts.Length(); i++) {
    Napi::Value e = ts.Get(i);
    if (!e.IsObject()) fail("tensors entries must be objects");
    Napi::Object t = e.As<Napi::Object>();
    ModelRequest::Tensor x;
    Napi::Value k = t.Get("key"), d = t.Get("dtype"), sh = t.Get("shape");
    if (!k.IsString() || !d.IsString() || !sh.IsArray()) fail("tensor entries need key, dtype and shape");
    x.key = k.As<Napi::String>().Utf8Value();
    x.dtype = parse_dtype(d.As<Napi::String>().Utf8Value());
    x.file = int(get_int(t, "file", 0, int64_t(r.paths.size()) - 1));
    x.offset = get_int(t, "offset", 0, int64_t(1) << 52);
    Napi::Array sa = sh.As<Napi::Array>();
    for (uint32_t j = 0; j < sa.Length(); j++) {
      Napi::Value dv = sa.Get(j);
      if (!dv.IsNumber()) fail("tensor shape entries must be numbers");
      x.shape.push_back(dv.As<Napi::Number>().Int64Value());
    }
    r.tensors.push_back(std::move(x));
  }
  return r;
}

void map_weights(ModelRequest& req, LoadedSpec& out) {
  for (auto& p : req.paths) out.files.push_back(std::make_unique<MappedFile>(p));
  ModelSpec& s = req.spec;
  s.layer.assign(size_t(s.layers), LayerWeights{});
  auto expect = [&](const ModelRequest::Tensor& t, std::initializer_list<int64_t> shape) {
    if (t.shape != std::vector<int64_t>(shape)) {
      std::string want, got;
      for (auto d : shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
      for (auto d : t.shape) got += (got.empty() ? "" : ", ") + std::to_string(d);
      throw EngineFailure("TENSOR_SHAPE", t.key + " has shape [" + got + "], expected [" + want + "]");
    }
  };
  auto ref = [&](const ModelRequest::Tensor& t) {
    WeightRef w;
    w.dtype = t.dtype;
    w.rows = t.shape.size() == 2 ? t.shape[0] : 1;
    w.cols = t.shape.empty() ? 1 : t.shape.back();
    const size_t bytes = size_t(w.rows * w.cols) * (t.dtype == DType::F32 ? 4 : 2);
    const MappedFile& f = *out.files[size_t(t.file)];
    if (size_t(t.offset) + bytes > f.size()) throw EngineFailure("INVALID_SAFETENSORS", t.key + " lies beyond the end of its file");
    w.data = f.data() + t.offset;
    return w;
  };
  const int64_t H = s.hidden, I = s.intermediate, Q = int64_t(s.heads) * s.head_dim, KV = int64_t(s.kv_heads) * s.head_dim;
  for (auto& t : req.tensors) {
    const std::string& k = t.key;
    if (k == "embed") { expect(t, {s.vocab, H}); s.embed = ref(t); continue; }
    if (k == "final_norm") { expect(t, {H}); s.final_norm = ref(t); continue; }
    if (k == "lm_head") { expect(t, {s.vocab, H}); s.lm_head = ref(t); continue; }
    size_t dot = k.find('.');
    if (k.rfind("layers.", 0) != 0 || (dot = k.find('.', 7)) == std::string::npos) throw EngineFailure("MISSING_TENSOR", "unknown tensor key " + k);
    int l = std::stoi(k.substr(7, dot - 7));
    if (l < 0 || l >= s.layers) throw EngineFailure("MISSING_TENSOR", "tensor " + k + " names a layer out of range");
    std::string n = k.substr(dot + 1);
    LayerWeights& L = s.layer[size_t(l)];
    if (n == "attn_norm") { expect(t, {H}); L.attn_norm = ref(t); }
    else if (n == "ffn_norm") { expect(t, {H}); L.ffn_norm = ref(t); }
    else if (n == "q") { expect(t, {Q, H}); L.proj[kQ] = ref(t); }
    else if (n == "k") { expect(t, {KV, H}); L.proj[kK] = ref(t); }
    else if (n == "v") { expect(t, {KV, H}); L.proj[kV] = ref(t); }
    else if (n == "o") { expect(t, {H, Q}); L.proj[kO] = ref(t); }
    else if (n == "gate") { expect(t, {I, H}); L.proj[kGate] = ref(t); }
    else if (n == "up") { expect(t, {I, H}); L.proj[kUp] = ref(t); }
    else if (n == "down") { expect(t, {H, I}); L.proj[kDown] = ref(t); }
    else if (n == "q_bias") { expect(t, {Q}); L.q_bias = ref(t); }
    else if (n == "k_bias") { expect(t, {KV}); L.k_bias = ref(t); }
    else if (n == "v_bias") { expect(t, {KV}); L.v_bias = ref(t); }
    else if (n == "q_norm" && s.qk_norm) { expect(t, {s.head_dim}); L.q_norm = ref(t); }
    else if (n == "k_norm" && s.qk_norm) { expect(t, {s.head_dim}); L.k_norm = ref(t); }
    else throw EngineFailure("MISSING_TENSOR", "unknown tensor key " + k);
  }
  if (!s.embed.data || !s.final_norm.data || !s.lm_head.data) throw EngineFailure("MISSING_TENSOR", "embed, final_norm and lm_head are required");
  for (int l = 0; l < s.layers; l++) {
    const LayerWeights& L = s.layer[size_t(l)];
    bool ok = L.attn_norm.data && L.ffn_norm.data;
    for (int m = 0; m < kNumModules; m++) ok = ok && L.proj[m].data;
    if (s.qk_norm) ok = ok && L.q_norm.data && L.k_norm.data;
    if (!ok) throw EngineFailure("MISSING_TENSOR", "layer " + std::to_string(l) + " is missing a weight");
  }
  out.spec = s;
}

StepInput parse_step(const Napi::Object& o, const ModelSpec& s, const std::vector<bool>& slot_bound) {
  StepInput in;
  in.tokens = I32(o, "tokens");
  in.positions = I32(o, "positions");
  in.seg_offsets = I32(o, "segOffsets");
  in.seg_slot = I32(o, "segSlot");
  in.block_offsets = I32(o, "blockOffsets");
  in.block_table = I32(o, "blockTable");
  in.seg_sample = U8(o, "segSample");
  in.seg_all_logits = U8(o, "segAllLogits");
  in.hist_offsets = I32(o, "histOffsets");
  in.hist_tokens = I32(o, "histTokens");
  in.hist_generated_start = I32(o, "histGeneratedStart");
  in.seg_mask = I32(o, "segMask");
  in.masks = U32(o, "masks");
  const size_t T = in.tokens.size(), S = in.seg_slot.size();
  if (T == 0 || S == 0) fail("a step needs at least one token and one segment");
  if (in.positions.size() != T) fail("positions must have one entry per token");
  auto sized = [&](size_t n, size_t want, const char* what) { if (n != want) fail(std::string(what) + " has " + std::to_string(n) + " entries, expected " + std::to_string(want)); };
  sized(in.seg_offsets.size(), S + 1, "segOffsets");
  sized(in.block_offsets.size(), S + 1, "blockOffsets");
  sized(in.seg_sample.size(), S, "segSample");
  sized(in.seg_all_logits.size(), S, "segAllLogits");
  sized(in.hist_offsets.size(), S + 1, "histOffsets");
  sized(in.hist_generated_start.size(), S, "histGeneratedStart");
  sized(in.seg_mask.size(), S, "segMask");
  const size_t words = size_t((s.vocab + 31) / 32);
  if (in.masks.size() % words != 0) fail("masks must hold whole bitmasks of ceil(vocab / 32) words");
  const int64_t num_masks = int64_t(in.masks.size() / words);
  if (in.seg_offsets[0] != 0 || size_t(in.seg_offsets[S]) != T) fail("segOffsets must start at 0 and end at the token count");
  if (in.block_offsets[0] != 0 || size_t(in.block_offsets[S]) != in.block_table.size()) fail("blockOffsets must start at 0 and end at blockTable.length");
  if (in.hist_offsets[0] != 0 || size_t(in.hist_offsets[S]) != in.hist_tokens.size()) fail("histOffsets must start at 0 and end at histTokens.length");
  for (int32_t t : in.tokens) if (t < 0 || t >= s.vocab) fail("token id " + std::to_string(t) + " is outside the vocabulary");
  for (int32_t t : in.hist_tokens) if (t < 0 || t >= s.vocab) fail("history token id " + std::to_string(t) + " is outside the vocabulary");
  for (int32_t b : in.block_table) if (b < 0 || b >= s.kv_blocks) fail("block id " + std::to_string(b) + " is outside the KV cache");
  for (size_t sg = 0; sg < S; sg++) {
    const int32_t b = in.seg_offsets[sg], e = in.seg_offsets[sg + 1];
    if (e <= b) fail("every segment needs at least one token");
    for (int32_t t = b; t < e; t++)
      if (in.positions[size_t(t)] != in.positions[size_t(b)] + (t - b) || in.positions[size_t(t)] < 0) fail("positions within a segment must be consecutive and non-negative");
    const int64_t ctx = int64_t(in.positions[size_t(e - 1)]) + 1;
    const int64_t have = in.block_offsets[sg + 1] - in.block_offsets[sg];
    if (have < 0 || have * s.block_size < ctx) fail("segment " + std::to_string(sg) + " needs " + std::to_string((ctx + s.block_size - 1) / s.block_size) + " KV blocks, its block table has " + std::to_string(have));
    const int32_t slot = in.seg_slot[sg];
    if (slot != -1 && (slot < 0 || slot >= s.max_adapters || !slot_bound[size_t(slot)])) fail("segment " + std::to_string(sg) + " names adapter slot " + std::to_string(slot) + ", which holds no adapter");
    if (in.hist_offsets[sg + 1] < in.hist_offsets[sg]) fail("histOffsets must not decrease");
    const int32_t hl = in.hist_offsets[sg + 1] - in.hist_offsets[sg];
    if (in.hist_generated_start[sg] < 0 || in.hist_generated_start[sg] > hl) fail("histGeneratedStart must lie within the segment's history");
    if (in.seg_mask[sg] < -1 || in.seg_mask[sg] >= num_masks) fail("segMask names a mask that does not exist");
  }
  Napi::Value sv = o.Get("sampling");
  if (!sv.IsObject()) fail("sampling must be an object of per-segment arrays");
  Napi::Object so = sv.As<Napi::Object>();
  auto temp = F32(so, "temperature"), top_p = F32(so, "topP"), min_p = F32(so, "minP"), rep = F32(so, "repetitionPenalty"),
       pres = F32(so, "presencePenalty"), freq = F32(so, "frequencyPenalty");
  auto top_k = I32(so, "topK"), draw = I32(so, "draw"), top_lp = I32(so, "topLogprobs");
  auto seed = F64(so, "seed");
  for (auto* v : {&temp, &top_p, &min_p, &rep, &pres, &freq}) sized(v->size(), S, "a sampling array");
  for (auto* v : {&top_k, &draw, &top_lp}) sized(v->size(), S, "a sampling array");
  sized(seed.size(), S, "sampling.seed");
  // Optional: which segments want log-probabilities (computing them costs a pass over the vocabulary).
  std::vector<uint8_t> want_lp(S, 1);
  if (!so.Get("wantLogprob").IsUndefined()) {
    want_lp = U8(so, "wantLogprob");
    sized(want_lp.size(), S, "sampling.wantLogprob");
  }
  in.sampling.resize(S);
  for (size_t i = 0; i < S; i++) {
    SamplingParams& p = in.sampling[i];
    if (!(temp[i] >= 0.f) || !(top_p[i] > 0.f && top_p[i] <= 1.f) || !(min_p[i] >= 0.f && min_p[i] <= 1.f) || !(rep[i] > 0.f) ||
        top_k[i] < 0 || top_lp[i] < 0 || top_lp[i] > 20 || !(seed[i] >= 0) || draw[i] < 0 || pres[i] != pres[i] || freq[i] != freq[i])
      fail("sampling parameters of segment " + std::to_string(i) + " are out of range");
    p.temperature = temp[i]; p.top_k = top_k[i]; p.top_p = top_p[i]; p.min_p = min_p[i];
    p.repetition_penalty = rep[i]; p.presence_penalty = pres[i]; p.frequency_penalty = freq[i];
    p.seed = uint64_t(seed[i]); p.draw = draw[i]; p.top_logprobs = top_lp[i];
    p.want_logprob = want_lp[i] != 0;
    if (p.top_logprobs > in.max_top_logprobs) in.max_top_logprobs = p.top_logprobs;
  }
  return in;
}

RawAdapter parse_adapter(const Napi::Object& o, const ModelSpec& s) {
  RawAdapter raw;
  AdapterSpec& a = raw.spec;
  a.max_rank = int(get_int(o, "maxRank", 1, s.max_rank));
  a.rank = I32(o, "rank");
  a.scale = F32(o, "scale");
  const size_t n = size_t(s.layers) * kNumModules;
  if (a.rank.size() != n || a.scale.size() != n) fail("rank and scale need layers * 7 entries");
  Napi::Value av = o.Get("a"), bv = o.Get("b");
  if (!av.IsArray() || !bv.IsArray()) fail("a and b must be arrays");
  Napi::Array A = av.As<Napi::Array>(), B = bv.As<Napi::Array>();
  if (A.Length() != n || B.Length() != n) fail("a and b need layers * 7 entries");
  raw.a.resize(n);
  raw.b.resize(n);
  raw.a_dtype.assign(n, DType::F32);
  raw.b_dtype.assign(n, DType::F32);
  // One tensor: {dtype: 'F32' | 'F16' | 'BF16', data: Uint8Array} holding `count` elements.
  auto take = [&](Napi::Value v, size_t count, std::vector<uint8_t>& bytes, DType& dt) {
    if (!v.IsObject()) fail("adapted modules need A and B tensors {dtype, data}");
    Napi::Object t = v.As<Napi::Object>();
    Napi::Value d = t.Get("dtype"), data = t.Get("data");
    if (!d.IsString() || !data.IsTypedArray() || data.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) fail("LoRA tensors need a dtype string and a Uint8Array");
    dt = parse_dtype(d.As<Napi::String>().Utf8Value());
    auto u8 = data.As<Napi::Uint8Array>();
    if (u8.ElementLength() != count * (dt == DType::F32 ? 4 : 2)) fail("LoRA A/B sizes do not match the module's shape");
    bytes.assign(u8.Data(), u8.Data() + u8.ElementLength());
  };
  for (size_t i = 0; i < n; i++) {
    const int r = a.rank[i], m = int(i % kNumModules);
    if (r < 0 || r > a.max_rank) fail("module rank " + std::to_string(r) + " exceeds the adapter's rank " + std::to_string(a.max_rank));
    if (r == 0) continue;
    take(A.Get(uint32_t(i)), size_t(r) * size_t(module_in(s, m)), raw.a[i], raw.a_dtype[i]);
    take(B.Get(uint32_t(i)), size_t(r) * size_t(module_out(s, m)), raw.b[i], raw.b_dtype[i]);
  }
  // DoRA (optional): magnitude[i] is null or a tensor of module_out elements, only on adapted modules.
  Napi::Value mv = o.Get("magnitude");
  raw.magnitude.resize(n);
  raw.magnitude_dtype.assign(n, DType::F32);
  if (!mv.IsUndefined() && !mv.IsNull()) {
    if (!mv.IsArray() || mv.As<Napi::Array>().Length() != n) fail("magnitude must be an array of layers * 7 entries");
    Napi::Array M = mv.As<Napi::Array>();
    for (size_t i = 0; i < n; i++) {
      Napi::Value t = M.Get(uint32_t(i));
      if (t.IsNull() || t.IsUndefined()) continue;
      if (a.rank[i] == 0) fail("a DoRA magnitude vector on a module the adapter does not adapt");
      const size_t out = size_t(module_out(s, int(i % kNumModules)));
      take(t, out, raw.magnitude[i], raw.magnitude_dtype[i]);
      raw.dora_floats += out;
    }
  }
  return raw;
}

static void widen_into(const std::vector<uint8_t>& src, DType dt, std::vector<float>& dst) {
  const size_t n = src.size() / (dt == DType::F32 ? 4 : 2);
  dst.resize(n);
  if (dt == DType::F32) {
    if (n) std::memcpy(dst.data(), src.data(), n * 4);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    uint16_t h;
    std::memcpy(&h, src.data() + 2 * i, 2);
    if (dt == DType::BF16) {
      uint32_t u = uint32_t(h) << 16;
      std::memcpy(&dst[i], &u, 4);
    } else {
      dst[i] = f16_to_f32(h);
    }
  }
}

void RawAdapter::widen() {
  spec.a.resize(a.size());
  spec.b.resize(b.size());
  for (size_t i = 0; i < a.size(); i++) {
    widen_into(a[i], a_dtype[i], spec.a[i]);
    widen_into(b[i], b_dtype[i], spec.b[i]);
    std::vector<uint8_t>().swap(a[i]);
    std::vector<uint8_t>().swap(b[i]);
  }
  spec.magnitude.assign(magnitude.size(), {});
  for (size_t i = 0; i < magnitude.size(); i++) {
    if (magnitude[i].empty()) continue;
    widen_into(magnitude[i], magnitude_dtype[i], spec.magnitude[i]);
    std::vector<uint8_t>().swap(magnitude[i]);
  }
}

Napi::Object step_output_to_js(Napi::Env env, const StepOutput& out, int max_top) {
  Napi::Object o = Napi::Object::New(env);
  auto i32 = [&](const std::vector<int32_t>& v) {
    auto a = Napi::Int32Array::New(env, v.size());
    if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * 4);
    return a;
  };
  auto f32 = [&](const std::vector<float>& v) {
    auto a = Napi::Float32Array::New(env, v.size());
    if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * 4);
    return a;
  };
  o.Set("token", i32(out.token));
  o.Set("logprob", f32(out.logprob));
  o.Set("topIds", i32(out.top_ids));
  o.Set("topLogprobs", f32(out.top_logprobs));
  o.Set("maxTop", Napi::Number::New(env, max_top));
  o.Set("logits", f32(out.logits));
  return o;
}

}  // namespace lp
