// Redis replication through hiredis (blocking, with timeouts): see replication.hpp.

#include "cutover/replication_detail.hpp"

#include <hiredis/hiredis.h>
#include <sys/time.h>
#include <map>
#include <mutex>
#include <thread>

namespace tunneld::cutover {
namespace {

using namespace detail;

struct context_deleter {
    void operator()(redisContext* context) const { redisFree(context); }
};
struct reply_deleter {
    void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

/// Exchanges every `a` and `b` in `text`.
std::string swap_words(const std::string& text, std::string_view a, std::string_view b)
{
    std::string swapped;
    for (std::size_t at = 0; at < text.size();) {
        if (text.compare(at, a.size(), a) == 0) {
            swapped += b;
            at += a.size();
        } else if (text.compare(at, b.size(), b) == 0) {
            swapped += a;
            at += b.size();
        } else
            swapped += text[at++];
    }
    return swapped;
}

/// min-replicas-to-write that fences: no deployment has this many replicas.
constexpr unsigned impossible_min_replicas = 100;

timeval to_timeval(milliseconds timeout)
{
    return timeval{.tv_sec = static_cast<time_t>(timeout.count() / 1000),
                   .tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
}

/// The text of a reply, or why there is none.
struct redis_answer {
    bool ok = false;
    std::string text;     ///< status, bulk string or integer as text; the error message if !ok
    bool replied = false; ///< the server answered (an error reply too); false: no answer came
};

/// One authenticated connection to one redis server, named "old" or "new" in messages.
class redis_session {
public:
    redis_session(std::string side, config::endpoint endpoint,
                  std::optional<std::filesystem::path> credentials)
        : side_(std::move(side)), endpoint_(std::move(endpoint)), credentials_(std::move(credentials))
    {
    }

    const std::string& side() const { return side_; }
    std::string name() const { return side_ + " " + endpoint_text(endpoint_); }

    /// Runs one command; (re)connects and authenticates first if needed; `timeout` bounds each of
    /// connect, AUTH and the command.
    redis_answer run(std::initializer_list<std::string_view> arguments, milliseconds timeout)
    {
        return run_argv(std::vector<std::string_view>(arguments), timeout);
    }

    /// run() for an argument list built at run time.
    redis_answer run_argv(const std::vector<std::string_view>& arguments, milliseconds timeout)
    {
        const bool reused = context_ != nullptr;
        if (!context_) {
            auto error = connect(timeout);
            if (!error.empty()) return {false, name() + ": " + error};
        }
        auto answer = command(arguments, timeout);
        if (!answer.ok && reused && !context_ && answer.text != "timed out") {
            // The kept connection had died (server restart, idle cut): one fresh try. Every
            // command sent here is idempotent. Not after a timeout: a stuck server stays stuck,
            // and a retry would overrun the caller's deadline.
            auto error = connect(timeout);
            if (!error.empty()) return {false, name() + ": " + error};
            answer = command(arguments, timeout);
        }
        if (!answer.ok) answer.text = name() + ": " + answer.text;
        return answer;
    }

private:
    std::string connect(milliseconds timeout)
    {
        std::optional<redis_credentials> credentials;
        if (credentials_) {
            std::string error;
            credentials = read_redis_credentials(*credentials_, error);
            if (!credentials) return error;
        }
        const auto tv = to_timeval(timeout);
        context_.reset(redisConnectWithTimeout(endpoint_.host.c_str(), endpoint_.port, tv));
        if (!context_) return "cannot allocate a redis context";
        if (context_->err) {
            std::string error = "cannot connect: " + std::string(context_->errstr);
            context_.reset();
            return error;
        }
        if (credentials) {
            secret_ = credentials->password;
            auto answer = credentials->user
                              ? command({"AUTH", *credentials->user, credentials->password}, timeout)
                              : command({"AUTH", credentials->password}, timeout);
            if (!answer.ok) {
                context_.reset();
                return "AUTH failed: " + answer.text;
            }
        }
        return {};
    }

    redis_answer command(const std::vector<std::string_view>& arguments, milliseconds timeout)
    {
        redisSetTimeout(context_.get(), to_timeval(timeout));
        std::vector<const char*> argv;
        std::vector<std::size_t> lengths;
        for (auto argument : arguments) {
            argv.push_back(argument.data());
            lengths.push_back(argument.size());
        }
        reply_ptr reply(static_cast<redisReply*>(
            redisCommandArgv(context_.get(), static_cast<int>(argv.size()), argv.data(), lengths.data())));
        if (!reply) {
            // Why reset: after an I/O error or timeout the context is unusable.
            std::string error = context_->err ? std::string(context_->errstr) : "no reply";
            if (error.empty() || error == "Resource temporarily unavailable") error = "timed out";
            context_.reset();
            return {false, scrub(std::move(error), secret_)};
        }
        switch (reply->type) {
        case REDIS_REPLY_STATUS:
        case REDIS_REPLY_STRING:
            return {true, std::string(reply->str, reply->len), true};
        case REDIS_REPLY_INTEGER:
            return {true, std::to_string(reply->integer), true};
        case REDIS_REPLY_ERROR:
            return {false, scrub(std::string(reply->str, reply->len), secret_), true};
        case REDIS_REPLY_ARRAY: {
            std::string text;
            for (std::size_t i = 0; i < reply->elements; ++i) {
                const auto* element = reply->element[i];
                if (i) text += ' ';
                if (element->type == REDIS_REPLY_STRING || element->type == REDIS_REPLY_STATUS)
                    text.append(element->str, element->len);
            }
            return {true, scrub(std::move(text), secret_), true};
        }
        default:
            return {true, {}, true};
        }
    }

    std::string side_;
    config::endpoint endpoint_;
    std::optional<std::filesystem::path> credentials_;
    std::unique_ptr<redisContext, context_deleter> context_; ///< null until connected, or after an I/O error
    std::string secret_;                                     ///< scrubbed from every message
};

class redis_replication final : public replication {
public:
    redis_replication(const config::service_config& service, config::endpoint old_endpoint,
                      config::endpoint new_endpoint)
        : service_(service), old_endpoint_(std::move(old_endpoint)), new_endpoint_(std::move(new_endpoint)),
          old_("old", old_endpoint_, service.credentials_file),
          new_("new", new_endpoint_, service.credentials_file)
    {
    }

    lag_reading probe(proxy::side active) override
    {
        const auto at = clock::now();
        if (active == proxy::side::old_side) {
            auto reading = measure(old_, new_, at + service_.probe_timeout, at);
            reading.replica = proxy::side::new_side;
            return reading;
        }
        if (service_.fence != config::redis_fence::replicaof || !service_.fence_replicaof)
            return unknown_lag("old does not follow new (fence_replicaof unset): a rollback is forced and loses "
                               "new's writes",
                               at);
        // Old follows new (fence = replicaof): how far it is behind is the rollback's readiness.
        auto reading = measure(new_, old_, at + service_.probe_timeout, at);
        reading.replica = proxy::side::old_side;
        return reading;
    }

    step_result pause_writes(duration hold) override
    {
        const auto answer =
            old_.run({"CLIENT", "PAUSE", std::to_string(hold.count()), "WRITE"}, service_.probe_timeout);
        if (!answer.ok) return step_result::failure("pause writes: " + answer.text);
        return step_result::success("old: writes paused for at most " + std::to_string(hold.count()) + "ms");
    }

    step_result wait_caught_up(clock::time_point deadline) override
    {
        return wait_until_caught_up(old_, new_, deadline);
    }

    step_result promote(clock::time_point deadline) override
    {
        const auto start = clock::now();
        if (service_.promote_command) {
            const auto hook = run_service_hook(*service_.promote_command, "promote", service_, old_endpoint_,
                                               new_endpoint_, deadline, hook_observer_);
            if (!hook.ok) return step_result::failure("promote_command " + describe(hook));
        } else {
            const auto answer =
                new_.run({"REPLICAOF", "NO", "ONE"}, time_left(deadline, service_.probe_timeout));
            if (!answer.ok) return step_result::failure("promote: " + answer.text);
            const auto kept = persist(new_, deadline);
            if (!kept.ok) return step_result::failure("promote: " + kept.note);
        }
        // Asked after persist(): a new restarted meanwhile answers with its config file's role.
        auto role = wait_for_role(new_, redis_role::master, deadline);
        if (!role.ok) return step_result::failure("promote: " + role.message);
        // A rollback fenced new (min-replicas-to-write): promoted again, it must take writes.
        const auto min = new_.run({"CONFIG", "GET", "min-replicas-to-write"}, time_left(deadline, service_.probe_timeout));
        if (min.ok && min.text == "min-replicas-to-write " + std::to_string(impossible_min_replicas)) {
            const auto lifted = unfence(proxy::side::new_side);
            if (!lifted.ok) return step_result::failure("promote: " + lifted.message);
            return step_result::success("new promoted (role:master) in " + since(start) + "; " + lifted.message);
        }
        return step_result::success("new promoted (role:master) in " + since(start));
    }

    step_result verify_promoted(clock::time_point until) override
    {
        const auto info = replication_once_answered(new_, until);
        if (!info.ok) return step_result::no_answer("verify promotion: " + info.message);
        return role_is(info.info, redis_role::master)
                   ? step_result::success("new is a primary (role:master)")
                   : step_result::failure("verify promotion: new is not a primary (" + info.message + ")");
    }

    step_result fence(proxy::side which, clock::time_point deadline) override
    {
        // Whatever the mode, old first refuses writes in a way that can be undone: becoming a
        // replica (fence = "replicaof") waits for follow(), after new is a primary to follow.
        step_result outcome = step_result::nothing_done(session(which).side() + ": no built-in fence (fence = none)");
        if (service_.fence != config::redis_fence::none) {
            auto before = saved_min_replicas(which);
            outcome = fence_min_replicas(session(which), deadline, before);
            if (before) save_min_replicas(which, *before);
            if (!outcome.ok) return outcome;
        }
        if (service_.fence_command && which == proxy::side::old_side) {
            const auto hook = run_service_hook(*service_.fence_command, "fence", service_, old_endpoint_,
                                               new_endpoint_, deadline, hook_observer_);
            if (!hook.ok) return step_result::failure(outcome.message + "; fence_command " + describe(hook));
            return step_result::success(outcome.message + "; fence_command " + describe(hook));
        }
        return outcome;
    }

    step_result unfence(proxy::side which) override
    {
        auto& server = session(which);
        if (service_.fence == config::redis_fence::none) {
            if (which == proxy::side::old_side && service_.fence_command)
                return lift_fence_command(service_, old_endpoint_, new_endpoint_, "");
            return step_result::nothing_done(server.side() + ": nothing fenced");
        }
        const auto restore = saved_min_replicas(which).value_or(0);
        const auto lifted = set_min_replicas(server, restore, clock::now() + service_.probe_timeout);
        if (!lifted.ok) return step_result::failure("unfence: " + lifted.note);
        std::string message = server.side() + ": fence lifted (min-replicas-to-write " + std::to_string(restore) + ")";
        if (which != proxy::side::old_side) return step_result::success(std::move(message));
        return lift_fence_command(service_, old_endpoint_, new_endpoint_, std::move(message));
    }

    observations observe(clock::time_point deadline) override
    {
        observations seen;
        const auto look = [&](redis_session& server, server_observation& o) {
            const auto info = server.run({"INFO", "replication"}, time_left(deadline, service_.probe_timeout));
            if (!info.ok) {
                o.error = info.text;
                return;
            }
            const auto fields = parse_info(info.text);
            const auto typed = parse_replication(fields);
            o.reachable = true;
            if (typed.role) o.role = *typed.role == redis_role::master ? server_role::primary : server_role::replica;
            const auto text = [&](const char* key) {
                const auto it = fields.find(key);
                return it == fields.end() ? std::string() : std::string(it->second);
            };
            o.replid = text("master_replid");
            o.replid2 = text("master_replid2");
            o.offset = typed.master_repl_offset;
            o.second_offset = parse_uint(text("second_repl_offset"));
            const auto min = server.run({"CONFIG", "GET", "min-replicas-to-write"},
                                        time_left(deadline, service_.probe_timeout));
            o.fenced = min.ok && min.text == "min-replicas-to-write " + std::to_string(impossible_min_replicas);
        };
        look(old_, seen.old_server);
        look(new_, seen.new_server);
        return seen;
    }

    step_result follow(proxy::side which, clock::time_point deadline) override
    {
        const auto primary = followed_primary(service_, which);
        if (!primary)
            return step_result::nothing_done(which == proxy::side::new_side
                                                 ? "new stays fenced by min-replicas-to-write (rollback_replicaof unset)"
                                             : service_.fence != config::redis_fence::replicaof
                                                 ? "old stays fenced by min-replicas-to-write"
                                                 : "old stays fenced by min-replicas-to-write (fence_replicaof unset)");
        return fence_as_replica(session(which), *primary, deadline);
    }

    step_result unpause(proxy::side which) override
    {
        auto& server = session(which);
        const auto answer = server.run({"CLIENT", "UNPAUSE"}, service_.probe_timeout);
        if (!answer.ok) return step_result::failure("unpause: " + answer.text);
        return step_result::success(server.side() + ": writes unpaused");
    }

    step_result unblock_clients(proxy::side which, const std::vector<std::int64_t>& ids) override
    {
        auto& server = session(which);
        std::size_t unblocked = 0;
        for (const auto id : ids) {
            const auto answer = server.run({"CLIENT", "UNBLOCK", std::to_string(id), "TIMEOUT"}, service_.probe_timeout);
            if (!answer.ok) return step_result::failure("unblock clients: " + answer.text);
            // 0: that client was no longer blocked (its answer came meanwhile).
            if (answer.text == "1") ++unblocked;
        }
        return step_result::success(server.side() + ": " + std::to_string(unblocked) +
                                    " clients unblocked (CLIENT UNBLOCK TIMEOUT)");
    }

    step_result rollback(const rollback_options& options, clock::time_point deadline) override
    {
        const auto start = clock::now();
        // 1. Quiesce new, the current primary.
        auto answer = new_.run({"CLIENT", "PAUSE", std::to_string(options.pause_hold.count()), "WRITE"},
                               time_left(deadline, service_.probe_timeout));
        if (!answer.ok) return step_result::failure("rollback: pause writes: " + answer.text);
        const auto give_up = [&](std::string why) {
            new_.run({"CLIENT", "UNPAUSE"}, service_.probe_timeout);
            return step_result::failure("rollback: " + why + "; nothing changed, new unpaused");
        };

        // 2. Old must hold every write new acknowledged: wait until old, a replica of new, caught up.
        const auto old_info = replication_of(old_, deadline);
        if (!old_info.ok) return give_up(old_info.message);
        std::optional<unsigned> new_min_replicas = saved_min_replicas(proxy::side::new_side);
        const auto lift_new_fence = [&] {
            set_min_replicas(new_, new_min_replicas.value_or(0), clock::now() + service_.probe_timeout);
        };
        std::string caught_up =
            "old was not a replica of new: writes made on new since the switch are lost (forced)";
        if (role_is(old_info.info, redis_role::slave)) {
            // Roles are reversed: new is the primary being followed, old the replica.
            auto waited = wait_until_caught_up(new_, old_, deadline);
            if (!waited.ok) return give_up(waited.message);
            caught_up = waited.message;
        } else if (!options.force) {
            return give_up("old is a primary, not a replica of new, so writes made on new since the switch "
                           "would be lost (fence = replicaof keeps old warm; force to roll back anyway)");
        }

        // 3. Fence first: new refuses writes (beyond its pause, which expires) before old takes any.
        auto fenced = fence_min_replicas(new_, deadline, new_min_replicas);
        if (new_min_replicas) save_min_replicas(proxy::side::new_side, *new_min_replicas);
        if (!fenced.ok) {
            lift_new_fence();
            return give_up(fenced.message);
        }

        // 4. Promote old back and lift its min_replicas fence.
        answer = old_.run({"REPLICAOF", "NO", "ONE"}, time_left(deadline, service_.probe_timeout));
        if (!answer.ok) {
            // The reply may be lost after old obeyed (old crashed, restarting): ask its role
            // before lifting new's fence, or two primaries may take writes.
            const auto seen = replication_once_answered(old_, deadline);
            if (!seen.ok)
                return step_result::no_answer("rollback: promote old: " + answer.text +
                                              ", and old has not answered since (" + seen.message + ")");
            if (!role_is(seen.info, redis_role::master)) {
                lift_new_fence();
                return give_up("promote old: " + answer.text + " (old is still a replica)");
            }
        }
        // The value old had before it was fenced at the switch, when known: this object saw it, or
        // the controller gave it back from the state file after a restart or reload (a state file
        // from before that was recorded knows none: then the configured default).
        const auto restore = saved_min_replicas(proxy::side::old_side).value_or(options.restore_min_replicas);
        const auto restored = set_min_replicas(old_, restore, deadline);
        if (!restored.ok)
            return step_result::failure(
                "rollback: old promoted but restoring min-replicas-to-write failed: " + restored.note +
                "; new still paused until the hold expires");
        // Asked after set_min_replicas() persisted the role: an old restarted meanwhile answers
        // with its config file's role.
        auto role = wait_for_role(old_, redis_role::master, deadline);
        if (!role.ok) return step_result::failure("rollback: old: " + role.message);

        // 5. Make new a replica of old when configured (warm for the next switch); else it stays fenced.
        std::string demoted = "new refuses writes (min-replicas-to-write " +
                              std::to_string(impossible_min_replicas) + ")";
        if (options.new_replicaof) {
            auto host = options.new_replicaof->host;
            answer = new_.run({"REPLICAOF", host, std::to_string(options.new_replicaof->port)},
                              time_left(deadline, service_.probe_timeout));
            if (answer.ok) {
                const auto kept = persist(new_, deadline);
                if (!kept.ok) answer = {false, kept.note, false};
            }
            // Old is the primary and new refuses writes: the rollback is done whatever this
            // answer says (failing it here would send clients back to a fenced new). The probe
            // makes new follow old later (keeps_fence).
            if (!answer.ok)
                demoted += "; making it a replica of " + endpoint_text(*options.new_replicaof) +
                           " failed (" + answer.text + "), it is retried by the probe";
            else
                demoted = "new is a replica of " + endpoint_text(*options.new_replicaof);
        }
        answer = new_.run({"CLIENT", "UNPAUSE"}, service_.probe_timeout);
        if (!answer.ok) demoted += " (unpause failed: " + answer.text + ")";
        return step_result::success("rolled back in " + since(start) + ": " + caught_up + "; old promoted; " +
                                    demoted);
    }

    std::vector<preflight_check> preflight(clock::time_point deadline) override
    {
        std::vector<preflight_check> checks;
        checks.push_back(reachable(old_, deadline));
        checks.push_back(reachable(new_, deadline));
        const bool both_up = checks[0].verdict == check_verdict::pass && checks[1].verdict == check_verdict::pass;
        if (!both_up) return checks; // the permission checks would only repeat the connect error

        const auto replica = replication_of(new_, deadline);
        preflight_check replicating{"new is a replica of old", check_verdict::fail, {}, {}};
        if (!replica.ok)
            replicating.detail = replica.message;
        else if (!role_is(replica.info, redis_role::slave))
            replicating.detail = "new answers " + replica.message + ", not role:slave";
        else {
            replicating.verdict = check_verdict::pass;
            replicating.detail = replica.message;
        }
        checks.push_back(std::move(replicating));

        checks.push_back(permitted(old_, "old accepts CLIENT PAUSE WRITE (write pause)",
                                   {"CLIENT", "PAUSE", "1", "WRITE"}, deadline));
        if (service_.promote_command)
            checks.push_back({"promote_command", check_verdict::unchecked, "a dry run does not run hooks", {}});
        else
            checks.push_back(permitted(new_, "new accepts REPLICAOF NO ONE (promote)", {"REPLICAOF", "NO", "ONE"},
                                       deadline));
        const auto mode = service_.fence;
        if (mode != config::redis_fence::none)
            checks.push_back(permitted(old_, "old accepts CONFIG SET min-replicas-to-write (fence)",
                                       {"CONFIG", "SET", "min-replicas-to-write",
                                        std::to_string(impossible_min_replicas)},
                                       deadline));
        if (mode != config::redis_fence::none)
            checks.push_back(permitted(old_, "old accepts CONFIG REWRITE (the fence survives a restart)",
                                       {"CONFIG", "REWRITE"}, deadline));
        if (mode == config::redis_fence::replicaof && service_.fence_replicaof) {
            const auto& primary = *service_.fence_replicaof;
            checks.push_back(permitted(old_, "old accepts CONFIG SET replica-read-only (fence)",
                                       {"CONFIG", "SET", "replica-read-only", "yes"}, deadline));
            checks.push_back(permitted(old_, "old accepts REPLICAOF " + endpoint_text(primary) + " (fence)",
                                       {"REPLICAOF", primary.host, std::to_string(primary.port)}, deadline));
        } else if (mode == config::redis_fence::none) {
            checks.push_back({"fence", check_verdict::unchecked,
                              "fence = none: old is not fenced and keeps accepting writes from other hosts", {}});
        }
        add_fence_hook_checks(service_, checks);
        return checks;
    }

    std::map<proxy::side, unsigned> values_before_fence() const override
    {
        std::lock_guard lock(before_fence_mutex_);
        return before_fence_;
    }
    void remember_values_before_fence(const std::map<proxy::side, unsigned>& values) override
    {
        std::lock_guard lock(before_fence_mutex_);
        before_fence_ = values;
    }

private:
    redis_session& session(proxy::side which) { return which == proxy::side::old_side ? old_ : new_; }
    std::optional<unsigned> saved_min_replicas(proxy::side which) const
    {
        std::lock_guard lock(before_fence_mutex_);
        const auto it = before_fence_.find(which);
        return it == before_fence_.end() ? std::nullopt : std::optional<unsigned>(it->second);
    }
    void save_min_replicas(proxy::side which, unsigned value)
    {
        std::lock_guard lock(before_fence_mutex_);
        before_fence_[which] = value;
    }

    /// PING through the configured credentials, timed.
    preflight_check reachable(redis_session& session, clock::time_point deadline)
    {
        const auto start = clock::now();
        const auto answer = session.run({"PING"}, time_left(deadline, service_.probe_timeout));
        const auto rtt = std::chrono::duration_cast<milliseconds>(clock::now() - start);
        preflight_check check{session.side() + " reachable, credentials accepted", check_verdict::fail, {}, rtt};
        if (!answer.ok) {
            check.detail = answer.text;
        } else {
            check.verdict = check_verdict::pass;
            check.detail = session.name() + " answered " + answer.text + " in " + std::to_string(rtt.count()) + "ms";
        }
        return check;
    }

    /// Whether `session`'s user may run `command` there, without running it: the command must
    /// exist (not renamed away) and ACL DRYRUN (Redis 7) must allow it. A user that may not run
    /// ACL DRYRUN itself leaves the permission unchecked, not passed.
    preflight_check permitted(redis_session& session, std::string name,
                              std::initializer_list<std::string_view> command, clock::time_point deadline)
    {
        preflight_check check{std::move(name), check_verdict::fail, {}, {}};
        const std::string verb = to_lower(*command.begin());
        const auto listed = session.run({"COMMAND", "LIST", "FILTERBY", "PATTERN", verb},
                                        time_left(deadline, service_.probe_timeout));
        if (!listed.ok) {
            check.verdict = check_verdict::unchecked;
            check.detail = "cannot list commands: " + listed.text;
            return check;
        }
        if (listed.text != verb) {
            check.detail = session.name() + " has no " + to_upper(verb) + " command (renamed or disabled)";
            return check;
        }
        const auto user = session.run({"ACL", "WHOAMI"}, time_left(deadline, service_.probe_timeout));
        if (!user.ok) {
            check.verdict = check_verdict::unchecked;
            check.detail = "cannot tell the probe user: " + user.text;
            return check;
        }
        std::vector<std::string_view> dry_run{"ACL", "DRYRUN", user.text};
        dry_run.insert(dry_run.end(), command.begin(), command.end());
        const auto answer = session.run_argv(dry_run, time_left(deadline, service_.probe_timeout));
        if (!answer.ok) {
            check.verdict = check_verdict::unchecked;
            check.detail = "ACL DRYRUN not available to the probe user: " + answer.text;
        } else if (answer.text == "OK") {
            check.verdict = check_verdict::pass;
            check.detail = "permitted for user " + user.text;
        } else {
            check.detail = session.name() + ": " + answer.text;
        }
        return check;
    }

    static std::string to_lower(std::string_view text)
    {
        std::string out(text);
        for (char& c : out)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return out;
    }
    static std::string to_upper(std::string_view text)
    {
        std::string out(text);
        for (char& c : out)
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        return out;
    }

    struct info_answer {
        bool ok = false;
        replication_info info;
        std::string text;
        std::string message; ///< error, or "role:..." description
        explicit operator bool() const { return ok; }
    };

    static bool role_is(const replication_info& info, redis_role role) { return info.role == role; }

    /// `session`'s replication, asked again every reask_interval while it does not answer
    /// (a server restarting is away for a moment), until `until`; at least once.
    info_answer replication_once_answered(redis_session& session, clock::time_point until)
    {
        return ask_until_answered([&] { return replication_of(session, clock::now() + service_.probe_timeout); },
                                  until);
    }

    info_answer replication_of(redis_session& session, clock::time_point deadline)
    {
        const auto answer = session.run({"INFO", "replication"}, time_left(deadline, service_.probe_timeout));
        if (!answer.ok) return {false, {}, {}, answer.text};
        auto info = parse_replication(answer.text);
        std::string role = info.role ? "role:" + std::string(to_string(*info.role)) : "role unknown";
        return {true, std::move(info), answer.text, std::move(role)};
    }

    /// Lag of `replica` behind `primary`; `replica` is queried first (see redis_lag).
    lag_reading measure(redis_session& primary, redis_session& replica, clock::time_point deadline,
                        clock::time_point at)
    {
        const auto replica_info = replication_of(replica, deadline);
        if (!replica_info.ok) return unknown_lag(replica_info.message, at);
        const auto primary_info = replication_of(primary, deadline);
        if (!primary_info.ok) return unknown_lag(primary_info.message, at);
        auto reading = redis_lag(primary_info.info, replica_info.info, at);
        if (primary.side() != "old") {
            // Rollback measures old behind new: redis_lag's "old"/"new" mean primary/replica here.
            reading.detail = swap_words(reading.detail, "old", "new");
        }
        return reading;
    }

    step_result wait_until_caught_up(redis_session& primary, redis_session& replica,
                                     clock::time_point deadline)
    {
        const auto start = clock::now();
        lag_reading last;
        for (;;) {
            last = measure(primary, replica, deadline, clock::now());
            if (last.link == link_state::up && last.bytes == 0u)
                return step_result::success(replica.side() + " caught up with " + primary.side() + " in " +
                                            since(start) + " (" + last.detail + ")");
            if (clock::now() + poll_interval >= deadline) break;
            std::this_thread::sleep_for(poll_interval);
        }
        std::string lag = last.bytes ? format_bytes(*last.bytes) + " behind" : "lag unknown";
        return step_result::failure(replica.side() + " not caught up with " + primary.side() +
                                    " by the deadline (" + lag + ", link " +
                                    std::string(to_string(last.link)) + ": " + last.detail + ")");
    }

    step_result wait_for_role(redis_session& session, redis_role role, clock::time_point deadline)
    {
        std::string last;
        for (;;) {
            const auto info = replication_of(session, deadline);
            if (info.ok && role_is(info.info, role)) return step_result::success(info.message);
            last = info.message;
            if (clock::now() + poll_interval >= deadline) break;
            std::this_thread::sleep_for(poll_interval);
        }
        return step_result::failure(session.side() + " did not become role:" + std::string(to_string(role)) +
                                    " by the deadline (" + last + ")");
    }

    step_result fence_as_replica(redis_session& session, const config::endpoint& primary,
                                 clock::time_point deadline)
    {
        // A replica with replica-read-only off would still take writes: make sure it is on.
        auto answer = session.run({"CONFIG", "SET", "replica-read-only", "yes"},
                                  time_left(deadline, service_.probe_timeout));
        if (!answer.ok) return step_result::failure("fence: " + answer.text);
        answer = session.run({"REPLICAOF", primary.host, std::to_string(primary.port)},
                             time_left(deadline, service_.probe_timeout));
        if (!answer.ok) return step_result::failure("fence: " + answer.text);
        const auto kept = persist(session, deadline);
        if (!kept.ok) return step_result::failure("fence: " + kept.note);
        // Asked after persist(): a server restarted meanwhile answers with its config file's role.
        auto role = wait_for_role(session, redis_role::slave, deadline);
        if (!role.ok) return step_result::failure("fence: " + role.message);
        return step_result::success(session.side() + " fenced: read-only replica of " +
                                    endpoint_text(primary));
    }

    /// Sets min-replicas-to-write on `session` to a number no deployment reaches, so that every
    /// write fails with NOREPLICAS; `previous` keeps the value it had (not overwritten by a second
    /// fence) for unfence.
    step_result fence_min_replicas(redis_session& session, clock::time_point deadline,
                                   std::optional<unsigned>& previous)
    {
        const auto impossible = std::to_string(impossible_min_replicas);
        const auto answer = session.run({"CONFIG", "GET", "min-replicas-to-write"},
                                  time_left(deadline, service_.probe_timeout));
        if (!answer.ok) return step_result::failure("fence: " + answer.text);
        const auto space = answer.text.rfind(' ');
        const auto value = space == std::string::npos ? std::nullopt : parse_uint(answer.text.substr(space + 1));
        if (value && *value != impossible_min_replicas) previous = static_cast<unsigned>(*value);
        const auto set = set_min_replicas(session, impossible_min_replicas, deadline);
        if (!set.ok) return step_result::failure("fence: " + set.note);
        return step_result::success(session.side() + " fenced: min-replicas-to-write " + impossible +
                                    ", writes refused" + (set.note.empty() ? std::string() : " (" + set.note + ")"));
    }

    struct persisted {
        bool ok = false;  ///< false: not done, or no answer came (the change may be lost with a restart)
        std::string note; ///< why not, if !ok; empty once written; else why it is in memory only
    };

    /// Sets min-replicas-to-write on `session` to `value`, persist()s it and reads it back: a
    /// server restarted between the SET and the rewrite answers with its config file's value, and
    /// the value did not stick.
    persisted set_min_replicas(redis_session& session, unsigned value, clock::time_point deadline)
    {
        const auto wanted = std::to_string(value);
        auto answer = session.run({"CONFIG", "SET", "min-replicas-to-write", wanted},
                                  time_left(deadline, service_.probe_timeout));
        if (!answer.ok) return {false, answer.text};
        auto kept = persist(session, deadline);
        if (!kept.ok) return kept;
        answer = session.run({"CONFIG", "GET", "min-replicas-to-write"}, time_left(deadline, service_.probe_timeout));
        if (!answer.ok) return {false, answer.text};
        if (answer.text != "min-replicas-to-write " + wanted)
            return {false, "min-replicas-to-write did not stick (" + answer.text + ")"};
        return kept;
    }

    /// Writes `session`'s running configuration to its config file (CONFIG REWRITE), so that the
    /// fence or role just set survives a restart of the server, as Redis Sentinel does after each
    /// reconfiguration. Not ok when the server did not answer: it may have restarted and forgotten
    /// the change, so the caller's step fails and reads the server again. A server that answers
    /// with an error (it runs without a config file, or cannot write it) keeps the change in
    /// memory only: `note` says so, and after a restart the probe's fence_lost sets it again.
    persisted persist(redis_session& session, clock::time_point deadline)
    {
        const auto answer = session.run({"CONFIG", "REWRITE"}, time_left(deadline, service_.probe_timeout));
        if (answer.ok) return {true, {}};
        if (!answer.replied) return {false, "CONFIG REWRITE: " + answer.text};
        return {true, "in memory only, a restart forgets it until the probe sets it again: CONFIG REWRITE: " +
                          answer.text};
    }

    config::service_config service_;
    config::endpoint old_endpoint_;
    config::endpoint new_endpoint_;
    redis_session old_; ///< reused across calls; reconnects after any I/O error
    redis_session new_;
    /// Each side's min-replicas-to-write before fence() set it, for unfence() and rollback(). The
    /// controller reads it from another thread to persist it: hence the mutex.
    mutable std::mutex before_fence_mutex_;
    std::map<proxy::side, unsigned> before_fence_;
};

} // namespace

std::unique_ptr<replication> make_redis_replication(const config::service_config& service,
                                                    const config::endpoint& old_endpoint,
                                                    const config::endpoint& new_endpoint)
{
    return std::make_unique<redis_replication>(service, old_endpoint, new_endpoint);
}

} // namespace tunneld::cutover
