#include "cutover/hook.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace tunneld::cutover {
namespace {

using clock = std::chrono::steady_clock;

struct fd_guard {
    int fd = -1;
    ~fd_guard()
    {
        if (fd >= 0) ::close(fd);
    }
    void reset()
    {
        if (fd >= 0) ::close(fd);
        fd = -1;
    }
};

std::string elapsed_text(clock::duration elapsed)
{
    return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()) + "ms";
}

void drain(int fd, std::string& output)
{
    char buffer[4096];
    for (;;) {
        const auto n = ::read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        const auto room = max_hook_output - std::min(output.size(), max_hook_output);
        output.append(buffer, std::min<std::size_t>(room, static_cast<std::size_t>(n)));
    }
}

} // namespace

hook_result run_hook(const std::string& command, std::chrono::milliseconds timeout,
                     const std::vector<std::pair<std::string, std::string>>& environment,
                     const std::function<void(int)>& started_hook)
{
    hook_result result;
    // Everything the child needs is built before fork: after fork only async-signal-safe calls.
    std::vector<std::string> env_strings;
    for (char** entry = environ; entry && *entry; ++entry) {
        std::string_view text = *entry;
        bool replaced = false;
        for (const auto& [key, value] : environment)
            replaced = replaced || (text.size() > key.size() && text.substr(0, key.size()) == key &&
                                    text[key.size()] == '=');
        if (!replaced) env_strings.emplace_back(text);
    }
    for (const auto& [key, value] : environment)
        env_strings.push_back(key + "=" + value);
    std::vector<char*> envp;
    for (auto& text : env_strings)
        envp.push_back(text.data());
    envp.push_back(nullptr);
    std::string shell = "/bin/sh", flag = "-c", script = command;
    char* argv[] = {shell.data(), flag.data(), script.data(), nullptr};

    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
        result.message = std::string("cannot create pipe: ") + std::strerror(errno);
        return result;
    }
    fd_guard read_end{pipe_fds[0]}, write_end{pipe_fds[1]};
    fd_guard null_fd{::open("/dev/null", O_RDONLY | O_CLOEXEC)};

    const auto started = clock::now();
    const pid_t pid = ::fork();
    if (pid < 0) {
        result.message = std::string("cannot fork: ") + std::strerror(errno);
        return result;
    }
    if (pid == 0) {
        ::setpgid(0, 0);
        if (null_fd.fd >= 0) ::dup2(null_fd.fd, STDIN_FILENO);
        ::dup2(write_end.fd, STDOUT_FILENO);
        ::dup2(write_end.fd, STDERR_FILENO);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::execve(argv[0], argv, envp.data());
        ::_exit(127);
    }
    // Why both sides call setpgid: whichever runs first, the group exists before we may kill it.
    ::setpgid(pid, pid);
    write_end.reset();
    if (started_hook) started_hook(static_cast<int>(pid));
    ::fcntl(read_end.fd, F_SETFL, ::fcntl(read_end.fd, F_GETFL) | O_NONBLOCK);

    const auto deadline = started + timeout;
    int status = 0;
    bool exited = false;
    while (!exited) {
        const pid_t waited = ::waitpid(pid, &status, WNOHANG);
        if (waited == pid) {
            exited = true;
            break;
        }
        const auto now = clock::now();
        if (now >= deadline) break;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
        pollfd watch{.fd = read_end.fd, .events = POLLIN, .revents = 0};
        // Short polls: the child's exit is noticed by waitpid, not by the pipe (a background
        // grandchild may keep the pipe open).
        ::poll(&watch, 1, static_cast<int>(std::min<long long>(left + 1, 20)));
        if (watch.revents & POLLIN) drain(read_end.fd, result.output);
    }
    if (!exited) {
        ::kill(-pid, SIGKILL);
        ::kill(pid, SIGKILL);
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        drain(read_end.fd, result.output);
        result.timed_out = true;
        result.exit_status = 128 + SIGKILL;
        result.message = "killed after " + elapsed_text(clock::now() - started) + " (timeout)";
        return result;
    }
    drain(read_end.fd, result.output);
    // Leftover background processes of the hook must not outlive it holding resources.
    ::kill(-pid, SIGKILL);
    if (WIFEXITED(status)) {
        result.exit_status = WEXITSTATUS(status);
        result.ok = result.exit_status == 0;
        result.message =
            "exited " + std::to_string(result.exit_status) + " after " + elapsed_text(clock::now() - started);
    } else if (WIFSIGNALED(status)) {
        result.exit_status = 128 + WTERMSIG(status);
        result.message = "killed by signal " + std::to_string(WTERMSIG(status)) + " after " +
                         elapsed_text(clock::now() - started);
    }
    if (result.exit_status == 127 && !result.ok) result.message += " (command not found?)";
    return result;
}

std::string describe(const hook_result& result)
{
    if (result.ok) return result.message;
    std::string_view output = result.output;
    while (!output.empty() && (output.back() == '\n' || output.back() == '\r' || output.back() == ' '))
        output.remove_suffix(1);
    const auto start = output.rfind('\n');
    auto last = output.substr(start == std::string_view::npos ? 0 : start + 1);
    if (last.empty()) return result.message;
    std::string line;
    for (char c : last.substr(0, 200))
        line += (c >= 0x20 && c <= 0x7e) ? c : '?';
    return result.message + ": " + line;
}

} // namespace tunneld::cutover
