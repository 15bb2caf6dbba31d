#pragma once
// The session state a Redis client has set on its connection and that must follow it when it is
// moved to the other side, and the replay that recreates it there: HELLO 3 first (it authenticates
// too), then AUTH, SELECT, CLIENT SETNAME and the allowlist below. Pure: no sockets, clock or threads.
//
// Replayed besides AUTH, HELLO, SELECT and CLIENT SETNAME (the allowlist): connection flags that
// client libraries set once when they connect, that touch no data, and whose replay is idempotent:
//   CLIENT SETINFO LIB-NAME | LIB-VER  (redis-py 5, go-redis 9, Jedis 5 send them; CLIENT LIST shows them)
//   CLIENT NO-EVICT ON                 (a client that must survive maxmemory-clients)
//   CLIENT NO-TOUCH ON                 (a monitoring client that must not change LRU/LFU)
// Not replayed, the client is pinned instead: MULTI, WATCH, subscriptions, MONITOR, CLIENT TRACKING
// (its redirect and invalidation state live in the old server), CLIENT REPLY OFF|SKIP. READONLY
// and ASKING are cluster-only and tunneld proxies standalone servers.

#include "proxy/resp_framer.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace tunneld::proxy {

/// Zeroes `bytes` in a way the compiler may not drop as a dead store.
void wipe_bytes(void* bytes, std::size_t size) noexcept;

/// Text of at most N bytes kept inline: never allocates, never grows.
template <std::size_t N> class fixed_text {
public:
    /// Replaces the text; false (and unchanged) when `text` is longer than N.
    bool assign(std::string_view text) noexcept
    {
        if (text.size() > N) return false;
        if (!text.empty()) std::memcpy(bytes_.data(), text.data(), text.size()); // "" may have no data()
        size_ = text.size();
        return true;
    }
    std::string_view view() const noexcept { return {bytes_.data(), size_}; }
    bool empty() const noexcept { return size_ == 0; }
    void clear() noexcept { size_ = 0; }

protected:
    std::array<char, N> bytes_{};
    std::size_t size_ = 0;
};

/// A secret of at most N bytes in a fixed buffer, wiped when cleared, replaced or destroyed. Not
/// copyable: `take` moves the bytes and wipes the source, so no copy outlives its use.
template <std::size_t N> class secret_text : private fixed_text<N> {
public:
    secret_text() = default;
    secret_text(const secret_text&) = delete;
    secret_text& operator=(const secret_text&) = delete;
    ~secret_text() { clear(); }

    bool assign(std::string_view text) noexcept
    {
        if (text.size() > N) return false;
        clear();
        return fixed_text<N>::assign(text);
    }
    /// Moves `other`'s bytes here and wipes `other`.
    void take(secret_text& other) noexcept
    {
        clear();
        fixed_text<N>::assign(other.view());
        other.clear();
    }
    void clear() noexcept
    {
        wipe_bytes(this->bytes_.data(), N);
        this->size_ = 0;
    }
    using fixed_text<N>::view;
    using fixed_text<N>::empty;
    /// The whole buffer, used or not (tests check that it is zero after clear).
    std::span<const char, N> buffer() const noexcept { return std::span<const char, N>(this->bytes_); }
};

/// What a client has set on its connection, as acknowledged by the server.
class session_state {
public:
    /// The longest value (name, user, password) followed; longer ones leave the state unknown.
    static constexpr std::size_t max_value = request_framer::long_keep;
    using value = fixed_text<max_value>;

    session_state() = default;
    session_state(const session_state&) = delete;
    session_state& operator=(const session_state&) = delete;

    std::uint8_t protocol = 2; ///< 2 or 3 (HELLO)
    std::int64_t db = 0;       ///< SELECT
    value name;                ///< CLIENT SETNAME or HELLO SETNAME; empty: none
    bool authenticated = false;
    bool auth_with_user = false; ///< AUTH user password (or HELLO AUTH), not AUTH password
    value user;                  ///< when auth_with_user
    secret_text<max_value> password;
    value lib_name; ///< CLIENT SETINFO LIB-NAME
    value lib_ver;  ///< CLIENT SETINFO LIB-VER
    bool no_evict = false;
    bool no_touch = false;

    /// What RESET does: RESP2, db 0, no name, not authenticated (the password is wiped). Like
    /// Redis 7.0, it keeps LIB-NAME, LIB-VER, NO-EVICT and NO-TOUCH.
    void reset() noexcept;
};

/// For log lines: every field but the password, which shows only as "auth=yes".
std::string to_string(const session_state& state);

/// The commands a replay may hold; words, not text.
enum class replay_command : std::uint8_t {
    hello,
    auth,
    select,
    client_setname,
    client_setinfo_lib_name,
    client_setinfo_lib_ver,
    client_no_evict,
    client_no_touch,
};

std::string_view to_string(replay_command) noexcept;

/// One command of a replay: where its bytes are in `replay::bytes()`.
struct replay_step {
    replay_command command;
    std::size_t offset;
    std::size_t size;
};

/// The commands (RESP-encoded) that recreate a session state on a fresh backend connection, in
/// the order they must be sent. Holds the password: its buffer is sized once, exactly, and wiped
/// when the replay is destroyed. Move-only.
class replay {
public:
    static constexpr std::size_t max_steps = 8;

    replay() = default;
    replay(replay&& other) noexcept { *this = std::move(other); }
    replay& operator=(replay&& other) noexcept;
    replay(const replay&) = delete;
    replay& operator=(const replay&) = delete;
    ~replay();

    std::span<const replay_step> steps() const noexcept { return {steps_.data(), count_}; }
    /// Every command, in order: what to write to the new backend before the held request.
    std::string_view bytes() const noexcept { return {bytes_.get(), size_}; }
    std::string_view bytes(const replay_step& step) const noexcept
    {
        return bytes().substr(step.offset, step.size);
    }
    bool empty() const noexcept { return count_ == 0; }

private:
    friend replay make_replay(const session_state& state);
    std::unique_ptr<char[]> bytes_;
    std::size_t size_ = 0;
    std::array<replay_step, max_steps> steps_{};
    std::size_t count_ = 0;
};

/// Builds the replay of `state`: HELLO 3 first (with AUTH when authenticated, as HELLO 3 alone
/// is refused on a connection that must authenticate), else AUTH; then SELECT, CLIENT SETNAME,
/// CLIENT SETINFO, CLIENT NO-EVICT, CLIENT NO-TOUCH. Empty for a fresh connection's state.
replay make_replay(const session_state& state);

/// Did the backend accept one replayed command? HELLO wants a map, the others +OK.
bool replay_accepted(const replay_step& step, const reply_view& reply) noexcept;

} // namespace tunneld::proxy
