// followed_primary: which primary a fenced redis side follows, the rule `follow` and the probe
// that keeps a fence share.

#include "cutover/replication.hpp"

#include <gtest/gtest.h>

namespace tunneld::cutover {
namespace {

using proxy::side;

TEST(FollowedPrimary, OldFollowsFenceReplicaofOnlyUnderFenceReplicaof)
{
    config::service_config s;
    s.fence = config::redis_fence::replicaof;
    EXPECT_FALSE(followed_primary(s, side::old_side)) << "no fence_replicaof: old stays a fenced primary";
    s.fence_replicaof = config::endpoint{"10.0.0.2", 6379};
    EXPECT_EQ(followed_primary(s, side::old_side), s.fence_replicaof);
    s.fence = config::redis_fence::min_replicas;
    EXPECT_FALSE(followed_primary(s, side::old_side)) << "fence = min_replicas never makes old a replica";
}

TEST(FollowedPrimary, NewFollowsRollbackReplicaofWhateverTheFence)
{
    config::service_config s;
    s.fence_replicaof = config::endpoint{"10.0.0.2", 6379};
    EXPECT_FALSE(followed_primary(s, side::new_side)) << "fence_replicaof is old's, not new's";
    s.rollback_replicaof = config::endpoint{"10.0.0.1", 6379};
    s.fence = config::redis_fence::none;
    EXPECT_EQ(followed_primary(s, side::new_side), s.rollback_replicaof);
}

} // namespace
} // namespace tunneld::cutover
