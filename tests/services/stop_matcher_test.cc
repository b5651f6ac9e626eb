#include "services/gateway/stop_matcher.h"

#include "gtest/gtest.h"

namespace strata {
namespace {

TEST(StopMatcherTest, MatchAcrossPiecesReleasesOnlyTheTextBefore) {
  StopMatcher m({"END", "###"});
  std::string shown = m.Push("hello E");
  shown += m.Push("N");
  EXPECT_EQ(shown, "hello ");  // "EN" may still become END
  shown += m.Push("Dafter");
  EXPECT_TRUE(m.matched());
  EXPECT_EQ(m.matched_stop(), "END");
  EXPECT_EQ(shown, "hello ");
  EXPECT_EQ(m.Push("more"), "");
}

TEST(StopMatcherTest, FalseStartIsReleased) {
  StopMatcher m({"END"});
  EXPECT_EQ(m.Push("EN"), "");
  EXPECT_EQ(m.Push("X"), "ENX");
  EXPECT_EQ(m.Push("E"), "");
  EXPECT_EQ(m.Flush(), "E");
  EXPECT_FALSE(m.matched());
}

TEST(StopMatcherTest, EarliestMatchWinsAndUtf8StaysWhole) {
  StopMatcher m({"b", "xa"});
  EXPECT_EQ(m.Push("zzxab"), "zz");
  EXPECT_EQ(m.matched_stop(), "xa");
  StopMatcher u({"\xC3\xA9t\xC3\xA9"});  // "été"
  EXPECT_EQ(u.Push("caf\xC3\xA9"), "caf");
  EXPECT_EQ(u.Push("!"), "\xC3\xA9!");
}

TEST(StopMatcherTest, NoStopsPassesEverythingThrough) {
  StopMatcher m({});
  EXPECT_EQ(m.Push("abc"), "abc");
  EXPECT_EQ(m.Flush(), "");
}

}  // namespace
}  // namespace strata
