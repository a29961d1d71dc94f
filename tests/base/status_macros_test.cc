// base/status_macros.h: RETURN_IF_ERROR and ASSIGN_OR_RETURN return the first error unchanged,
// evaluate their expression once, and pass values (move-only ones included) through.
#include "base/status_macros.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace cachesvc {
namespace {

[[nodiscard]] absl::Status Fails(int* calls, absl::Status s) {
  ++*calls;
  return s;
}

[[nodiscard]] absl::StatusOr<std::unique_ptr<int>> MakeInt(int* calls, absl::StatusOr<int> v) {
  ++*calls;
  if (!v.ok()) return v.status();
  return std::make_unique<int>(*v);
}

[[nodiscard]] absl::Status TwoSteps(int* calls, absl::Status first, absl::Status second) {
  RETURN_IF_ERROR(Fails(calls, first));
  RETURN_IF_ERROR(Fails(calls, second));
  return absl::OkStatus();
}

[[nodiscard]] absl::StatusOr<int> Sum(int* calls, absl::StatusOr<int> a, absl::StatusOr<int> b) {
  ASSIGN_OR_RETURN(std::unique_ptr<int> x, MakeInt(calls, a));
  int y = 0;
  ASSIGN_OR_RETURN(auto y_ptr, MakeInt(calls, b));
  ASSIGN_OR_RETURN(y, absl::StatusOr<int>(*y_ptr));  // an existing variable
  return *x + y;
}

TEST(StatusMacrosTest, ReturnIfErrorStopsAtTheFirstError) {
  int calls = 0;
  EXPECT_TRUE(TwoSteps(&calls, absl::OkStatus(), absl::OkStatus()).ok());
  EXPECT_EQ(calls, 2);
  calls = 0;
  const absl::Status e = TwoSteps(&calls, absl::NotFoundError("first"), absl::OkStatus());
  EXPECT_EQ(e, absl::NotFoundError("first"));
  EXPECT_EQ(calls, 1);  // evaluated once, and the second step never ran
  calls = 0;
  EXPECT_EQ(TwoSteps(&calls, absl::OkStatus(), absl::DataLossError("second")),
            absl::DataLossError("second"));
  EXPECT_EQ(calls, 2);
}

TEST(StatusMacrosTest, AssignOrReturnMovesValuesAndReturnsErrors) {
  int calls = 0;
  auto ok = Sum(&calls, 2, 3);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, 5);
  EXPECT_EQ(calls, 2);
  calls = 0;
  auto bad = Sum(&calls, absl::ResourceExhaustedError("full"), 3);
  EXPECT_EQ(bad.status(), absl::ResourceExhaustedError("full"));
  EXPECT_EQ(calls, 1);
  calls = 0;
  EXPECT_EQ(Sum(&calls, 1, absl::UnavailableError("later")).status(),
            absl::UnavailableError("later"));
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace cachesvc
