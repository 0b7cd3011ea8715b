#include "step_state.h"

#include "../core/lora_runs.h"

#include <algorithm>
#include <cstring>

namespace lp {
namespace cu {

namespace {
size_t align4(size_t w) { return (w + 3) / 4 * 4; }
size_t grow_to(size_t need, size_t have) {
  if (need <= have) return have;
  size_t c = std::max<size_t>(64, have);
  while (c < need) c *= 2;
  return c;
}
// Reallocates b when it is smaller than bytes; returns whether it moved.
bool fit(DevBuf& b, size_t bytes, bool zero = false) {
  if (b.bytes() >= bytes && b.get()) return false;
  b.alloc(std::max<size_t>(bytes, 16));
  if (zero) {
    // The step streams are non-blocking (no implicit order with this legacy-stream memset): wait.
    check(cudaMemset(b.get(), 0, b.bytes()), "step buffer init");
    check(cudaDeviceSynchronize(), "step buffer init");
  }
  return true;
}
}  // namespace

StepState::StepState(const ModelSpec& s, Ty ty, int num_sms) : s_(s), ty_(ty), sms_(num_sms) {
  s_.layer.clear();  // only the dimensions are needed here
}

void StepState::layout(Layout& L) const {
  size_t o = 0;
  auto take = [&](size_t words) { const size_t at = o; o = align4(o + words); return at; };
  const size_t T = size_t(cap_t_), S = size_t(cap_s_);
  L.hdr = take(4);
  L.tokens = take(T); L.positions = take(T); L.tok_seg = take(T); L.tok_slot = take(T); L.tok_list = take(T);
  L.rows = take(size_t(cap_r_));
  L.seg_block_off = take(S + 1); L.sample_row = take(S); L.hist_off = take(S + 1); L.gen_start = take(S); L.seg_mask = take(S);
  L.items = take(4 * T); L.tiles = take(4 * T);
  L.params = take(S * sizeof(SampleParamsDev) / 4);
  L.block_table = take(cap_bt_); L.hist = take(cap_hist_); L.masks = take(cap_mask_);
  L.total = o;
}

bool StepState::ensure(const StepPlan& p, size_t gws, int gcnt, size_t aws, int acnt) {
  const int old_t = cap_t_, old_s = cap_s_, old_r = cap_r_;
  const size_t old_bt = cap_bt_, old_h = cap_hist_, old_m = cap_mask_;
  cap_t_ = int(grow_to(size_t(p.T), size_t(cap_t_)));
  cap_s_ = int(grow_to(size_t(p.S), size_t(cap_s_)));
  cap_r_ = int(grow_to(size_t(std::max(p.R, 1)), size_t(cap_r_)));
  cap_bt_ = grow_to(p.n_bt, cap_bt_);
  cap_hist_ = grow_to(p.n_hist, cap_hist_);
  cap_mask_ = grow_to(p.n_mask_words, cap_mask_);
  const bool relayout = old_t != cap_t_ || old_s != cap_s_ || old_r != cap_r_ || old_bt != cap_bt_ || old_h != cap_hist_ || old_m != cap_mask_;
  bool moved = false;
  if (relayout) {
    layout(lay_);
    in_host_.alloc(lay_.total * 4);
    moved |= fit(in_dev_, lay_.total * 4);
    const size_t ob = size_t(3 + 2 * kMaxTop) * size_t(cap_s_) * 4;
    if (out_host_.bytes() < ob) out_host_.alloc(ob);
    moved |= fit(out_dev_, ob);
  }
  const size_t T = size_t(cap_t_), S = size_t(cap_s_), R = size_t(cap_r_), es = ty_size(ty_);
  const size_t H = size_t(s_.hidden), I = size_t(s_.intermediate), QD = size_t(s_.heads) * s_.head_dim;
  const size_t QKV = QD + 2 * size_t(s_.kv_heads) * s_.head_dim, V = size_t(s_.vocab), words = (V + 31) / 32;
  moved |= fit(x_, T * H * 4);
  moved |= fit(h_, T * H * es);
  moved |= fit(qkv_, T * QKV * 4);
  moved |= fit(q_, T * QD * 4);
  moved |= fit(att_, T * QD * es);
  moved |= fit(gu_, T * std::max(2 * I, H) * 4);  // also the o/down scratch of DoRA steps
  moved |= fit(act_, T * I * es);
  moved |= fit(v_, T * kMods * size_t(std::max(1, s_.max_rank)) * 4);
  moved |= fit(hrows_, R * H * es);
  moved |= fit(logits_, R * V * 4);
  moved |= fit(work_, S * V * 4);
  moved |= fit(bits_, S * 2 * words * 4);
  if (gws > cap_gws_) { cap_gws_ = grow_to(gws, cap_gws_); moved |= fit(gws_, cap_gws_ * 4); }
  if (gcnt > cap_gcnt_) { cap_gcnt_ = int(grow_to(size_t(gcnt), size_t(cap_gcnt_))); moved |= fit(gcnt_, size_t(cap_gcnt_) * 4, true); }
  if (aws > cap_aws_) { cap_aws_ = grow_to(aws, cap_aws_); moved |= fit(aws_, cap_aws_ * 4); }
  if (acnt > cap_acnt_) { cap_acnt_ = int(grow_to(size_t(acnt), size_t(cap_acnt_))); moved |= fit(acnt_, size_t(cap_acnt_) * 4, true); }
  if (moved || relayout) point();
  return moved || relayout;
}

void StepState::point() {
  int* w = in_dev_.get<int>();
  const Layout& L = lay_;
  d_.hdr = w + L.hdr; d_.tokens = w + L.tokens; d_.positions = w + L.positions; d_.tok_seg = w + L.tok_seg; d_.tok_slot = w + L.tok_slot;
  d_.tok_list = w + L.tok_list; d_.rows = w + L.rows; d_.seg_block_off = w + L.seg_block_off; d_.sample_row = w + L.sample_row;
  d_.hist_off = w + L.hist_off; d_.gen_start = w + L.gen_start; d_.seg_mask = w + L.seg_mask;
  d_.items = reinterpret_cast<LoraItem*>(w + L.items);
  d_.tiles = reinterpret_cast<AttnTile*>(w + L.tiles);
  d_.params = reinterpret_cast<SampleParamsDev*>(w + L.params);
  d_.block_table = w + L.block_table; d_.hist = w + L.hist;
  d_.masks = reinterpret_cast<uint32_t*>(w + L.masks);
  d_.x = x_.get<float>(); d_.h = h_.get(); d_.qkv = qkv_.get<float>(); d_.q = q_.get<float>(); d_.att = att_.get();
  d_.gu = gu_.get<float>(); d_.act = act_.get(); d_.v = v_.get<float>(); d_.hrows = hrows_.get(); d_.logits = logits_.get<float>();
  d_.work = work_.get<float>(); d_.bits = bits_.get<uint32_t>();
  int* o = out_dev_.get<int>();
  const size_t S = size_t(cap_s_);
  d_.o_token = o; d_.o_logprob = reinterpret_cast<float*>(o + S); d_.o_error = o + 2 * S;
  d_.o_top_ids = o + 3 * S; d_.o_top_lp = reinterpret_cast<float*>(o + 3 * S + S * kMaxTop);
  d_.gemm = GemmScratch{gws_.get<float>(), cap_gws_, gcnt_.get<int>(), cap_gcnt_};
  d_.attn_ws = aws_.get<float>();
  d_.attn_counters = acnt_.get<int>();
}

bool StepState::prepare(const StepInput& in, const DeviceLora& lora, StepPlan& p) {
  const int T = int(in.tokens.size()), S = int(in.seg_slot.size());
  p = StepPlan{};
  p.T = T; p.S = S;
  p.decode = T <= kDecodeMaxT;
  p.max_top = in.max_top_logprobs;
  p.n_bt = in.block_table.size(); p.n_hist = in.hist_tokens.size(); p.n_mask_words = in.masks.size();

  // Logit rows: every row of all-logits segments first (so the returned logits are one block), then
  // the last row of each segment that only samples.
  std::vector<int>& rows = scratch_rows_;
  rows.clear();
  std::vector<int> sample_row(size_t(S), -1);
  for (int sg = 0; sg < S; sg++)
    if (in.seg_all_logits[size_t(sg)]) {
      for (int t = in.seg_offsets[size_t(sg)]; t < in.seg_offsets[size_t(sg) + 1]; t++) rows.push_back(t);
      if (in.seg_sample[size_t(sg)]) sample_row[size_t(sg)] = int(rows.size()) - 1;
    }
  p.R_all = int(rows.size());
  for (int sg = 0; sg < S; sg++)
    if (!in.seg_all_logits[size_t(sg)] && in.seg_sample[size_t(sg)]) {
      sample_row[size_t(sg)] = int(rows.size());
      rows.push_back(in.seg_offsets[size_t(sg) + 1] - 1);
    }
  p.R = int(rows.size());

  std::vector<int32_t> tok_seg, tok_slot;
  token_slots(in, tok_slot, &tok_seg);
  // LoRA items: runs of consecutive tokens with one slot, at most kItemTokens long.
  std::vector<LoraItem> items;
  int max_rank = 0;
  if (lora.enabled())
    for_each_lora_run(tok_slot.data(), T, kItemTokens, [&](int64_t t0, int64_t t1, int slot) {
      items.push_back(LoraItem{slot, int(t0), int(t1 - t0), 0});
      max_rank = std::max(max_rank, lora.slot_rank(slot));
      if (lora.slot_dora(slot)) p.dora = true;
    });
  p.n_items = int(items.size());
  p.lora = p.n_items > 0 && max_rank > 0;
  p.rank_chunks = p.lora ? (max_rank + kRankChunk - 1) / kRankChunk : 0;
  if (!p.lora) p.n_items = 0;
  if (!p.lora) p.dora = false;

  // Attention: decode path sends every token to the decode kernel; otherwise segments of >= 16
  // tokens go to the tiled prefill kernel (when it supports the type and head size).
  std::vector<AttnTile> tiles;
  std::vector<int> list;
  const bool tiled = !p.decode && attention_prefill_supported(ty_, s_.head_dim);
  if (p.decode) {
    p.n_list = T;
  } else {
    for (int sg = 0; sg < S; sg++) {
      const int b = in.seg_offsets[size_t(sg)], e = in.seg_offsets[size_t(sg) + 1];
      if (tiled && e - b >= 16) {
        for (int t = b; t < e; t += 64) tiles.push_back(AttnTile{sg, t, std::min(64, e - t), 0});
      } else {
        for (int t = b; t < e; t++) list.push_back(t);
      }
    }
    p.n_list = int(list.size());
    p.n_tiles = int(tiles.size());
  }
  p.attn_splits = attn_decode_splits(p.n_list, s_.heads, s_.kv_heads, sms_);
  const AttnNeeds an = attn_decode_needs(p.n_list, s_.heads, s_.kv_heads, s_.head_dim, p.attn_splits);

  const int H = s_.hidden, I = s_.intermediate, QD = s_.heads * s_.head_dim, QKV = QD + 2 * s_.kv_heads * s_.head_dim;
  GemmNeeds gn;
  auto need = [&](int M, int N, int K) {
    const GemmNeeds n = gemm_needs(ty_, M, N, K, sms_);
    gn.ws_floats = std::max(gn.ws_floats, n.ws_floats);
    gn.counters = std::max(gn.counters, n.counters);
  };
  need(T, QKV, H); need(T, H, QD); need(T, 2 * I, H); need(T, H, I);
  if (p.R > 0) need(p.R, s_.vocab, H);
  const bool moved = ensure(p, gn.ws_floats, gn.counters, an.ws_floats, an.counters);

  // Pack the inputs.
  int* w = in_host_.get<int>();
  const Layout& L = lay_;
  w[L.hdr] = p.n_items;
  w[L.hdr + 1] = p.max_top;
  auto put = [&](size_t off, const int* src, size_t n) { if (n) std::memcpy(w + off, src, n * 4); };
  put(L.tokens, in.tokens.data(), size_t(T));
  put(L.positions, in.positions.data(), size_t(T));
  put(L.tok_seg, tok_seg.data(), size_t(T));
  put(L.tok_slot, tok_slot.data(), size_t(T));
  put(L.tok_list, list.data(), list.size());
  put(L.rows, rows.data(), rows.size());
  put(L.seg_block_off, in.block_offsets.data(), size_t(S) + 1);
  put(L.sample_row, sample_row.data(), size_t(S));
  put(L.hist_off, in.hist_offsets.data(), size_t(S) + 1);
  put(L.gen_start, in.hist_generated_start.data(), size_t(S));
  put(L.seg_mask, in.seg_mask.data(), size_t(S));
  if (!items.empty()) std::memcpy(w + L.items, items.data(), items.size() * sizeof(LoraItem));
  if (!tiles.empty()) std::memcpy(w + L.tiles, tiles.data(), tiles.size() * sizeof(AttnTile));
  auto* prm = reinterpret_cast<SampleParamsDev*>(w + L.params);
  for (int sg = 0; sg < S; sg++) {
    const SamplingParams& sp = in.sampling[size_t(sg)];
    prm[sg] = SampleParamsDev{sp.temperature, sp.top_p, sp.min_p, sp.repetition_penalty, sp.presence_penalty, sp.frequency_penalty,
                              sp.top_k, sp.draw, sp.top_logprobs, 0, static_cast<unsigned long long>(sp.seed)};
  }
  put(L.block_table, in.block_table.data(), p.n_bt);
  put(L.hist, in.hist_tokens.data(), p.n_hist);
  if (p.n_mask_words) std::memcpy(w + L.masks, in.masks.data(), p.n_mask_words * 4);
  return moved;
}

void StepState::upload(const StepPlan& p, cudaStream_t st) {
  const int* w = in_host_.get<int>();
  int* d = in_dev_.get<int>();
  const Layout& L = lay_;
  check(cudaMemcpyAsync(d, w, (L.block_table + p.n_bt) * 4, cudaMemcpyHostToDevice, st), "step input upload");
  if (p.n_hist) check(cudaMemcpyAsync(d + L.hist, w + L.hist, p.n_hist * 4, cudaMemcpyHostToDevice, st), "step input upload");
  if (p.n_mask_words) check(cudaMemcpyAsync(d + L.masks, w + L.masks, p.n_mask_words * 4, cudaMemcpyHostToDevice, st), "step input upload");
}

void StepState::upload_masks(const StepPlan& p, const StepInput& in, cudaStream_t st) {
  if (!p.n_mask_words) return;
  // The copy queued by upload() may still be reading the staging words (it carried placeholders):
  // whatever it reads, this later copy on the same stream lands the final masks before sampling.
  int* w = in_host_.get<int>();
  std::memcpy(w + lay_.masks, in.masks.data(), p.n_mask_words * 4);
  check(cudaMemcpyAsync(in_dev_.get<int>() + lay_.masks, w + lay_.masks, p.n_mask_words * 4, cudaMemcpyHostToDevice, st), "mask upload");
}

void StepState::download(const StepPlan& p, cudaStream_t st) {
  check(cudaMemcpyAsync(out_host_.get(), out_dev_.get(), size_t(3 + 2 * kMaxTop) * size_t(cap_s_) * 4, cudaMemcpyDeviceToHost, st),
        "step output download");
}

void StepState::unpack(const StepPlan& p, const StepInput& in, StepOutput& out) const {
  const size_t S = size_t(p.S), cs = size_t(cap_s_), tn = size_t(p.max_top);
  const int* o = out_host_.get<int>();
  const float* of = out_host_.get<float>();
  for (size_t sg = 0; sg < S; sg++)
    if (o[2 * cs + sg]) throw EngineFailure("INVALID_ARGUMENT", "the allowed-token mask allows no token");
  out.token.assign(o, o + S);
  out.logprob.assign(of + cs, of + cs + S);
  out.top_ids.assign(o + 3 * cs, o + 3 * cs + S * tn);
  out.top_logprobs.assign(of + 3 * cs + cs * kMaxTop, of + 3 * cs + cs * kMaxTop + S * tn);
  out.logits.resize(size_t(p.R_all) * size_t(s_.vocab));
  if (!out.logits.empty())
    check(cudaMemcpy(out.logits.data(), d_.logits, out.logits.size() * sizeof(float), cudaMemcpyDeviceToHost), "logits download");
}

size_t StepState::bytes() const {
  size_t b = 0;
  for (const DevBuf* x : {&in_dev_, &out_dev_, &x_, &h_, &qkv_, &q_, &att_, &gu_, &act_, &v_, &hrows_, &logits_, &work_, &bits_, &gws_, &gcnt_, &aws_, &acnt_})
    b += x->bytes();
  return b;
}

}  // namespace cu
}  // namespace lp
