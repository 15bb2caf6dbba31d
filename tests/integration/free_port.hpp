#pragma once
// One free TCP port on 127.0.0.1 for the gtest integration tests that start their own servers.

#include <arpa/inet.h>
#include <cstdint>
#include <netinet/in.h>
#include <stdexcept>
#include <sys/socket.h>
#include <unistd.h>

namespace tunneld::test_bed {

/// A port the kernel just handed out on 127.0.0.1 and that nothing listens on now. Another
/// process may take it before the caller binds it; the servers the tests start fail loudly then.
inline std::uint16_t free_port()
{
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("free_port: socket() failed");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
                    ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
    ::close(fd);
    if (!ok) throw std::runtime_error("free_port: no port on 127.0.0.1");
    return ntohs(address.sin_port);
}

} // namespace tunneld::test_bed
