// libFuzzer target for the control protocol: framing, request parsing, reply parsing.
// Checks more than "does not crash": a parsed request survives encode + parse unchanged, the
// lines a line_reader returns do not depend on where the input was cut, and every error line
// built from a message is valid JSON on one line.

#include "control/protocol.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace tunneld::control;

void check(bool condition)
{
    if (!condition) std::abort();
}

void check_error_line(const protocol_error& error)
{
    const auto line = error_line(error);
    check(line.find('\n') == line.size() - 1);
    check(nlohmann::json::accept(line));
}

std::vector<std::string> lines_of(std::string_view input, std::size_t cut, bool& overflowed)
{
    line_reader reader(256);
    std::vector<std::string> lines;
    reader.feed(input.substr(0, cut));
    while (auto line = reader.next_line())
        lines.push_back(*line);
    reader.feed(input.substr(cut));
    while (auto line = reader.next_line())
        lines.push_back(*line);
    overflowed = reader.overflowed();
    return lines;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size)
{
    const std::string_view input(reinterpret_cast<const char*>(bytes), size);

    const auto parsed = parse_request(input);
    if (const auto* r = std::get_if<request>(&parsed)) {
        const auto line = encode(*r);
        check(line.find('\n') == line.size() - 1);
        const auto again = parse_request(std::string_view(line).substr(0, line.size() - 1));
        check(std::holds_alternative<request>(again) && std::get<request>(again) == *r);
    } else {
        check_error_line(std::get<protocol_error>(parsed));
    }

    const auto reply = parse_reply(input);
    if (const auto* error = std::get_if<protocol_error>(&reply)) check_error_line(*error);
    if (const auto* p = std::get_if<progress>(&reply))
        check(nlohmann::json::accept(progress_line(p->message)));

    bool whole_overflowed = false, cut_overflowed = false;
    const auto whole = lines_of(input, size, whole_overflowed);
    const auto cut = lines_of(input, size == 0 ? 0 : bytes[0] % (size + 1), cut_overflowed);
    check(whole == cut && whole_overflowed == cut_overflowed);
    for (const auto& line : whole) {
        check(line.size() <= 256 && line.find('\n') == std::string::npos);
        (void)parse_request(line);
    }
    return 0;
}
