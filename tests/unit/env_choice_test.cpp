// env_choice (backend/env_choice.hpp): the two-valued A/B settings of the
// CUDA backend (RINGATTN_BWD_DQ, RINGATTN_BWD_PINGPONG, RINGATTN_TILE_SCHEDULE).
#include "backend/env_choice.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace ringattn {
namespace {

constexpr const char* kVar = "RINGATTN_TEST_ENV_CHOICE";

TEST(EnvChoice, DefaultOtherAndErrors) {
  unsetenv(kVar);
  bool v = false;
  ASSERT_TRUE(env_choice(kVar, "pass", "atomic", true, &v).ok());
  EXPECT_FALSE(v) << "unset keeps the default";
  for (const char* text : {"", "pass"}) {
    setenv(kVar, text, 1);
    v = false;
    ASSERT_TRUE(env_choice(kVar, "pass", "atomic", true, &v).ok()) << text;
    EXPECT_FALSE(v) << "'" << text << "' keeps the default";
  }
  setenv(kVar, "atomic", 1);
  ASSERT_TRUE(env_choice(kVar, "pass", "atomic", true, &v).ok());
  EXPECT_TRUE(v);
  // Either value overrides what the caller set (a default from the config):
  // `pass` turns a setting that the config switched on back off.
  setenv(kVar, "pass", 1);
  v = true;
  ASSERT_TRUE(env_choice(kVar, "pass", "atomic", true, &v).ok());
  EXPECT_FALSE(v) << "'pass' overrides a setting that was on";
  bool w = true;  // the other value may also switch a default-on setting off
  setenv(kVar, "static", 1);
  ASSERT_TRUE(env_choice(kVar, "dynamic", "static", false, &w).ok());
  EXPECT_FALSE(w);
  for (const char* bad : {"Atomic", "2", "atomic "}) {
    setenv(kVar, bad, 1);
    v = false;
    const Status st = env_choice(kVar, "pass", "atomic", true, &v);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(st.message(), std::string(kVar) + "='" + bad + "' (allowed: pass, atomic)");
    EXPECT_FALSE(v) << "an error leaves the setting alone";
  }
  unsetenv(kVar);
}

}  // namespace
}  // namespace ringattn
