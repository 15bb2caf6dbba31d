#include "cutover/recovery.hpp"

#include "cutover/switch_machine.hpp"

#include <fmt/format.h>

namespace tunneld::cutover {

namespace {

bool no_id(const std::string& id)
{
    return id.empty() || id.find_first_not_of('0') == std::string::npos;
}

/// `target`, a primary, continues `source`'s lineage: its previous replication id is source's
/// current or previous one.
bool continues(const server_observation& target, const server_observation& source)
{
    if (no_id(target.replid2)) return false;
    return target.replid2 == source.replid || (!no_id(source.replid2) && target.replid2 == source.replid2);
}

} // namespace

std::string describe(const server_observation& o)
{
    if (!o.reachable) return "unreachable (" + o.error + ")";
    std::string text = !o.role ? "role unknown" : *o.role == server_role::primary ? "a primary" : "a replica";
    if (!o.replid.empty()) {
        text += fmt::format(" (master_replid {}", o.replid.substr(0, 8));
        if (!no_id(o.replid2)) text += fmt::format(", master_replid2 {}", o.replid2.substr(0, 8));
        if (o.offset) text += fmt::format(", offset {}", *o.offset);
        text += ")";
    }
    if (o.fenced) text += ", fenced";
    return text;
}

recovery_decision decide_recovery(const switch_journal& journal, const observations& seen)
{
    const auto to = journal.to;
    const auto from = journal.from;
    const auto& target = seen.of(to);
    const auto& source = seen.of(from);
    const auto name = [](proxy::side s) { return std::string(proxy::to_string(s)); };
    const auto saw = fmt::format("{} is {}; {} is {}", name(from), describe(source), name(to), describe(target));
    if (!target.reachable || !source.reachable || !target.role || !source.role)
        return {recovery_verdict::unresolved, "cannot tell who is primary: " + saw};
    const bool promotion_asked = journal.step == journal_step::promote || journal.step == journal_step::follow ||
                                 journal.step == journal_step::roll_back;

    if (*target.role == server_role::replica) {
        if (*source.role == server_role::primary)
            return {recovery_verdict::undo, fmt::format("{} was not promoted: {}", name(to), saw)};
        return {recovery_verdict::unresolved, "no primary at all: " + saw};
    }
    // The target is a primary.
    if (*source.role == server_role::replica) {
        // A replica that just began to follow the target (another host switched the servers, and
        // this host restarts before the source's first sync) still shows the id the target
        // continues: that is following it, as locate_servers reads it too.
        if (!target.replid.empty() && source.replid != target.replid && source.replid != target.replid2)
            return {recovery_verdict::unresolved, fmt::format("{} follows another primary than {}: {}", name(from),
                                                              name(to), saw)};
        return {recovery_verdict::forward, fmt::format("{} was promoted and {} follows it: {}", name(to), name(from), saw)};
    }
    // Two primaries: only a promotion this switch asked for, shown by the lineage, goes forward.
    if (!promotion_asked)
        return {recovery_verdict::unresolved,
                fmt::format("{} is a primary, but this switch never promoted it (restarted without its replica "
                            "settings?): {}",
                            name(to), saw)};
    if (target.replid.empty()) // postgres: out of recovery after a promotion we asked for
        return {recovery_verdict::forward, fmt::format("{} was promoted: {}", name(to), saw)};
    if (continues(target, source))
        return {recovery_verdict::forward,
                fmt::format("{} was promoted (its master_replid2 continues {}'s lineage): {}", name(to), name(from), saw)};
    return {recovery_verdict::unresolved,
            fmt::format("{} is a primary whose replication id does not continue {}'s (promoted then restarted, or "
                        "emptied): {}",
                        name(to), name(from), saw)};
}

servers_position locate_servers(proxy::side to, const observations& seen)
{
    const auto& target = seen.of(to);
    const auto from = proxy::other(to);
    const auto& source = seen.of(from);
    const std::string to_name(proxy::to_string(to));
    const std::string from_name(proxy::to_string(from));
    const auto saw = fmt::format("{} is {}; {} is {}", from_name, describe(source), to_name, describe(target));
    const auto neither = [&](std::string what) {
        return servers_position{
            servers_at::neither,
            fmt::format("{}: {}; the servers are neither at the start ({} a replica of {}, replication link up) nor "
                        "switched ({} a primary, {} fenced or its replica). Set the roles by hand (or finish the "
                        "other host's switch), then run the switch again; --force switches anyway",
                        what, saw, to_name, from_name, to_name, from_name)};
    };
    if (!target.reachable || !source.reachable || !target.role || !source.role)
        return neither("cannot tell the servers' roles");
    const bool lineage_known = !target.replid.empty() && !source.replid.empty();
    const bool related = !lineage_known || continues(target, source) || continues(source, target);
    if (*target.role == server_role::replica) {
        if (*source.role == server_role::primary) return {servers_at::start, saw};
        return neither("no primary at all");
    }
    // The target is a primary.
    if (*source.role == server_role::replica) {
        // A replica that just began to follow the target still shows the id the target continues.
        const bool follows = !lineage_known || source.replid == target.replid || source.replid == target.replid2;
        if (follows && !target.fenced) return {servers_at::target, saw};
        if (!follows) return neither(fmt::format("{} follows another primary than {}", from_name, to_name));
        return neither(fmt::format("{} is fenced", to_name));
    }
    // Two primaries: the fence tells which one a finished switch (or rollback) left writable.
    if (related && source.fenced && !target.fenced && lineage_known) return {servers_at::target, saw};
    if (related && target.fenced && !source.fenced) return {servers_at::start, saw};
    if (!related) return neither("two primaries of different lineage");
    return neither(source.fenced ? "both primaries are fenced" : "two writable primaries");
}

recovery_decision check_resolve(proxy::side to, const observations& seen)
{
    const auto& target = seen.of(to);
    const auto other = proxy::other(to);
    const auto saw = fmt::format("{} is {}; {} is {}", proxy::to_string(to), describe(target),
                                 proxy::to_string(other), describe(seen.of(other)));
    if (!target.reachable || target.role != server_role::primary)
        return {recovery_verdict::unresolved,
                fmt::format("{} must answer as a primary to take the clients (promote it by hand first): {}",
                            proxy::to_string(to), saw)};
    return {recovery_verdict::forward, saw};
}

} // namespace tunneld::cutover
