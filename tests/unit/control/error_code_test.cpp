// Goal: the control protocol's error codes are a std::error_code enum: comparable, named by the
// wire's words, and never zero (zero means no error).

#include "control/protocol.hpp"

#include <gtest/gtest.h>

namespace tunneld::control {
namespace {

TEST(ControlErrorCode, IsAnErrorCodeNamedByTheWire)
{
    for (auto code : {error_code::bad_request, error_code::unknown_service, error_code::refused, error_code::failed,
                      error_code::busy, error_code::forbidden}) {
        const std::error_code ec = code;
        EXPECT_TRUE(ec) << to_string(code);
        EXPECT_EQ(ec, code);
        EXPECT_EQ(ec.message(), to_string(code));
        EXPECT_STREQ(ec.category().name(), "tunneld.control");
        EXPECT_EQ(parse_error_code(ec.message()), code);
    }
    EXPECT_NE(std::error_code(error_code::busy), error_code::refused);
}

} // namespace
} // namespace tunneld::control
