#pragma once
// Throwaway redis-servers and a plain hiredis client for the gtest integration tests that start
// redis themselves (tests/integration/*_test.cpp).

#include "config/config.hpp"
#include "free_port.hpp"

#include <arpa/inet.h>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <functional>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <initializer_list>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace tunneld::test_bed {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

/// A plain hiredis client for the test's own reads and writes.
class client {
public:
    client(std::uint16_t port, const std::string& password = {})
    {
        context_ = redisConnectWithTimeout("127.0.0.1", port, timeval{2, 0});
        if (context_ && !context_->err) {
            redisSetTimeout(context_, timeval{5, 0});
            if (!password.empty()) command({"AUTH", password});
        }
    }
    ~client()
    {
        if (context_) redisFree(context_);
    }
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    bool connected() const { return context_ && !context_->err; }

    /// "ERR..." style text for an error reply, the string/status otherwise, "" for nil.
    std::string command(std::initializer_list<std::string> arguments)
    {
        if (!connected()) return "!disconnected";
        append(arguments);
        return reply();
    }

    /// Pipelining: queues a command without waiting for its reply.
    void append(std::initializer_list<std::string> arguments)
    {
        std::vector<const char*> argv;
        std::vector<std::size_t> lengths;
        for (const auto& argument : arguments) {
            argv.push_back(argument.data());
            lengths.push_back(argument.size());
        }
        redisAppendCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lengths.data());
    }
    /// Sends what append() queued, without waiting for any reply.
    void flush()
    {
        int done = 0;
        while (connected() && !done && redisBufferWrite(context_, &done) == REDIS_OK) {
        }
    }
    /// CONFIG GET `parameter`: its value ("!..." when there is none or on an error).
    std::string config_value(const std::string& parameter)
    {
        if (!connected()) return "!disconnected";
        auto* reply = static_cast<redisReply*>(redisCommand(context_, "CONFIG GET %s", parameter.c_str()));
        if (!reply) return "!io " + std::string(context_->errstr);
        std::string text = "!no such parameter";
        if (reply->type == REDIS_REPLY_ERROR)
            text = "!" + std::string(reply->str, reply->len);
        else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 && reply->element[1]->type == REDIS_REPLY_STRING)
            text.assign(reply->element[1]->str, reply->element[1]->len);
        freeReplyObject(reply);
        return text;
    }

    /// The next reply, as command() gives it ("" for nil or an array).
    std::string reply()
    {
        if (!connected()) return "!disconnected";
        void* raw = nullptr;
        if (redisGetReply(context_, &raw) != REDIS_OK || !raw) return "!io " + std::string(context_->errstr);
        auto* reply = static_cast<redisReply*>(raw);
        std::string text;
        if (reply->type == REDIS_REPLY_ERROR)
            text = "!" + std::string(reply->str, reply->len);
        else if (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS)
            text.assign(reply->str, reply->len);
        else if (reply->type == REDIS_REPLY_INTEGER)
            text = std::to_string(reply->integer);
        else if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 && (reply->element[0]->type == REDIS_REPLY_STRING || reply->element[0]->type == REDIS_REPLY_STATUS))
            text.assign(reply->element[0]->str, reply->element[0]->len);
        freeReplyObject(reply);
        return text;
    }

private:
    redisContext* context_ = nullptr;
};

/// One throwaway redis-server.
class redis_server {
public:
    explicit redis_server(const std::filesystem::path& directory, std::vector<std::string> extra = {})
        : port_(free_port())
    {
        std::filesystem::create_directories(directory);
        std::vector<std::string> arguments = {
            "redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", directory.string(), "--logfile",
            (directory / "redis.log").string(),
            // Why: the default 5s wait before a full sync would dominate every test.
            "--repl-diskless-sync-delay", "0"};
        arguments.insert(arguments.end(), extra.begin(), extra.end());
        std::vector<char*> argv;
        for (auto& argument : arguments)
            argv.push_back(argument.data());
        argv.push_back(nullptr);
        pid_ = ::fork();
        if (pid_ == 0) {
            ::execvp("redis-server", argv.data());
            ::_exit(127);
        }
        password_ = password_of(extra);
        for (int attempt = 0; attempt < 200; ++attempt) {
            client probe(port_, password_);
            if (probe.connected() && probe.command({"PING"}) == "PONG") return;
            std::this_thread::sleep_for(20ms);
        }
        ADD_FAILURE() << "redis-server on port " << port_ << " did not start";
    }
    ~redis_server()
    {
        if (pid_ > 0) {
            ::kill(pid_, SIGCONT);
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }

    std::uint16_t port() const { return port_; }
    pid_t pid() const { return pid_; }
    config::endpoint endpoint() const { return {"127.0.0.1", port_}; }
    client connect() const { return client(port_, password_); }

private:
    static std::string password_of(const std::vector<std::string>& extra)
    {
        for (std::size_t i = 0; i + 1 < extra.size(); ++i)
            if (extra[i] == "--requirepass") return extra[i + 1];
        return {};
    }

    std::uint16_t port_;
    pid_t pid_ = -1;
    std::string password_;
};

inline bool eventually(const std::function<bool()>& condition, clock::duration limit = 10s)
{
    const auto until = clock::now() + limit;
    while (clock::now() < until) {
        if (condition()) return true;
        std::this_thread::sleep_for(20ms);
    }
    return condition();
}

} // namespace tunneld::test_bed
