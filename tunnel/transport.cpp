#include "tunnel/transport.hpp"

#include "tunnel/channel.hpp"
#include "tunnel/decisions.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <tuple>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

namespace tunneld::tunnel::detail {

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

struct knownhosts_deleter {
    void operator()(LIBSSH2_KNOWNHOSTS* hosts) const noexcept { libssh2_knownhost_free(hosts); }
};
std::int64_t steady_ns(clock::time_point t)
{
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

long long ms(std::chrono::milliseconds d)
{
    return static_cast<long long>(d.count());
}

} // namespace

void session_stats::set_error(std::string text)
{
    std::lock_guard lock(mutex);
    last_error = std::move(text);
}

std::string session_stats::error() const
{
    std::lock_guard lock(mutex);
    return last_error;
}

asio::awaitable<void> wake_signal::wait()
{
    if (!raised_) {
        timer_.expires_at(clock::time_point::max());
        waiting_ = true;
        co_await timer_.async_wait(use_tuple);
        waiting_ = false;
    }
    raised_ = false;
}

std::string libssh2_error_text(LIBSSH2_SESSION* ssh, int rc)
{
    char* message = nullptr;
    int length = 0;
    if (ssh != nullptr && libssh2_session_last_error(ssh, &message, &length, 0) != 0 && message != nullptr)
        return fmt::format("{} (libssh2 error {})",
                           std::string_view(message, static_cast<std::size_t>(length)), rc);
    return fmt::format("libssh2 error {}", rc);
}

transport::transport(asio::any_io_executor ex, std::shared_ptr<const config::tunnel_config> settings,
                     unsigned index, std::shared_ptr<session_stats> stats)
    : executor_(ex), settings_owner_(std::move(settings)), settings_(*settings_owner_), index_(index),
      window_initial_(initial_channel_window(settings_.channel_window)),
      window_max_(static_cast<std::uint32_t>(std::max<std::uint64_t>(settings_.channel_window, window_initial_))),
      stats_(std::move(stats)), socket_(ex), wake_(ex), reader_wake_(ex), writer_wake_(ex)
{
}

transport::~transport()
{
    failed_ = true; // callbacks refuse I/O while libssh2 tears down
    free_agent();
    if (ssh_ != nullptr) libssh2_session_free(ssh_);
}

std::string transport::label() const
{
    return fmt::format("tunnel={} session={}", settings_.name, index_);
}

ssize_t transport::on_send(libssh2_socket_t fd, const void* buffer, size_t length, int flags, void** abstract)
{
    auto* self = static_cast<transport*>(*abstract);
    if (fd != self->ssh_fd_) {
        // libssh2 also talks to ssh-agent through these callbacks, on the agent's own socket.
        const auto n = ::send(fd, buffer, length, flags | MSG_NOSIGNAL);
        return n < 0 ? -errno : n;
    }
    if (self->failed_) return -EPIPE;
    // Always take the whole packet: libssh2 (1.11.1 still) keeps only one half-sent packet per
    // session and may deadlock in a rekey during a partial write.
    const auto* bytes = static_cast<const char*>(buffer);
    self->out_.insert(self->out_.end(), bytes, bytes + length);
    if (self->writer_waiting_ && self->batching_ == 0) self->writer_wake_.raise();
    return static_cast<ssize_t>(length);
}

ssize_t transport::on_recv(libssh2_socket_t fd, void* buffer, size_t length, int flags, void** abstract)
{
    auto* self = static_cast<transport*>(*abstract);
    if (fd != self->ssh_fd_) {
        const auto n = ::recv(fd, buffer, length, flags);
        return n < 0 ? -errno : n;
    }
    const auto unread = self->unread_input();
    if (unread == 0) return self->failed_ ? -ECONNRESET : -EAGAIN;
    const auto n = std::min(length, unread);
    std::memcpy(buffer, self->in_.get() + self->in_begin_, n);
    self->in_begin_ += n; // the reader rewinds an empty buffer before its next read
    if (self->reader_blocked_) self->reader_wake_.raise();
    return static_cast<ssize_t>(n);
}

template <class Step> asio::awaitable<int> transport::retry(Step step)
{
    for (;;) {
        if (failed_) co_return LIBSSH2_ERROR_SOCKET_DISCONNECT;
        const int rc = step();
        if (rc != LIBSSH2_ERROR_EAGAIN) co_return rc;
        co_await wake_.wait();
    }
}

asio::awaitable<boost::system::error_code> transport::establish()
{
    auto self = shared_from_this();
    asio::ip::tcp::resolver resolver(executor_);
    auto [resolve_ec, endpoints] = co_await resolver.async_resolve(
        settings_.address.host, std::to_string(settings_.address.port), use_tuple);
    if (failed_) co_return failure_;
    if (resolve_ec) {
        fail(resolve_ec, fmt::format("cannot resolve {}: {}", settings_.address.host, resolve_ec.message()));
        co_return failure_;
    }
    auto [connect_ec, endpoint] = co_await asio::async_connect(socket_, endpoints, use_tuple);
    if (failed_) co_return failure_;
    if (connect_ec) {
        fail(connect_ec, fmt::format("cannot connect to {}:{}: {}", settings_.address.host,
                                     settings_.address.port, connect_ec.message()));
        co_return failure_;
    }

    boost::system::error_code ignored;
    socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
    socket_.set_option(asio::socket_base::keep_alive(true), ignored);
    // The kernel gives up on unacknowledged data after the same bound as the keepalive.
    auto bound = settings_.keepalive * std::max(1U, settings_.keepalive_max_missed);
    if (bound.count() <= 0) bound = settings_.connect_timeout;
    const unsigned user_timeout = static_cast<unsigned>(bound.count());
    ::setsockopt(socket_.native_handle(), IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);

    ssh_ = libssh2_session_init_ex(nullptr, nullptr, nullptr, this);
    if (ssh_ == nullptr) {
        fail(make_error_code(tunnel_errc::handshake_failed), "libssh2_session_init failed");
        co_return failure_;
    }
#if LIBSSH2_VERSION_NUM >= 0x010b01
    libssh2_session_callback_set2(ssh_, LIBSSH2_CALLBACK_SEND,
                                  reinterpret_cast<libssh2_cb_generic*>(&transport::on_send));
    libssh2_session_callback_set2(ssh_, LIBSSH2_CALLBACK_RECV,
                                  reinterpret_cast<libssh2_cb_generic*>(&transport::on_recv));
#else // the system's libssh2 (-DTUNNELD_BUNDLED_LIBSSH2=OFF) may be older than 1.11.1
    libssh2_session_callback_set(ssh_, LIBSSH2_CALLBACK_SEND, reinterpret_cast<void*>(&transport::on_send));
    libssh2_session_callback_set(ssh_, LIBSSH2_CALLBACK_RECV, reinterpret_cast<void*>(&transport::on_recv));
#endif
    libssh2_session_set_blocking(ssh_, 0);
    // AEAD ciphers first: the patched libssh2 ciphers whole packets, and aes128-gcm (AES-NI) is the
    // cheapest per byte, chacha20-poly1305 the fastest without AES-NI. Then CTR, whose MAC is
    // encrypt-then-MAC when the gateway has it (plain hmac-sha2 only for gateways without).
    // Strict key exchange (kex-strict-c-v00@openssh.com, Terrapin) is always offered by 1.11.1's
    // libssh2_session_method_pref(KEX); rsa-sha2 user-key signatures follow server-sig-algs. ssh-rsa
    // host keys stay last for old gateways: libssh2 picks rsa-sha2 whenever the gateway offers it.
    const char* ciphers =
        "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-ctr,aes256-ctr";
    const char* macs =
        "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha2-256,hmac-sha2-512";
    const std::pair<int, const char*> prefs[] = {
        {LIBSSH2_METHOD_KEX, "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256"},
        {LIBSSH2_METHOD_HOSTKEY, "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,"
                                 "rsa-sha2-512,rsa-sha2-256,ssh-rsa"},
        {LIBSSH2_METHOD_CRYPT_CS, ciphers},
        {LIBSSH2_METHOD_CRYPT_SC, ciphers},
        {LIBSSH2_METHOD_MAC_CS, macs},
        {LIBSSH2_METHOD_MAC_SC, macs},
        {LIBSSH2_METHOD_COMP_CS, "none"},
        {LIBSSH2_METHOD_COMP_SC, "none"},
    };
    for (const auto& [method, wanted] : prefs) {
        const char** names = nullptr;
        const int count = libssh2_session_supported_algs(ssh_, method, &names);
        std::vector<std::string_view> supported;
        for (int i = 0; i < count; ++i)
            supported.emplace_back(names[i]);
        if (count > 0) libssh2_free(ssh_, static_cast<void*>(names));
        const auto list = filter_methods(wanted, supported);
        if (const int rc = list.empty() ? LIBSSH2_ERROR_METHOD_NOT_SUPPORTED
                                        : libssh2_session_method_pref(ssh_, method, list.c_str());
            rc != 0) {
            fail(make_error_code(tunnel_errc::handshake_failed),
                 fmt::format("libssh2 supports none of / refused {}: {}", wanted,
                             libssh2_error_text(ssh_, rc)));
            co_return failure_;
        }
    }
    // libssh2 turns an interval of 1 s into 2 s.
    libssh2_keepalive_seconds_ = std::max(2U, keepalive_seconds(settings_.keepalive));
    libssh2_keepalive_config(ssh_, 1, libssh2_keepalive_seconds_);

    last_receive_ = clock::now();
    asio::co_spawn(executor_, reader(self), asio::detached);
    asio::co_spawn(executor_, writer(self), asio::detached);
    asio::co_spawn(executor_, ticker(self), asio::detached);

    const int fd = socket_.native_handle();
    ssh_fd_ = fd;
    int rc = co_await retry([&] { return libssh2_session_handshake(ssh_, fd); });
    if (failed_) co_return failure_;
    if (rc != 0) {
        fail(make_error_code(tunnel_errc::handshake_failed),
             fmt::format("SSH handshake with {}:{} failed: {}", settings_.address.host,
                         settings_.address.port, libssh2_error_text(ssh_, rc)));
        co_return failure_;
    }
    // Strict host key check strictly before any authentication is attempted.
    if (auto ec = check_host_key()) co_return ec;
    co_return co_await authenticate();
}

boost::system::error_code transport::check_host_key()
{
    std::size_t length = 0;
    int type = LIBSSH2_HOSTKEY_TYPE_UNKNOWN;
    const char* key = libssh2_session_hostkey(ssh_, &length, &type);
    if (key == nullptr) {
        fail(make_error_code(tunnel_errc::host_key_unknown), "the gateway sent no host key");
        return failure_;
    }
    std::string fingerprint = "SHA256:unavailable";
    if (const char* hash = libssh2_hostkey_hash(ssh_, LIBSSH2_HOSTKEY_HASH_SHA256); hash != nullptr)
        fingerprint = sha256_fingerprint(
            std::span<const unsigned char, 32>(reinterpret_cast<const unsigned char*>(hash), 32));

    std::unique_ptr<LIBSSH2_KNOWNHOSTS, knownhosts_deleter> known(libssh2_knownhost_init(ssh_));
    host_key_verdict verdict = host_key_verdict::check_failed;
    std::string detail;
    if (!known) {
        detail = "cannot allocate known_hosts";
    } else if (const int n = libssh2_knownhost_readfile(known.get(), settings_.known_hosts.c_str(),
                                                        LIBSSH2_KNOWNHOST_FILE_OPENSSH);
               n < 0) {
        detail = fmt::format("cannot read known_hosts {}: {}", settings_.known_hosts.string(),
                             libssh2_error_text(ssh_, n));
    } else {
        libssh2_knownhost* found = nullptr;
        const int check = libssh2_knownhost_checkp(
            known.get(), settings_.address.host.c_str(), settings_.address.port, key, length,
            LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | knownhost_key_bits(type), &found);
        verdict = verdict_from_check(check);
    }
    known.reset(); // uses the session's allocator: free it before fail() frees the session
    const auto refusal = refusal_for(verdict);
    if (!refusal) return {};
    const char* what = verdict == host_key_verdict::mismatch  ? "CHANGED host key"
                       : verdict == host_key_verdict::unknown ? "unknown host key"
                                                              : "host key not verifiable";
    auto reason =
        fmt::format("{} for [{}]:{}: {} {} not accepted by {}{}{}; refusing before authentication", what,
                    settings_.address.host, settings_.address.port, host_key_type_name(type), fingerprint,
                    settings_.known_hosts.string(), detail.empty() ? "" : ": ", detail);
    spdlog::error("{} {}", label(), reason);
    fail(make_error_code(*refusal), std::move(reason));
    return failure_;
}

asio::awaitable<boost::system::error_code> transport::authenticate()
{
    const std::string& user = settings_.user;
    if (settings_.uses_agent()) {
        // Owned by the transport: fail() frees it before the session it was allocated from.
        agent_ = libssh2_agent_init(ssh_);
        if (agent_ == nullptr || libssh2_agent_connect(agent_) != 0 ||
            libssh2_agent_list_identities(agent_) != 0) {
            fail(make_error_code(tunnel_errc::authentication_failed),
                 "cannot use ssh-agent (is SSH_AUTH_SOCK set and the agent running?)");
            co_return failure_;
        }
        libssh2_agent_publickey* previous = nullptr;
        libssh2_agent_publickey* identity = nullptr;
        while (libssh2_agent_get_identity(agent_, &identity, previous) == 0) {
            const int rc =
                co_await retry([&] { return libssh2_agent_userauth(agent_, user.c_str(), identity); });
            if (failed_) co_return failure_;
            if (rc == 0) {
                free_agent();
                co_return boost::system::error_code{};
            }
            previous = identity;
        }
        fail(make_error_code(tunnel_errc::authentication_failed),
             fmt::format("the gateway accepted none of ssh-agent's keys for user {}", user));
        co_return failure_;
    }
    const std::string identity = settings_.identity.string();
    const int rc = co_await retry([&] {
        return libssh2_userauth_publickey_fromfile_ex(ssh_, user.c_str(), static_cast<unsigned>(user.size()),
                                                      nullptr, identity.c_str(), nullptr);
    });
    if (failed_) co_return failure_;
    if (rc != 0) {
        fail(make_error_code(tunnel_errc::authentication_failed),
             fmt::format("authentication as {} with {} failed: {}", user, identity,
                         libssh2_error_text(ssh_, rc)));
        co_return failure_;
    }
    co_return boost::system::error_code{};
}

asio::awaitable<void> transport::reader([[maybe_unused]] std::shared_ptr<transport> self)
{
    constexpr std::size_t size = in_capacity + read_chunk;
    while (!failed_) {
        if (unread_input() >= in_capacity) {
            // libssh2 has not taken what we have: stop reading, TCP pushes back on the gateway.
            reader_blocked_ = true;
            co_await reader_wake_.wait();
            reader_blocked_ = false;
            continue;
        }
        if (!in_) in_ = std::make_unique_for_overwrite<char[]>(size);
        // Only here, never while a read is in flight into in_[in_end_..].
        if (in_begin_ == in_end_) {
            in_begin_ = in_end_ = 0;
        } else if (size - in_end_ < read_chunk) {
            // Rarely: libssh2 lags behind by more than a chunk at the buffer's end.
            std::memmove(in_.get(), in_.get() + in_begin_, unread_input());
            in_end_ -= in_begin_;
            in_begin_ = 0;
        }
        // A plain read, not a drained one (tunnel/drained_read.hpp): a gateway's reset must mark
        // it down at once, not up to reset_sweep::interval later, while new clients go to it.
        auto [ec, n] = co_await socket_.async_read_some(asio::buffer(in_.get() + in_end_, read_chunk), use_tuple);
        if (failed_) break;
        if (ec) {
            fail(make_error_code(tunnel_errc::session_lost),
                 ec == asio::error::eof ? std::string("the gateway closed the connection")
                                        : fmt::format("receive failed: {}", ec.message()));
            break;
        }
        in_end_ += n;
        last_receive_ = clock::now();
        stats_->last_receive_ns = steady_ns(last_receive_);
        notify();
    }
}

asio::awaitable<void> transport::writer([[maybe_unused]] std::shared_ptr<transport> self)
{
    std::vector<char> flight;
    while (!failed_) {
        if (out_.empty()) {
            writer_waiting_ = true;
            co_await writer_wake_.wait();
            writer_waiting_ = false;
            continue;
        }
        flight.swap(out_);
        out_.clear();
        // Channels stop writing while out_ is at the high-water mark; out_ then became this flight.
        const bool was_full = flight.size() >= out_high_water;
        // A non-blocking send first: async_write would complete even an immediate send through
        // the event loop's queue, a second trip per flight.
        boost::system::error_code ec;
        std::size_t sent = 0;
        if (const auto n = ::send(ssh_fd_, flight.data(), flight.size(), MSG_DONTWAIT | MSG_NOSIGNAL); n > 0)
            sent = static_cast<std::size_t>(n);
        if (sent < flight.size())
            std::tie(ec, std::ignore) = co_await asio::async_write(
                socket_, asio::buffer(flight.data() + sent, flight.size() - sent), use_tuple);
        flight.clear();
        if (failed_) break;
        if (ec) {
            fail(make_error_code(tunnel_errc::session_lost), fmt::format("send failed: {}", ec.message()));
            break;
        }
        if (was_full) notify(); // below the high-water mark again: blocked channel writes may go on
    }
}

void transport::flush()
{
    if (out_.empty() || failed_) return;
    // A write in flight (the writer is not waiting) takes out_ after it: keep the order.
    if (!writer_waiting_) return;
    const auto n = ::send(ssh_fd_, out_.data(), out_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) out_.erase(out_.begin(), out_.begin() + n);
    // The rest (or an error, which the writer's own send reports) goes to the writer.
    if (!out_.empty()) writer_wake_.raise();
}

asio::awaitable<void> transport::ticker([[maybe_unused]] std::shared_ptr<transport> self)
{
    asio::steady_timer timer(executor_);
    const auto tick = keepalive_tick(settings_.keepalive);
    while (!failed_) {
        timer.expires_after(tick);
        co_await timer.async_wait(use_tuple);
        if (failed_ || !established_) continue; // connect_timeout bounds the setup
        const auto now = clock::now();
        if (keepalive_expired(last_receive_, now, settings_.keepalive, settings_.keepalive_max_missed)) {
            fail(make_error_code(tunnel_errc::session_lost),
                 fmt::format("nothing received for {} ms (keepalive {} ms x {})",
                             ms(std::chrono::duration_cast<std::chrono::milliseconds>(now - last_receive_)),
                             ms(settings_.keepalive), settings_.keepalive_max_missed));
            break;
        }
        if (!opens_.empty() && opens_.front().started_ &&
            now - opens_.front().started > settings_.connect_timeout) {
            // An unanswered open cannot be abandoned (libssh2 keeps its state): the session is sick.
            fail(make_error_code(tunnel_errc::session_lost),
                 fmt::format("channel open unanswered for {} ms", ms(settings_.connect_timeout)));
            break;
        }
        if (settings_.keepalive.count() > 0 && now - last_receive_ >= settings_.keepalive / 2) {
            // Only when quiet: libssh2 (1.10 and 1.11.1) never frees keepalive replies (they stay in
            // its packet list, which every channel read scans), so keep them rare.
            int next = 0;
            if (libssh2_keepalive_send(ssh_, &next) == 0 &&
                next == static_cast<int>(libssh2_keepalive_seconds_))
                ++keepalive_replies_;
        }
        if (keepalive_replies_ >= recycle_after_keepalives && channels_.empty() && opens_.empty() &&
            retired_.empty() && may_recycle_ && may_recycle_()) {
            fail(make_error_code(tunnel_errc::session_lost),
                 fmt::format("recycling a quiet session after {} keepalives (libssh2 keeps their replies)",
                             keepalive_replies_));
            break;
        }
    }
}

asio::awaitable<boost::system::error_code> transport::serve()
{
    established_ = true;
    while (!failed_) {
        const bool more = run_passes();
        if (failed_) break;
        if (more) {
            co_await asio::post(executor_, asio::use_awaitable); // let the writer and handlers run
            continue;
        }
        co_await wake_.wait();
    }
    co_return failure_;
}

bool transport::run_passes()
{
    bool more = false;
    {
        // What the passes send leaves in one send at their end (or with the writer if a write
        // is in flight), not after a trip of the writer through the event loop.
        const output_batch batch(*this);
        for (int pass = 0; pass < 32 && !failed_; ++pass) {
            more = service_once();
            if (!more) break;
        }
    }
    deliver_opens();
    return more && !failed_;
}

void transport::deliver_opens()
{
    // Each handler resumes its opener, which may call back into the transport (a channel
    // operation may run now: no libssh2 call is on the stack): take them out first.
    while (!answered_.empty()) {
        auto answered = std::move(answered_);
        answered_.clear();
        for (auto& [handler, ec, ch] : answered)
            std::move(handler)(ec, std::move(ch));
    }
}

bool transport::service_once()
{
    servicing_ = true;
    struct done_on_exit {
        bool& flag;
        ~done_on_exit() { flag = false; }
    } done{servicing_};
    const auto unread_before = unread_input();
    bool unread = unread_before > 0;
    bool progress = false;
    for (std::size_t i = 0; i < channels_.size();) {
        auto ch = channels_[i].lock();
        if (!ch) {
            channels_[i] = std::move(channels_.back());
            channels_.pop_back();
            continue;
        }
        if (ch->service(unread)) progress = true;
        if (failed_) return false;
        ++i;
    }
    if (service_retired()) progress = true;
    if (failed_) return false;
    if (service_opens()) progress = true;
    if (failed_) return false;
    // Bytes taken off the wire may hold data for channels serviced earlier in this pass.
    if (unread_input() != unread_before) progress = true;
    return progress;
}

bool transport::service_retired()
{
    bool progress = false;
    for (std::size_t i = 0; i < retired_.size();) {
        const int rc = libssh2_channel_free(retired_[i]);
        if (rc == LIBSSH2_ERROR_EAGAIN) {
            ++i;
            continue;
        }
        retired_[i] = retired_.back();
        retired_.pop_back();
        progress = true;
    }
    return progress;
}

bool transport::service_opens()
{
    if (opens_.empty() || !established_) return false;
    auto& request = opens_.front();
    if (!request.started_) {
        request.started_ = true;
        request.started = clock::now();
    }
    // libssh2_channel_direct_tcpip_ex with the channel's own starting window (it has libssh2's
    // default, 2 MiB); the window grows from there as the client drains (channel::try_read).
    static constexpr std::string_view type = "direct-tcpip";
    LIBSSH2_CHANNEL* raw = libssh2_channel_open_ex(
        ssh_, type.data(), static_cast<unsigned>(type.size()), window_initial_, LIBSSH2_CHANNEL_PACKET_DEFAULT,
        request.message.data(), static_cast<unsigned>(request.message.size()));
    if (raw == nullptr) {
        const int rc = libssh2_session_last_errno(ssh_);
        if (rc == LIBSSH2_ERROR_EAGAIN) return false;
        if (rc == LIBSSH2_ERROR_CHANNEL_FAILURE) {
            ++stats_->open_failures;
            spdlog::warn("{} channel to {}:{} refused by the gateway: {}", label(), request.host,
                         request.port, libssh2_error_text(ssh_, rc));
            answered_.emplace_back(std::move(request.handler), make_error_code(tunnel_errc::channel_open_refused),
                                   nullptr);
            opens_.pop_front();
            return true;
        }
        fail(make_error_code(tunnel_errc::session_lost),
             fmt::format("channel open to {}:{} failed: {}", request.host, request.port,
                         libssh2_error_text(ssh_, rc)));
        return false;
    }
    auto ch = std::make_shared<channel>(channel::private_tag{}, shared_from_this(), raw, stats_);
    channels_.push_back(ch);
    answered_.emplace_back(std::move(request.handler), boost::system::error_code{}, std::move(ch));
    opens_.pop_front();
    return true;
}

void transport::complete_open(open_request& request, boost::system::error_code ec,
                              std::shared_ptr<channel> ch)
{
    asio::post(executor_, [handler = std::move(request.handler), ec, ch = std::move(ch)]() mutable {
        std::move(handler)(ec, std::move(ch));
    });
}

void transport::async_open(std::string host, std::uint16_t port, open_handler handler)
{
    // RFC 4254 7.2: host to connect, port, originator address, originator port.
    std::string message;
    auto put_u32 = [&](std::uint32_t v) {
        for (int shift = 24; shift >= 0; shift -= 8)
            message.push_back(static_cast<char>((v >> shift) & 0xff));
    };
    auto put_string = [&](std::string_view text) {
        put_u32(static_cast<std::uint32_t>(text.size()));
        message.append(text);
    };
    put_string(host);
    put_u32(port);
    put_string("127.0.0.1");
    put_u32(0);
    open_request request{std::move(host), port, std::move(message), std::move(handler)};
    if (failed_ || !established_) {
        complete_open(request, make_error_code(tunnel_errc::session_lost), nullptr);
        return;
    }
    opens_.push_back(std::move(request));
    if (!may_call_now()) return notify();
    // Send the open now rather than after a trip through the driver.
    servicing_ = true;
    {
        const output_batch batch(*this);
        service_opens();
    }
    servicing_ = false;
    deliver_opens();
    // The driver takes the reply when it arrives (the reader wakes it); it must start the next
    // open itself only when this call finished the one in front.
    if (!failed_ && !opens_.empty() && !opens_.front().started_) notify();
}

void transport::free_agent()
{
    if (agent_ == nullptr) return;
    libssh2_agent_disconnect(agent_);
    libssh2_agent_free(agent_);
    agent_ = nullptr;
}

void transport::retire(LIBSSH2_CHANNEL* raw)
{
    // After a failure libssh2_session_free already freed every channel of the session.
    if (failed_ || ssh_ == nullptr) return;
    retired_.push_back(raw);
    notify();
}

void transport::fail(boost::system::error_code ec, std::string reason)
{
    if (failed_) return;
    failed_ = true;
    failure_ = ec;
    failure_reason_ = std::move(reason);
    for (auto& weak : channels_)
        if (auto ch = weak.lock()) ch->session_lost();
    channels_.clear();
    retired_.clear();
    for (auto& request : opens_)
        complete_open(request, make_error_code(tunnel_errc::session_lost), nullptr);
    opens_.clear();
    // Answered but not handed over yet (fail() may run inside a pass): their channels are lost.
    for (auto& [handler, ec, ch] : answered_)
        asio::post(executor_, [h = std::move(handler)]() mutable {
            std::move(h)(make_error_code(tunnel_errc::session_lost), nullptr);
        });
    answered_.clear();
    free_agent();
    // Free the session before closing the socket: libssh2 may touch the descriptor.
    if (ssh_ != nullptr) {
        libssh2_session_free(ssh_);
        ssh_ = nullptr;
    }
    boost::system::error_code ignored;
    socket_.shutdown(asio::socket_base::shutdown_both, ignored);
    socket_.close(ignored);
    in_begin_ = in_end_ = 0;
    out_.clear();
    wake_.raise();
    reader_wake_.raise();
    writer_wake_.raise();
}

} // namespace tunneld::tunnel::detail
