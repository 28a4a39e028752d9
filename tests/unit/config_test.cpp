// Config surface: head offsets, named configs, parsers and validation. Every
// negative case starts from a config that validates, changes one value, and
// checks both that validation fails and that the message names the value, so
// removing the check (or making its message vague) fails the test.
#include <gtest/gtest.h>

#include "ringattn/names.hpp"
#include "common/spec_brute.hpp"
#include "common/test_util.hpp"

namespace ringattn::test {
namespace {

TEST(HeadOffset, InterleavedIsHModR) {
  // Hand-computed: r = 3, H = 5 -> 0 1 2 0 1.
  const int64_t want[] = {0, 1, 2, 0, 1};
  for (int64_t h = 0; h < 5; ++h) EXPECT_EQ(head_offset(HeadOffsets::interleaved, 3, h, 5), want[h]) << "h=" << h;
  EXPECT_EQ(head_offset(HeadOffsets::interleaved, 1, 7, 8), 0);
  EXPECT_EQ(head_offset(HeadOffsets::interleaved, 8, 7, 8), 7);
  EXPECT_EQ(head_offset(HeadOffsets::interleaved, 16, 3, 4), 3);  // r > H
}

TEST(HeadOffset, BlockedHandComputed) {
  struct Case {
    int64_t r, H;
    std::vector<int64_t> want;
  };
  const Case cases[] = {
      {2, 8, {0, 0, 0, 0, 1, 1, 1, 1}},  // H' = 8, blocks of 4
      {2, 5, {0, 0, 0, 1, 1}},           // H' = 6, blocks of 3
      {3, 4, {0, 0, 1, 1}},              // H' = 6, blocks of 2 (offset 2 unused)
      {3, 5, {0, 0, 1, 1, 2}},           // H' = 6, blocks of 2
      {4, 3, {0, 1, 2}},                 // H' = 4, blocks of 1
      {4, 1, {0}},                       // H' = 4
      {6, 16, {0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5}},  // H' = 18, blocks of 3
      {1, 4, {0, 0, 0, 0}},
  };
  for (const Case& c : cases)
    for (int64_t h = 0; h < c.H; ++h)
      EXPECT_EQ(head_offset(HeadOffsets::blocked, c.r, h, c.H), c.want[size_t(h)]) << "r=" << c.r << " H=" << c.H << " h=" << h;
}

TEST(HeadOffset, MatchesSpecForManyShapes) {
  for (int64_t H = 1; H <= 20; ++H)
    for (int64_t r = 1; r <= 24; ++r)
      for (int64_t h = 0; h < H; ++h) {
        for (HeadOffsets rule : {HeadOffsets::interleaved, HeadOffsets::blocked}) {
          const int64_t o = head_offset(rule, r, h, H);
          EXPECT_EQ(o, spec_head_offset(rule, r, h, H)) << to_string(rule) << " r=" << r << " H=" << H << " h=" << h;
          EXPECT_GE(o, 0);
          EXPECT_LT(o, r);
        }
      }
}

TEST(NamedBranches, GeometricAt16k) {
  std::vector<Branch> b;
  ASSERT_TRUE(named_branches("geometric", 16384, &b).ok());
  EXPECT_EQ(format_branches(b), "2048:1,4096:2,8192:4,16384:8");
  ASSERT_TRUE(named_branches("geometric", 16383, &b).ok());
  EXPECT_EQ(format_branches(b), "2048:1,4096:2,8192:4");
  ASSERT_TRUE(named_branches("geometric", 2048, &b).ok());
  EXPECT_EQ(format_branches(b), "2048:1");
  Status st = named_branches("geometric", 2047, &b);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("2047"), std::string::npos) << st.message();
}

TEST(NamedBranches, OthersFromSpec) {
  std::vector<Branch> b;
  ASSERT_TRUE(named_branches("longnet4", 0, &b).ok());
  EXPECT_EQ(format_branches(b), "2048:1,4096:2,8192:4,16384:8");
  ASSERT_TRUE(named_branches("longnet-paper", 0, &b).ok());
  EXPECT_EQ(format_branches(b), "2048:1,4096:2,8192:4,16384:6,32768:12");
  ASSERT_TRUE(named_branches("dense", 12345, &b).ok());
  EXPECT_EQ(format_branches(b), "12345:1");
  Status st = named_branches("longnet5", 4096, &b);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("longnet5"), std::string::npos) << st.message();
  for (const std::string& name : named_config_names()) EXPECT_TRUE(named_branches(name, 65536, &b).ok()) << name;
}

TEST(ParseBranches, Valid) {
  std::vector<Branch> b;
  ASSERT_TRUE(parse_branches("2048:1,4096:2", &b).ok());
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].w, 2048);
  EXPECT_EQ(b[0].r, 1);
  EXPECT_EQ(b[1].w, 4096);
  EXPECT_EQ(b[1].r, 2);
  ASSERT_TRUE(parse_branches("300:3,700:7", &b).ok());
  EXPECT_EQ(format_branches(b), "300:3,700:7");
  ASSERT_TRUE(parse_branches("512", &b).ok());  // r defaults to 1
  EXPECT_EQ(format_branches(b), "512:1");
}

TEST(ParseBranches, Errors) {
  std::vector<Branch> b;
  Status st = parse_branches("", &b);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("empty"), std::string::npos) << st.message();
  for (const std::string bad : {"abc", "2048:", ":2", "2048:x", "2048:1:3", "20q8:1", "2048:1,,4096:2", "1e3:1"}) {
    st = parse_branches(bad, &b);
    EXPECT_FALSE(st.ok()) << "'" << bad << "' was accepted";
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
  }
  st = parse_branches("2048:1,40x6:2", &b);
  EXPECT_NE(st.message().find("40x6:2"), std::string::npos) << st.message();
}

TEST(ParseNames, UnknownValuesAreNamed) {
  DType dt;
  Backend be;
  Transport tr;
  HeadOffsets ho;
  Status st = parse_dtype("f64", &dt);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("f64"), std::string::npos) << st.message();
  st = parse_backend("tpu", &be);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("tpu"), std::string::npos) << st.message();
  st = parse_transport("ucx", &tr);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("ucx"), std::string::npos) << st.message();
  st = parse_head_offsets("striped", &ho);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("striped"), std::string::npos) << st.message();
  ASSERT_TRUE(parse_dtype("bf16", &dt).ok());
  EXPECT_EQ(dt, DType::bf16);
  ASSERT_TRUE(parse_dtype("f16", &dt).ok());
  EXPECT_EQ(dt, DType::f16);
  ASSERT_TRUE(parse_backend("cuda", &be).ok());
  EXPECT_EQ(be, Backend::cuda);
  ASSERT_TRUE(parse_head_offsets("blocked", &ho).ok());
  EXPECT_EQ(ho, HeadOffsets::blocked);
}

// ---- validate_config / validate_shape -------------------------------------

Config valid() { return make_config({{2048, 1}, {4096, 2}}, 4, 32); }

void expect_rejected(const Config& c, const std::string& must_name) {
  Status st = validate_config(c);
  EXPECT_FALSE(st.ok()) << "accepted; expected an error naming '" << must_name << "'";
  EXPECT_NE(st.message().find(must_name), std::string::npos) << "message does not name '" << must_name << "': " << st.message();
}

TEST(ValidateConfig, BaselineIsValid) {
  EXPECT_TRUE(validate_config(valid()).ok()) << validate_config(valid()).message();
  Config c = valid();
  c.branches = {{7, 7}, {1, 1}};  // r == w and w == 1 are allowed
  EXPECT_TRUE(validate_config(c).ok()) << validate_config(c).message();
  c = valid();
  c.scale = 0.125;
  EXPECT_TRUE(validate_config(c).ok());
}

TEST(ValidateConfig, EmptyBranchList) {
  Config c = valid();
  c.branches.clear();
  expect_rejected(c, "empty branch list");
}

TEST(ValidateConfig, SegmentLengthBelowOne) {
  Config c = valid();
  c.branches[1] = {0, 1};
  expect_rejected(c, "w=0");
  c.branches[1] = {-5, 1};
  expect_rejected(c, "w=-5");
}

TEST(ValidateConfig, DilationBelowOne) {
  Config c = valid();
  c.branches[0] = {2048, 0};
  expect_rejected(c, "r=0");
  c.branches[0] = {2048, -3};
  expect_rejected(c, "r=-3");
}

TEST(ValidateConfig, DilationAboveSegment) {
  Config c = valid();
  c.branches = {{4, 5}};
  expect_rejected(c, "r=5");
  c.branches = {{2048, 1}, {16, 17}};
  expect_rejected(c, "r=17");
  expect_rejected(c, "branch 1");
}

TEST(ValidateConfig, Heads) {
  Config c = valid();
  c.heads = 0;
  expect_rejected(c, "heads is 0");
  c.heads = -7;
  expect_rejected(c, "-7");
}

TEST(ValidateConfig, HeadDim) {
  Config c = valid();
  c.head_dim = 0;
  expect_rejected(c, "head_dim is 0");
  c.head_dim = -9;
  expect_rejected(c, "-9");
}

TEST(ValidateConfig, NegativeScale) {
  Config c = valid();
  c.scale = -0.5;
  expect_rejected(c, "-0.5");
  c.scale = std::nan("");
  expect_rejected(c, "scale");
}

// The kernels compute in float32: a scale that is 0 or denormal there would
// turn masked logits into -inf * 0 = NaN; one beyond float32's range into inf.
TEST(ValidateConfig, ScaleOutsideFloat32) {
  Config c = valid();
  c.scale = 1e-40;
  expect_rejected(c, "1e-40");
  c.scale = 1e39;
  expect_rejected(c, "1e+39");
  c.scale = 1e-30;
  EXPECT_TRUE(validate_config(c).ok());
  c.scale = 0.0;  // 1/sqrt(head_dim)
  EXPECT_TRUE(validate_config(c).ok());
}

TEST(ValidateConfig, NcclNeedsCuda) {
  Config c = valid();
  c.transport = Transport::nccl;
  expect_rejected(c, "nccl");
}

TEST(ValidateConfig, CudaRejectsF32) {
  Config c = valid();
  c.backend = Backend::cuda;
  c.head_dim = 64;
  c.dtype = DType::f32;
  expect_rejected(c, "f32");
}

TEST(ValidateConfig, StructSize) {
  Config c = valid();
  c.struct_size = 12;
  expect_rejected(c, "12");
}

Status shape_status(int64_t batch, int64_t seq, int world) {
  Shape s;
  s.batch = batch;
  s.seq = seq;
  return validate_shape(valid(), s, world);
}

TEST(ValidateShape, Baseline) {
  EXPECT_TRUE(shape_status(1, 8192, 4).ok());
  EXPECT_TRUE(shape_status(3, 6000, 3).ok());
  EXPECT_TRUE(shape_status(1, 7, 1).ok());
}

TEST(ValidateShape, SeqNotDivisibleByWorld) {
  Status st = shape_status(1, 1001, 4);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("1001"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("4"), std::string::npos) << st.message();
  st = shape_status(1, 6000, 7);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("6000"), std::string::npos) << st.message();
}

TEST(ValidateShape, BatchBelowOne) {
  Status st = shape_status(0, 4096, 1);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("batch is 0"), std::string::npos) << st.message();
  st = shape_status(-2, 4096, 1);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("-2"), std::string::npos) << st.message();
}

TEST(ValidateShape, SeqBelowOne) {
  Status st = shape_status(1, 0, 1);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("seq"), std::string::npos) << st.message();
  st = shape_status(1, -4096, 2);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("-4096"), std::string::npos) << st.message();
}

TEST(ConfigHash, CoversEveryAgreedField) {
  const uint64_t h0 = config_hash(valid());
  auto differs = [&](Config c, const char* what) { EXPECT_NE(config_hash(c), h0) << what; };
  Config c = valid();
  c.causal = true;
  differs(c, "causal");
  c = valid();
  c.branches[1].r = 4;
  differs(c, "r");
  c = valid();
  c.branches[1].w = 4097;
  differs(c, "w");
  c = valid();
  c.heads = 5;
  differs(c, "heads");
  c = valid();
  c.head_dim = 64;
  differs(c, "head_dim");
  c = valid();
  c.head_offsets = HeadOffsets::blocked;
  differs(c, "head_offsets");
  c = valid();
  c.dtype = DType::bf16;
  differs(c, "dtype");
  c = valid();
  c.scale = 0.5;
  differs(c, "scale");
  c = valid();
  c.deterministic = false;
  differs(c, "deterministic");
  EXPECT_EQ(config_hash(valid()), h0);
}

}  // namespace
}  // namespace ringattn::test
