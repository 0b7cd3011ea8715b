// Positions in the sampling order of one row of logits (logit desc, index asc) without sorting
// the row: one pass buckets every candidate by z = (logit - max) / T into equal-width
// buckets (a monotone function of the logit, so buckets are runs of the order) and sums each
// bucket's weight (double) and count. A query scans the bucket totals, and only
// the one bucket where its answer lies is collected and sorted, so a draw costs two vectorised
// passes over the vocabulary plus a sort of a few dozen elements, whatever the vocabulary size.
// Candidates of weight 0 (z below kMinSampleZ) sit in a bucket of their own after all others:
// they count for top-k but can never be drawn; -inf logits are not candidates.
#pragma once
#include <cstdint>
#include <vector>

namespace lp {

class SampleOrder {
 public:
  // Buckets: vocab / 64 (a few dozen candidates each when logits are flat), 16 .. kMaxBuckets.
  static constexpr int kMaxBuckets = 2048;

  // An exclusive end in the order: every candidate before the r-th of bucket b (sorted order).
  struct Pos {
    int b, r;
  };

  void build(const float* logits, int vocab, float temperature);
  // The end of all candidates of positive weight.
  Pos end() const { return Pos{buckets_, 0}; }
  // The end after the first n candidates (n >= 1), or end() when that reaches weight 0.
  Pos first_n(int64_t n) const;
  // Total weight before `end`.
  double mass(Pos end);
  // `end`, or the position of the first candidate before it with weight < threshold; never empty.
  Pos before_weight_below(double threshold, Pos end);
  // The end just after the first candidate before `end` whose running mass reaches `target`
  // (> when strict, else >=); `end` when none does.
  Pos through_mass(double target, bool strict, Pos end);
  // The vocabulary index of the last candidate before `end`.
  int32_t index_at(Pos end);

 private:
  struct Sorted {
    std::vector<int32_t> idx;
    std::vector<float> w;
  };
  const Sorted& sorted(int b);

  const float* logits_ = nullptr;
  int vocab_ = 0;
  float max_ = 0.f, inv_t_ = 1.f;
  std::vector<uint16_t> bucket_;  // [vocab]
  std::vector<double> mass_;      // [buckets_]
  std::vector<int64_t> count_;    // [buckets_ + 1]
  struct Bin {
    double mass;
    int64_t count;
  };
  static constexpr int kCopies = 2;
  std::vector<Bin> hist_;         // [kCopies][buckets_ + 2] while building
  int buckets_ = 16;              // then buckets_: weight 0, buckets_ + 1: masked (-inf)
  float scale_ = 0.f;             // buckets per unit of -z
  std::vector<int32_t> slot_;     // [buckets_ + 2] index into cache_ or -1
  std::vector<int> touched_;
  std::vector<Sorted> cache_;
  int64_t positive_ = 0;
};

}  // namespace lp
