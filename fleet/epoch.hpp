#pragma once
// A service's epoch in etcd: claimed by one member at a time with a compare-and-swap, moved
// through the switch's phases, committed with the new side. Names are taken by value: these are
// coroutines, and a view could dangle by the time they run.

#include "fleet/etcd_client.hpp"
#include "fleet/keys.hpp"

namespace tunneld::fleet {

/// The outcome of a claim.
struct claim {
    bool claimed = false;
    /// Claimed: ours (epoch + 1, phase "claimed"). Refused: what is there now: a holder (who holds
    /// it, towards which side) or an epoch committed since it was read.
    epoch_state current;
};

/// Reads the service's epoch and, only if nobody holds it, claims the next one for `member`
/// towards `target` in one transaction conditioned on the read (so of any number of members
/// claiming at once, exactly one succeeds). A malformed epoch value fails closed.
boost::asio::awaitable<etcd::result<claim>> claim_next_epoch(etcd::client& client, const key_layout& keys,
                                                             std::string service, std::string member,
                                                             side target, etcd::clock::time_point deadline);

/// Reads the service's epoch (epoch 0 on old when absent).
boost::asio::awaitable<etcd::result<epoch_state>> read_epoch(etcd::client& client, const key_layout& keys,
                                                             std::string service,
                                                             etcd::clock::time_point deadline);

/// Replaces the epoch record if it is still at `expected.mod_revision`: a phase change, the
/// commit (phase "committed", side = target) or an abort (phase "committed", side unchanged).
/// The new state when written; nullopt when another writer got there first.
boost::asio::awaitable<etcd::result<std::optional<epoch_state>>>
update_epoch(etcd::client& client, const key_layout& keys, std::string service, const epoch_state& expected,
             epoch_record next, etcd::clock::time_point deadline);

} // namespace tunneld::fleet
