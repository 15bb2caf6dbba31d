#include "proxy/redis_state.hpp"

#include <charconv>
#include <fmt/format.h>
#include <initializer_list>
#include <string.h> // explicit_bzero
#include <utility>

namespace tunneld::proxy {

void wipe_bytes(void* bytes, std::size_t size) noexcept
{
    explicit_bzero(bytes, size);
}

void session_state::reset() noexcept
{
    protocol = 2;
    db = 0;
    name.clear();
    authenticated = false;
    auth_with_user = false;
    user.clear();
    password.clear();
}

std::string to_string(const session_state& state)
{
    return fmt::format("protocol={} db={} name=\"{}\" auth={}{}{} lib-name=\"{}\" lib-ver=\"{}\" no-evict={} "
                       "no-touch={}",
                       state.protocol, state.db, state.name.view(), state.authenticated ? "yes" : "no",
                       state.auth_with_user ? " user=" : "", state.auth_with_user ? state.user.view() : "",
                       state.lib_name.view(), state.lib_ver.view(), state.no_evict ? "on" : "off",
                       state.no_touch ? "on" : "off");
}

std::string_view to_string(replay_command c) noexcept
{
    switch (c) {
    case replay_command::hello:
        return "HELLO";
    case replay_command::auth:
        return "AUTH";
    case replay_command::select:
        return "SELECT";
    case replay_command::client_setname:
        return "CLIENT SETNAME";
    case replay_command::client_setinfo_lib_name:
        return "CLIENT SETINFO LIB-NAME";
    case replay_command::client_setinfo_lib_ver:
        return "CLIENT SETINFO LIB-VER";
    case replay_command::client_no_evict:
        return "CLIENT NO-EVICT";
    case replay_command::client_no_touch:
        return "CLIENT NO-TOUCH";
    }
    return "unknown";
}

replay& replay::operator=(replay&& other) noexcept
{
    if (this != &other) {
        if (bytes_) wipe_bytes(bytes_.get(), size_);
        bytes_ = std::move(other.bytes_);
        size_ = std::exchange(other.size_, 0);
        steps_ = other.steps_;
        count_ = std::exchange(other.count_, 0);
    }
    return *this;
}

replay::~replay()
{
    if (bytes_) wipe_bytes(bytes_.get(), size_);
}

namespace {

/// One command to encode: its arguments, up to seven.
struct command_words {
    replay_command command;
    std::array<std::string_view, 7> words;
    std::size_t count;
};

std::size_t decimal_size(std::size_t n) noexcept
{
    std::size_t digits = 1;
    while (n >= 10) {
        n /= 10;
        ++digits;
    }
    return digits;
}

std::size_t encoded_size(const command_words& c) noexcept
{
    std::size_t size = 1 + decimal_size(c.count) + 2;
    for (std::size_t i = 0; i < c.count; ++i)
        size += 1 + decimal_size(c.words[i].size()) + 2 + c.words[i].size() + 2;
    return size;
}

/// Writes `c` at `out` (which has room for encoded_size(c)) and returns the end.
char* encode(const command_words& c, char* out) noexcept
{
    auto number = [&](char type, std::size_t n) {
        *out++ = type;
        out = std::to_chars(out, out + 20, n).ptr;
        *out++ = '\r';
        *out++ = '\n';
    };
    number('*', c.count);
    for (std::size_t i = 0; i < c.count; ++i) {
        number('$', c.words[i].size());
        if (!c.words[i].empty()) std::memcpy(out, c.words[i].data(), c.words[i].size());
        out += c.words[i].size();
        *out++ = '\r';
        *out++ = '\n';
    }
    return out;
}

} // namespace

replay make_replay(const session_state& state)
{
    std::array<command_words, replay::max_steps> commands{};
    std::size_t count = 0;
    const std::string_view user = state.auth_with_user ? state.user.view() : std::string_view("default");
    if (state.protocol == 3) {
        commands[count++] =
            state.authenticated
                ? command_words{replay_command::hello, {"HELLO", "3", "AUTH", user, state.password.view()}, 5}
                : command_words{replay_command::hello, {"HELLO", "3"}, 2};
    } else if (state.authenticated) {
        commands[count++] =
            state.auth_with_user
                ? command_words{replay_command::auth, {"AUTH", user, state.password.view()}, 3}
                : command_words{replay_command::auth, {"AUTH", state.password.view()}, 2};
    }
    std::array<char, 24> db_text{};
    if (state.db != 0) {
        const auto end = std::to_chars(db_text.data(), db_text.data() + db_text.size(), state.db).ptr;
        commands[count++] = {
            replay_command::select, {"SELECT", std::string_view(db_text.data(), end - db_text.data())}, 2};
    }
    if (!state.name.empty())
        commands[count++] = {replay_command::client_setname, {"CLIENT", "SETNAME", state.name.view()}, 3};
    if (!state.lib_name.empty())
        commands[count++] = {replay_command::client_setinfo_lib_name,
                             {"CLIENT", "SETINFO", "LIB-NAME", state.lib_name.view()},
                             4};
    if (!state.lib_ver.empty())
        commands[count++] = {replay_command::client_setinfo_lib_ver,
                             {"CLIENT", "SETINFO", "LIB-VER", state.lib_ver.view()},
                             4};
    if (state.no_evict)
        commands[count++] = {replay_command::client_no_evict, {"CLIENT", "NO-EVICT", "ON"}, 3};
    if (state.no_touch)
        commands[count++] = {replay_command::client_no_touch, {"CLIENT", "NO-TOUCH", "ON"}, 3};

    replay out;
    std::size_t size = 0;
    for (std::size_t i = 0; i < count; ++i)
        size += encoded_size(commands[i]);
    if (count == 0) return out;
    // Why one exact allocation: the bytes hold the password, and a growing buffer would leave
    // copies of it behind in the memory it frees.
    out.bytes_ = std::make_unique_for_overwrite<char[]>(size);
    out.size_ = size;
    char* cursor = out.bytes_.get();
    for (std::size_t i = 0; i < count; ++i) {
        char* const start = cursor;
        cursor = encode(commands[i], cursor);
        out.steps_[i] = replay_step{commands[i].command, static_cast<std::size_t>(start - out.bytes_.get()),
                                    static_cast<std::size_t>(cursor - start)};
    }
    out.count_ = count;
    return out;
}

bool replay_accepted(const replay_step& step, const reply_view& reply) noexcept
{
    if (step.command == replay_command::hello) return reply.type == resp_type::map;
    return reply.is_simple("OK");
}

} // namespace tunneld::proxy
