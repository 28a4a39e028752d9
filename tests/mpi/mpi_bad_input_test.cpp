// Bad input on every rank, or on one rank only: every rank must return the
// same non-ok Status naming the bad value (and the rank it came from), and
// none may wait for another (the CTest TIMEOUT of the mpi_np* tests proves
// it). After a rejected call the context still works.
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "common/mpi_util.hpp"
#include "common/test_util.hpp"
#include "ringattn/ringattn.hpp"

namespace ringattn::test {
namespace {

Config good_config() { return make_config({{256, 1}, {512, 2}}, 2, 16); }

// Buffers for one rank's shard of an N-token sequence, sized for the largest N a test passes.
struct Buffers {
  std::vector<float> q, k, v, o, lse;
  Buffers(int64_t max_local_rows, int64_t H, int64_t D)
      : q(size_t(max_local_rows * H * D), 0.25f), k(q.size(), -0.5f), v(q.size(), 1.f), o(q.size()),
        lse(size_t(max_local_rows * H)) {}
};

class BadInput : public MpiTest {
 protected:
  void SetUp() override {
    P_ = mpi_size();
    rank_ = mpi_rank();
    Status st = Context::create(good_config(), MPI_COMM_WORLD, &ctx_);
    ASSERT_TRUE(st.ok()) << st.to_string();
  }

  // Every rank got the same failure as rank 0 (code and message).
  void expect_same_on_all_ranks(const Status& st) {
    const int64_t code0 = bcast_i64(int64_t(st.code()), 0);
    const std::string msg0 = bcast_string(st.message(), 0);
    EXPECT_EQ(int64_t(st.code()), code0) << "rank " << rank_ << " got a different code: " << st.to_string();
    EXPECT_EQ(st.message(), msg0) << "rank " << rank_ << " got a different message";
  }

  // A valid forward after a rejected one still works (nothing is left pending).
  void expect_context_still_works() {
    const int64_t N = 1536, L = N / P_;
    Buffers b(L, 2, 16);
    Shape s;
    s.seq = N;
    Status st = ctx_->forward(s, b.q.data(), b.k.data(), b.v.data(), b.o.data(), b.lse.data());
    EXPECT_TRUE(st.ok()) << st.to_string();
    // Constant q, k, v: every selected token's O is v.
    for (float x : b.o) {
      EXPECT_FLOAT_EQ(x, 1.f);
      if (x != 1.f) break;
    }
  }

  int P_ = 1, rank_ = 0;
  std::unique_ptr<Context> ctx_;
};

TEST_F(BadInput, SeqNotDivisibleByRanks) {
  if (P_ == 1) GTEST_SKIP() << "every N is divisible by 1";
  const int64_t N = 512 * P_ + 1;
  Buffers b(N, 2, 16);
  Shape s;
  s.seq = N;
  Status st = ctx_->forward(s, b.q.data(), b.k.data(), b.v.data(), b.o.data(), b.lse.data());
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_NE(st.message().find(std::to_string(N)), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("divisible"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(std::to_string(P_)), std::string::npos) << st.message();
  expect_same_on_all_ranks(st);
  expect_context_still_works();
}

TEST_F(BadInput, RanksDisagreeOnSeq) {
  if (P_ == 1) GTEST_SKIP() << "needs two ranks to disagree";
  const int64_t N = 1536, other = 1536 + 24 * P_;  // both valid on their own
  const int64_t mine = rank_ == 1 ? other : N;
  Buffers b(other / P_, 2, 16);
  Shape s;
  s.seq = mine;
  Status st = ctx_->forward(s, b.q.data(), b.k.data(), b.v.data(), b.o.data(), b.lse.data());
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kMismatch) << st.to_string();
  EXPECT_NE(st.message().find(std::to_string(N)), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(std::to_string(other)), std::string::npos) << st.message();
  expect_same_on_all_ranks(st);
  expect_context_still_works();
}

TEST_F(BadInput, RanksDisagreeOnBatch) {
  if (P_ == 1) GTEST_SKIP() << "needs two ranks to disagree";
  const int64_t N = 1536;
  Buffers b(2 * N / P_, 2, 16);
  Shape s;
  s.seq = N;
  s.batch = rank_ == P_ - 1 ? 2 : 1;
  Status st = ctx_->forward(s, b.q.data(), b.k.data(), b.v.data(), b.o.data(), b.lse.data());
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kMismatch) << st.to_string();
  EXPECT_NE(st.message().find("batch"), std::string::npos) << st.message();
  expect_same_on_all_ranks(st);
  expect_context_still_works();
}

TEST_F(BadInput, NullBufferOnOneRank) {
  const int64_t N = 1536, L = N / P_;
  Buffers b(L, 2, 16);
  Shape s;
  s.seq = N;
  // Rank 0 passes q = nullptr.
  Status st = ctx_->forward(s, rank_ == 0 ? nullptr : b.q.data(), b.k.data(), b.v.data(), b.o.data(), b.lse.data());
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_NE(st.message().find("'q'"), std::string::npos) << st.message();
  if (P_ > 1) {
    EXPECT_NE(st.message().find("rank 0"), std::string::npos) << st.message();
  }
  expect_same_on_all_ranks(st);

  // The last rank passes lse = nullptr.
  st = ctx_->forward(s, b.q.data(), b.k.data(), b.v.data(), b.o.data(), rank_ == P_ - 1 ? nullptr : b.lse.data());
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'lse'"), std::string::npos) << st.message();
  if (P_ > 1) {
    EXPECT_NE(st.message().find("rank " + std::to_string(P_ - 1)), std::string::npos) << st.message();
  }
  expect_same_on_all_ranks(st);
  expect_context_still_works();
}

TEST_F(BadInput, NullBuffersOnTwoRanksReportTheLowest) {
  if (P_ < 3) GTEST_SKIP() << "needs three ranks";
  const int64_t N = 1536, L = N / P_;
  Buffers b(L, 2, 16);
  Shape s;
  s.seq = N;
  // Rank 2 passes v = nullptr, rank 1 passes o = nullptr: rank 1's error wins.
  Status st = ctx_->forward(s, b.q.data(), b.k.data(), rank_ == 2 ? nullptr : b.v.data(),
                            rank_ == 1 ? nullptr : b.o.data(), b.lse.data());
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'o'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("rank 1"), std::string::npos) << st.message();
  expect_same_on_all_ranks(st);
  expect_context_still_works();
}

TEST_F(BadInput, BadShapeOnOneRank) {
  if (P_ == 1) GTEST_SKIP() << "needs a second rank";
  const int64_t N = 1536, L = N / P_;
  Buffers b(L, 2, 16);
  Shape s;
  s.seq = N;
  s.batch = rank_ == 1 ? 0 : 1;  // invalid on rank 1 only
  Status st = ctx_->forward(s, b.q.data(), b.k.data(), b.v.data(), b.o.data(), b.lse.data());
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_NE(st.message().find("batch is 0"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("rank 1"), std::string::npos) << st.message();
  expect_same_on_all_ranks(st);
  expect_context_still_works();
}

// ---- Context::create ---------------------------------------------------------

class BadConfig : public MpiTest {};

void expect_create_fails_everywhere(const Config& c, StatusCode code, const std::vector<std::string>& must_name) {
  std::unique_ptr<Context> ctx;
  Status st = Context::create(c, MPI_COMM_WORLD, &ctx);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(ctx, nullptr);
  EXPECT_EQ(st.code(), code) << st.to_string();
  for (const std::string& s : must_name) EXPECT_NE(st.message().find(s), std::string::npos) << "no '" << s << "' in: " << st.message();
  const int64_t code0 = bcast_i64(int64_t(st.code()), 0);
  const std::string msg0 = bcast_string(st.message(), 0);
  EXPECT_EQ(int64_t(st.code()), code0);
  EXPECT_EQ(st.message(), msg0);
}

TEST_F(BadConfig, RGreaterThanWOnEveryRank) {
  Config c = good_config();
  c.branches = {{256, 1}, {4, 5}};
  expect_create_fails_everywhere(c, StatusCode::kInvalidArgument, {"r=5", "w=4"});
}

TEST_F(BadConfig, EmptyBranchListOnEveryRank) {
  Config c = good_config();
  c.branches.clear();
  expect_create_fails_everywhere(c, StatusCode::kInvalidArgument, {"empty branch list"});
}

TEST_F(BadConfig, BadValueOnOneRankOnly) {
  if (mpi_size() == 1) GTEST_SKIP() << "needs two ranks";
  const int last = mpi_size() - 1;
  Config c = good_config();
  if (mpi_rank() == last) c.branches[1].r = 0;
  expect_create_fails_everywhere(c, StatusCode::kInvalidArgument, {"r=0", "rank " + std::to_string(last)});
}

TEST_F(BadConfig, NullOutputPointerOnOneRank) {
  // Rank 0 passes out = nullptr; the others must not be left waiting in create.
  std::unique_ptr<Context> ctx;
  Status st = Context::create(good_config(), MPI_COMM_WORLD, mpi_rank() == 0 ? nullptr : &ctx);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(ctx, nullptr);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_NE(st.message().find("output pointer"), std::string::npos) << st.message();
  if (mpi_size() > 1) {
    EXPECT_NE(st.message().find("rank 0"), std::string::npos) << st.message();
  }
  EXPECT_EQ(st.message(), bcast_string(st.message(), 0));
}

TEST_F(BadConfig, RanksDisagreeOnCausal) {
  if (mpi_size() == 1) GTEST_SKIP() << "needs two ranks to disagree";
  Config c = good_config();
  c.causal = mpi_rank() == 0;
  expect_create_fails_everywhere(c, StatusCode::kMismatch, {"disagree"});
}

TEST_F(BadConfig, RanksDisagreeOnHeads) {
  if (mpi_size() == 1) GTEST_SKIP() << "needs two ranks to disagree";
  Config c = good_config();
  if (mpi_rank() == 0) c.heads = 4;
  expect_create_fails_everywhere(c, StatusCode::kMismatch, {"disagree"});
}

TEST_F(BadConfig, RanksDisagreeOnHeadDimAndBranches) {
  if (mpi_size() == 1) GTEST_SKIP() << "needs two ranks to disagree";
  Config c = good_config();
  if (mpi_rank() == 1) c.head_dim = 32;
  expect_create_fails_everywhere(c, StatusCode::kMismatch, {"disagree"});
  c = good_config();
  if (mpi_rank() == mpi_size() - 1) c.branches.push_back({1024, 4});
  expect_create_fails_everywhere(c, StatusCode::kMismatch, {"disagree"});
}

// RINGATTN_PACK_SEGMENTS set for the scope (unset: the default, 1), then
// restored as it was.
class ScopedPackEnv {
 public:
  explicit ScopedPackEnv(const char* value) {
    const char* e = std::getenv(kVar);
    had_ = e != nullptr;
    if (had_) saved_ = e;
    if (value) setenv(kVar, value, 1);
    else unsetenv(kVar);
  }
  ~ScopedPackEnv() {
    if (had_) setenv(kVar, saved_.c_str(), 1);
    else unsetenv(kVar);
  }

 private:
  static constexpr const char* kVar = "RINGATTN_PACK_SEGMENTS";
  bool had_ = false;
  std::string saved_;
};

// Packing short segments changes only a rank's own tiles, but the ranks must
// still decide alike (the same work everywhere): a disagreement is refused
// like a config mismatch, on every rank, in Context::create.
TEST_F(BadConfig, RanksDisagreeOnPackSegments) {
  if (mpi_size() == 1) GTEST_SKIP() << "needs two ranks to disagree";
  {
    ScopedPackEnv env(mpi_rank() == 0 ? "0" : "1");
    expect_create_fails_everywhere(good_config(), StatusCode::kMismatch, {"disagree", "RINGATTN_PACK_SEGMENTS"});
  }
  {
    ScopedPackEnv env(mpi_rank() == 0 ? nullptr : "0");  // unset means 1
    expect_create_fails_everywhere(good_config(), StatusCode::kMismatch, {"disagree"});
  }
  ScopedPackEnv env(mpi_rank() == 0 ? nullptr : "1");  // unset and 1 agree
  std::unique_ptr<Context> ctx;
  const Status st = Context::create(good_config(), MPI_COMM_WORLD, &ctx);
  EXPECT_TRUE(st.ok()) << st.to_string();
}

TEST_F(BadConfig, BadPackSegmentsValueOnOneRank) {
  const int last = mpi_size() - 1;
  ScopedPackEnv env(mpi_rank() == last ? "yes" : "0");
  std::vector<std::string> names = {"RINGATTN_PACK_SEGMENTS='yes'", "allowed: 1, 0"};
  if (mpi_size() > 1) names.push_back("rank " + std::to_string(last));
  expect_create_fails_everywhere(good_config(), StatusCode::kInvalidArgument, names);
}

TEST_F(BadConfig, NcclTransportWithCpuBackend) {
  Config c = good_config();
  c.transport = Transport::nccl;
  expect_create_fails_everywhere(c, StatusCode::kInvalidArgument, {"nccl"});
}

TEST_F(BadConfig, CudaBackendWithoutCudaOrF32) {
  // Unsupported in this build (no CUDA) or for f32: either way every rank fails alike.
  Config c = good_config();
  c.backend = Backend::cuda;
  c.head_dim = 64;
  std::unique_ptr<Context> ctx;
  Status st = Context::create(c, MPI_COMM_WORLD, &ctx);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(ctx, nullptr);
  EXPECT_NE(st.message().find("f32"), std::string::npos) << st.message();
  EXPECT_EQ(st.message(), bcast_string(st.message(), 0));
}

// ---- all_ranks with a key and a shape (front ends' per-rank state) ------------

class AllRanksKey : public MpiTest {};

TEST_F(AllRanksKey, SameKeyAndShapeAgree) {
  Shape s{2, 64};
  Status st = all_ranks(MPI_COMM_WORLD, Status::Ok(), 0x1234abcd5678ef90ull, s);
  EXPECT_TRUE(st.ok()) << st.to_string();
}

TEST_F(AllRanksKey, DisagreementIsAMismatchOnEveryRank) {
  if (mpi_size() == 1) GTEST_SKIP() << "needs two ranks to disagree";
  const bool last = mpi_rank() == mpi_size() - 1;
  // Keys that differ in the high half only, then in the shape.
  Status st = all_ranks(MPI_COMM_WORLD, Status::Ok(), last ? (uint64_t(1) << 40) | 7 : 7, Shape{1, 64});
  EXPECT_EQ(st.code(), StatusCode::kMismatch) << st.to_string();
  EXPECT_EQ(st.message(), bcast_string(st.message(), 0));
  st = all_ranks(MPI_COMM_WORLD, Status::Ok(), 7, Shape{1, last ? 128 : 64});
  EXPECT_EQ(st.code(), StatusCode::kMismatch) << st.to_string();
  EXPECT_NE(st.message().find("seq"), std::string::npos) << st.message();
  st = all_ranks(MPI_COMM_WORLD, Status::Ok(), 7, Shape{last ? 2 : 1, 64});
  EXPECT_NE(st.message().find("batch"), std::string::npos) << st.message();
}

TEST_F(AllRanksKey, AnErrorWinsOverADisagreement) {
  // A rank whose own check failed sends a meaningless key: its error is what every rank returns.
  const int last = mpi_size() - 1;
  Status local = mpi_rank() == last ? InvalidArgument("q has dtype float64") : Status::Ok();
  Status st = all_ranks(MPI_COMM_WORLD, local, uint64_t(mpi_rank()), Shape{1, 64});
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_NE(st.message().find("q has dtype float64"), std::string::npos) << st.message();
  EXPECT_EQ(st.message(), bcast_string(st.message(), 0));
}

}  // namespace
}  // namespace ringattn::test
