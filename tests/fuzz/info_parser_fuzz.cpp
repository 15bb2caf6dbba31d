// libFuzzer target for the INFO parser and the redis lag derived from it. Checks more than "does
// not crash": the fields do not depend on where the input was cut, every kept value is printable,
// a typed offset is exactly its field's text, and lag is never known without both offsets.
// Build: clang++ -std=c++20 -g -fsanitize=fuzzer,address -I. tests/fuzz/info_parser_fuzz.cpp
//        cutover/resp.cpp cutover/lag.cpp -o info_parser_fuzz

#include "cutover/lag.hpp"
#include "cutover/resp.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace {

using namespace tunneld::cutover;

void check(bool condition)
{
    if (!condition) std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size)
{
    const std::string_view text(reinterpret_cast<const char*>(bytes), size);
    const auto whole = parse_info(text);
    for (const auto& [key, value] : whole) {
        check(!key.empty());
        for (char c : value)
            check(c >= 0x20 && c <= 0x7e);
    }
    const std::size_t cut = size == 0 ? 0 : bytes[0] % (size + 1);
    info_parser parser;
    parser.feed(text.substr(0, cut));
    parser.feed(text.substr(cut));
    check(parser.finish() == whole);

    const auto info = parse_replication(whole);
    if (info.master_repl_offset)
        check(std::to_string(*info.master_repl_offset) == whole.at("master_repl_offset"));
    if (info.slave_repl_offset)
        check(std::to_string(*info.slave_repl_offset) == whole.at("slave_repl_offset"));

    // The same text as both answers: a lag is known only with both offsets and a link that is up.
    const auto reading = redis_lag(text, text, {});
    if (reading.bytes)
        check(info.master_repl_offset && info.slave_repl_offset && reading.link == link_state::up);
    return 0;
}
