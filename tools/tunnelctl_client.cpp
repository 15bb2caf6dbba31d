#include "tools/tunnelctl_client.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/write.hpp>

namespace tunneld::tools {

namespace asio = boost::asio;

bool control_client::run_for(duration timeout)
{
    io_.restart();
    io_.run_for(timeout);
    if (io_.stopped()) return true;
    boost::system::error_code ignored;
    socket_.close(ignored);
    io_.run();
    return false;
}

boost::system::error_code control_client::connect(const std::string& path, duration timeout)
{
    boost::system::error_code result = asio::error::would_block;
    socket_.async_connect(asio::local::stream_protocol::endpoint(path),
                          [&](const boost::system::error_code& ec) { result = ec; });
    if (!run_for(timeout)) return asio::error::timed_out;
    return result;
}

boost::system::error_code control_client::write(std::string_view bytes, duration timeout)
{
    boost::system::error_code result = asio::error::would_block;
    asio::async_write(socket_, asio::buffer(bytes.data(), bytes.size()),
                      [&](const boost::system::error_code& ec, std::size_t) { result = ec; });
    if (!run_for(timeout)) return asio::error::timed_out;
    return result;
}

std::variant<std::string, boost::system::error_code> control_client::read_line(duration idle)
{
    for (;;) {
        if (auto line = reader_.next_line()) return std::move(*line);
        if (reader_.overflowed()) return asio::error::message_size;
        boost::system::error_code result = asio::error::would_block;
        std::size_t received = 0;
        socket_.async_read_some(asio::buffer(buffer_),
                                [&](const boost::system::error_code& ec, std::size_t n) {
                                    result = ec;
                                    received = n;
                                });
        if (!run_for(idle)) return asio::error::timed_out;
        reader_.feed(std::string_view(buffer_.data(), received));
        if (result && received == 0) return result;
    }
}

} // namespace tunneld::tools
