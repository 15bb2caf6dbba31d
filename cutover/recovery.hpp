#pragma once
// Recovery of a switch the daemon died in: what the servers say, and the pure decision taken from
// it and the journal (finish forward, undo, or leave it to the operator). No sockets, no clock.

#include "proxy/router.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace tunneld::cutover {

struct switch_journal;

enum class server_role { primary, replica };

/// What one server says about its replication, as far as recovery needs it.
struct server_observation {
    bool reachable = false;
    std::string error;               ///< unreachable or unreadable: why, one line
    std::optional<server_role> role; ///< redis role, postgres pg_is_in_recovery()
    std::string replid;              ///< redis master_replid ("" for postgres)
    std::string replid2;             ///< redis master_replid2 (all zeros when it has none)
    std::optional<std::uint64_t> offset;        ///< redis master_repl_offset
    std::optional<std::uint64_t> second_offset; ///< redis second_repl_offset (-1 read as none)
    bool fenced = false;             ///< refuses writes by our fence (redis min-replicas-to-write)

    friend bool operator==(const server_observation&, const server_observation&) = default;
};

/// Both servers of a service, indexed by side.
struct observations {
    server_observation old_server;
    server_observation new_server;

    const server_observation& of(proxy::side s) const { return s == proxy::side::old_side ? old_server : new_server; }
};

enum class recovery_verdict {
    forward,    ///< the target was promoted: fence the other side, route to the target
    undo,       ///< the target was not promoted: lift the fence and pause, route to where it started
    unresolved, ///< neither can be shown: refuse clients, the operator runs `tunnelctl resolve`
};

struct recovery_decision {
    recovery_verdict verdict = recovery_verdict::unresolved;
    std::string reason; ///< one line: what was seen
};

/// Decides from the servers' replication state, not from roles alone: a promoted replica carries
/// its old primary's replication id as master_replid2, an emptied restart does not.
recovery_decision decide_recovery(const switch_journal& journal, const observations& seen);

/// Whether `tunnelctl resolve --to to` may go ahead with what was seen: the target must answer
/// as a primary; the other side, if it answers as a primary too, is fenced by the resolve.
recovery_decision check_resolve(proxy::side to, const observations& seen);

/// Where the servers of a redis or postgres service stand for a switch to one side.
enum class servers_at {
    start,   ///< the target is a replica of the other side (or, after a rollback, its fenced primary)
    target,  ///< the target is an unfenced primary and the other side follows it or is fenced (adopt)
    neither, ///< anything else: two writable primaries, no primary, an unrelated lineage, unknown roles
};

struct servers_position {
    servers_at at = servers_at::neither;
    std::string reason; ///< one line: what was seen (neither: also what the operator can do)
};

/// Where `seen` puts a switch to `to`. Target is shown by replication, not by roles alone: the
/// other side is a replica whose replication id is the target's (or the one the target
/// continues), or a fenced primary whose lineage the target's is related to. Postgres (no
/// replication ids, no fence to read) is at the target only when the other side is a standby.
servers_position locate_servers(proxy::side to, const observations& seen);

/// "role:master replid=ab12.. replid2=00.. offset=1234" (for reasons and the log).
std::string describe(const server_observation& o);

} // namespace tunneld::cutover
