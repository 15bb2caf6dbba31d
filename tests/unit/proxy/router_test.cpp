#include "proxy/router.hpp"

#include <array>
#include <gtest/gtest.h>
#include <set>

namespace tunneld::proxy {
namespace {

TEST(ChooseSide, WithoutSplitFollowsTheActiveSide)
{
    EXPECT_EQ(choose_side(route_to(side::old_side), 0), side::old_side);
    EXPECT_EQ(choose_side(route_to(side::new_side), 99), side::new_side);
}

TEST(ChooseSide, SplitPercentIsAnExclusiveBound)
{
    route r = route_to(side::old_side);
    r.split_percent = 10;
    EXPECT_EQ(choose_side(r, 9), side::new_side);
    EXPECT_EQ(choose_side(r, 10), side::old_side);
}

TEST(ChooseSide, SplitZeroAndHundredAreAllOrNothing)
{
    route none = route_to(side::new_side);
    none.split_percent = 0;
    route all = route_to(side::old_side);
    all.split_percent = 100;
    for (std::uint32_t roll = 0; roll < 100; ++roll) {
        EXPECT_EQ(choose_side(none, roll), side::old_side);
        EXPECT_EQ(choose_side(all, roll), side::new_side);
    }
}

TEST(StickyRoll, SameAddressSameRollAndInRange)
{
    const std::array<unsigned char, 4> a{127, 0, 0, 1};
    const std::array<unsigned char, 4> b{127, 0, 0, 2};
    EXPECT_EQ(sticky_roll(a), sticky_roll(a));
    EXPECT_LT(sticky_roll(a), 100u);
    EXPECT_LT(sticky_roll(b), 100u);
}

TEST(StickyRoll, SpreadsAddressesOverBothSidesOfAHalfSplit)
{
    std::set<side> seen;
    route r;
    r.split_percent = 50;
    r.sticky = true;
    for (unsigned char last = 1; last < 64; ++last) {
        const std::array<unsigned char, 4> address{127, 0, 0, last};
        seen.insert(choose_side(r, sticky_roll(address)));
    }
    EXPECT_EQ(seen.size(), 2u);
}

TEST(Side, ParsesTheContractWords)
{
    EXPECT_EQ(parse_side("old"), side::old_side);
    EXPECT_EQ(parse_side("new"), side::new_side);
    EXPECT_EQ(parse_side("split"), std::nullopt);
    EXPECT_EQ(to_string(side::new_side), "new");
}

} // namespace
} // namespace tunneld::proxy
