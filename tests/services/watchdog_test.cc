// The step watchdog's deadline and blame, as pure functions.
#include "services/coordinator/watchdog.h"

#include "gtest/gtest.h"

namespace strata {
namespace {

TEST(WatchdogTest, DeadlineIsTheFloorOrAMultipleOfTheRecentP99) {
  const WatchdogOptions o{5000, 20};
  EXPECT_EQ(StepDeadlineMs(o, {}), 5000);
  EXPECT_EQ(StepDeadlineMs(o, std::vector<double>(100, 1000.0)), 5000);  // 20 x 1 ms
  std::vector<double> slow(100, 1000.0);
  slow[99] = 900'000;  // one 0.9 s step is past the p99 of 100
  EXPECT_EQ(StepDeadlineMs(o, slow), 18'000);
  std::vector<double> prefill(1000, 2000.0);
  for (int i = 0; i < 20; ++i) prefill[i] = 600'000;  // 2% of steps take 0.6 s
  EXPECT_EQ(StepDeadlineMs(o, prefill), 12'000);
  EXPECT_EQ(StepDeadlineMs({100, 1}, {1e300}), 100);  // absurd samples keep the floor
}

TEST(WatchdogTest, BlameFallsOnTheFirstStageThatHasNotFinishedTheStep) {
  std::vector<StageProgress> s = {{"w0", 10, 10}, {"w1", 10, 9}, {"w2", 8, 8}};
  EXPECT_EQ(BlameStage(s, 10), 1);  // w1 received step 10 and is stuck in it
  s[1].last_done = 10;
  EXPECT_EQ(BlameStage(s, 10), 2);  // w2 never got it from w1
  s[0] = {"w0", 9, 9};
  EXPECT_EQ(BlameStage(s, 10), 0);  // stage 0 never finished it
  s = {{"w0", 10, 10}, {"w1", 10, 10}};
  EXPECT_EQ(BlameStage(s, 10), 1);  // all done: lost on the way back from the last stage
  EXPECT_EQ(BlameStage({}, 1), -1);
}

}  // namespace
}  // namespace strata
