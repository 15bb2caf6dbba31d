#include "fleet/epoch.hpp"

namespace tunneld::fleet {

namespace asio = boost::asio;

namespace {

/// The epoch key's state from a read of it; errc::malformed_reply for a value that is not an
/// epoch record (never read as "nobody holds it").
etcd::result<epoch_state> state_from(const etcd::range_response& read, std::string service)
{
    if (read.kvs.empty()) return epoch_state{};
    auto record = decode_epoch_record(read.kvs.front().value);
    if (!record)
        return etcd::error{etcd::errc::malformed_reply, "epoch of service " + std::string(service) +
                                                            " is not an epoch record"};
    return epoch_state{std::move(*record), read.kvs.front().mod_revision};
}

} // namespace

asio::awaitable<etcd::result<epoch_state>> read_epoch(etcd::client& client, const key_layout& keys,
                                                      std::string service, etcd::clock::time_point deadline)
{
    // Arguments with destructors are named outside co_await: g++ 12 destroys a temporary inside a
    // co_await expression twice (GCC PR 100611).
    etcd::range_request request{keys.epoch_key(service), {}};
    auto read = co_await client.range(std::move(request), deadline);
    if (!read) co_return read.err();
    co_return state_from(*read, service);
}

asio::awaitable<etcd::result<claim>> claim_next_epoch(etcd::client& client, const key_layout& keys,
                                                      std::string service, std::string member,
                                                      side target, etcd::clock::time_point deadline)
{
    auto now = co_await read_epoch(client, keys, service, deadline);
    if (!now) co_return now.err();
    if (now->record.held()) co_return claim{false, std::move(*now)};
    epoch_record next{now->record.epoch + 1, now->record.committed, "claimed", std::string(member), target};
    const std::string key = keys.epoch_key(service);
    // mod_revision 0 compares equal only while the key does not exist.
    etcd::txn_request txn{{etcd::compare::mod_revision_is(key, now->mod_revision)},
                          {etcd::put_request{key, encode(next)}},
                          {etcd::range_request{key, {}}}};
    auto done = co_await client.txn(std::move(txn), deadline);
    if (!done) co_return done.err();
    if (done->succeeded) co_return claim{true, {std::move(next), done->revision}};
    if (done->responses.size() != 1 || !std::holds_alternative<etcd::range_response>(done->responses[0]))
        co_return etcd::error{etcd::errc::malformed_reply, "txn failure branch did not return the read"};
    auto current = state_from(std::get<etcd::range_response>(done->responses[0]), service);
    if (!current) co_return current.err();
    co_return claim{false, std::move(*current)};
}

asio::awaitable<etcd::result<std::optional<epoch_state>>>
update_epoch(etcd::client& client, const key_layout& keys, std::string service, const epoch_state& expected,
             epoch_record next, etcd::clock::time_point deadline)
{
    const std::string key = keys.epoch_key(service);
    etcd::txn_request txn{{etcd::compare::mod_revision_is(key, expected.mod_revision)},
                          {etcd::put_request{key, encode(next)}},
                          {}};
    auto done = co_await client.txn(std::move(txn), deadline);
    if (!done) co_return done.err();
    if (!done->succeeded) co_return std::optional<epoch_state>{};
    co_return std::optional<epoch_state>{epoch_state{std::move(next), done->revision}};
}

} // namespace tunneld::fleet
