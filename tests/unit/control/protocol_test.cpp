#include "control/protocol.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <string>
#include <vector>

namespace tunneld::control {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::vector<std::string> drain(line_reader& reader)
{
    std::vector<std::string> lines;
    while (auto line = reader.next_line())
        lines.push_back(*line);
    return lines;
}

request parsed(std::string_view line)
{
    auto result = parse_request(line);
    if (auto* error = std::get_if<protocol_error>(&result)) {
        ADD_FAILURE() << "parse_request(" << line << ") failed: " << error->message;
        return {};
    }
    return std::get<request>(result);
}

std::string error_of(std::string_view line)
{
    auto result = parse_request(line);
    if (const auto* error = std::get_if<protocol_error>(&result)) {
        EXPECT_EQ(error->code, error_code::bad_request);
        return error->message;
    }
    ADD_FAILURE() << "parse_request(" << line << ") unexpectedly succeeded";
    return {};
}

// --- line_reader ---------------------------------------------------------------------------

TEST(LineReader, SplitsLinesAndStripsCarriageReturns)
{
    line_reader reader;
    reader.feed("a\nbb\r\n\n\r\n  \t\nccc\n");
    EXPECT_EQ(drain(reader), (std::vector<std::string>{"a", "bb", "ccc"}));
    EXPECT_FALSE(reader.overflowed());
    EXPECT_EQ(reader.buffered(), 0u);
}

TEST(LineReader, HoldsAPartialLineUntilItsNewline)
{
    line_reader reader;
    reader.feed("{\"cmd\":");
    EXPECT_EQ(reader.next_line(), std::nullopt);
    reader.feed("\"status\"}\r");
    EXPECT_EQ(reader.next_line(), std::nullopt);
    reader.feed("\n");
    EXPECT_EQ(reader.next_line(), "{\"cmd\":\"status\"}");
    EXPECT_EQ(reader.next_line(), std::nullopt);
}

TEST(LineReader, ValidStreamGivesTheSameRequestsWhereverItIsCut)
{
    const std::string stream =
        "{\"cmd\":\"status\"}\n"
        "\r\n"
        "{\"cmd\":\"switch\",\"service\":\"redis\",\"mode\":\"pause\",\"force\":true}\r\n"
        "\n"
        "{\"cmd\":\"split\",\"service\":\"app\",\"percent\":30,\"sticky\":true}\n"
        "{\"cmd\":\"pause\",\"service\":\"redis\",\"timeout\":\"250ms\"}\n"
        "{\"cmd\":\"reload\"}\n";
    line_reader whole;
    whole.feed(stream);
    std::vector<request> expected;
    for (const auto& line : drain(whole))
        expected.push_back(parsed(line));
    ASSERT_EQ(expected.size(), 5u);

    for (std::size_t first = 0; first <= stream.size(); ++first) {
        for (std::size_t second = first; second <= stream.size(); second += 7) {
            line_reader reader;
            std::vector<request> got;
            for (const auto piece : {std::string_view(stream).substr(0, first),
                                     std::string_view(stream).substr(first, second - first),
                                     std::string_view(stream).substr(second)}) {
                reader.feed(piece);
                for (const auto& line : drain(reader))
                    got.push_back(parsed(line));
            }
            ASSERT_EQ(got, expected) << "cut at " << first << " and " << second;
            EXPECT_FALSE(reader.overflowed());
        }
    }

    // And byte by byte.
    line_reader reader;
    std::vector<request> got;
    for (const char c : stream) {
        reader.feed(std::string_view(&c, 1));
        for (const auto& line : drain(reader))
            got.push_back(parsed(line));
    }
    EXPECT_EQ(got, expected);
}

TEST(LineReader, AcceptsALineOfExactlyTheLimit)
{
    line_reader reader(8);
    reader.feed("12345678\r\n12345678\n");
    EXPECT_EQ(drain(reader), (std::vector<std::string>{"12345678", "12345678"}));
    EXPECT_FALSE(reader.overflowed());
}

TEST(LineReader, OversizedLineOverflowsAfterTheLinesBeforeIt)
{
    line_reader reader(8);
    reader.feed("ok\n123456789\nlater\n");
    EXPECT_EQ(reader.next_line(), "ok");
    EXPECT_EQ(reader.next_line(), std::nullopt);
    EXPECT_TRUE(reader.overflowed());
    reader.feed("more\n");
    EXPECT_EQ(reader.next_line(), std::nullopt);
    EXPECT_EQ(reader.buffered(), 0u);
}

TEST(LineReader, UnterminatedOversizedLineOverflowsWithoutWaitingForItsEnd)
{
    line_reader reader(8);
    reader.feed("12345678\r");
    EXPECT_EQ(reader.next_line(), std::nullopt);
    EXPECT_FALSE(reader.overflowed()); // the '\r' may still be followed by '\n'
    reader.feed("x");
    EXPECT_EQ(reader.next_line(), std::nullopt);
    EXPECT_TRUE(reader.overflowed());
}

TEST(LineReader, OverflowDoesNotDependOnChunking)
{
    const std::string stream = "a\n" + std::string(20, 'x') + "\nb\n";
    for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
        line_reader reader(8);
        std::vector<std::string> lines;
        reader.feed(std::string_view(stream).substr(0, cut));
        for (auto& line : drain(reader))
            lines.push_back(line);
        reader.feed(std::string_view(stream).substr(cut));
        for (auto& line : drain(reader))
            lines.push_back(line);
        EXPECT_EQ(lines, std::vector<std::string>{"a"}) << "cut at " << cut;
        EXPECT_TRUE(reader.overflowed());
    }
}

TEST(LineReader, DefaultLimitIs64KiB)
{
    EXPECT_EQ(line_too_long_error(),
              (protocol_error{error_code::bad_request, "request longer than 65536 bytes"}));
    line_reader reader;
    const std::string fits(max_line_length, 'a');
    reader.feed(fits + "\n");
    EXPECT_EQ(reader.next_line(), fits);
    reader.feed(fits + "a\n");
    EXPECT_EQ(reader.next_line(), std::nullopt);
    EXPECT_TRUE(reader.overflowed());
}

TEST(LineReader, BufferDoesNotGrowWithReturnedLines)
{
    line_reader reader;
    for (int i = 0; i < 10000; ++i) {
        reader.feed("{\"cmd\":\"status\"}\n{\"cmd\"");
        ASSERT_TRUE(reader.next_line());
        reader.feed(":\"reload\"}\n");
        ASSERT_TRUE(reader.next_line());
    }
    EXPECT_EQ(reader.buffered(), 0u);
}

// --- parse_request: valid requests -----------------------------------------------------------

TEST(ParseRequest, StatusWithAndWithoutService)
{
    EXPECT_EQ(parsed(R"({"cmd":"status"})"), request{.cmd = command::status});
    EXPECT_EQ(parsed(R"({"cmd":"status","service":"redis"})"),
              (request{.cmd = command::status, .service = "redis"}));
    EXPECT_EQ(parsed(R"({"cmd":"status","service":null})"), request{.cmd = command::status});
}

TEST(ParseRequest, SwitchDefaultsToNewWithTheServiceMode)
{
    const auto r = parsed(R"({"cmd":"switch","service":"redis"})");
    EXPECT_EQ(r.cmd, command::switch_side);
    EXPECT_EQ(r.to, side_choice::new_side);
    EXPECT_EQ(r.mode, std::nullopt);
    EXPECT_FALSE(r.force);
}

TEST(ParseRequest, SwitchWithEveryField)
{
    const auto r = parsed(R"( {"force":true,"mode":"kill","to":"old","service":"app","cmd":"switch"} )");
    EXPECT_EQ(r, (request{.cmd = command::switch_side,
                          .service = "app",
                          .to = side_choice::old_side,
                          .mode = config::switch_mode::kill,
                          .force = true}));
    EXPECT_EQ(parsed(R"({"cmd":"switch","service":"a","mode":"drain"})").mode, config::switch_mode::drain);
    EXPECT_EQ(parsed(R"({"cmd":"switch","service":"a","mode":"pause"})").mode, config::switch_mode::pause);
}

TEST(ParseRequest, SplitBounds)
{
    EXPECT_EQ(parsed(R"({"cmd":"split","service":"app","percent":0})").percent, 0u);
    EXPECT_EQ(parsed(R"({"cmd":"split","service":"app","percent":100,"sticky":true})"),
              (request{.cmd = command::split, .service = "app", .percent = 100, .sticky = true}));
}

TEST(ParseRequest, PauseTimeout)
{
    EXPECT_EQ(parsed(R"({"cmd":"pause","service":"redis"})").timeout, std::nullopt);
    EXPECT_EQ(parsed(R"({"cmd":"pause","service":"redis","timeout":"250ms"})").timeout,
              config::duration(250ms));
    EXPECT_EQ(parsed(R"({"cmd":"pause","service":"redis","timeout":"2m"})").timeout, config::duration(2min));
}

TEST(ParseRequest, EveryCommand)
{
    EXPECT_EQ(parsed(R"({"cmd":"tunnels"})").cmd, command::tunnels);
    EXPECT_EQ(parsed(R"({"cmd":"rollback","service":"r"})").cmd, command::rollback);
    EXPECT_EQ(parsed(R"({"cmd":"resume","service":"r"})").cmd, command::resume);
    EXPECT_EQ(parsed(R"({"cmd":"reload"})").cmd, command::reload);
}

TEST(ParseRequest, CheckTakesTheSwitchFieldsAndHistoryAnOptionalService)
{
    EXPECT_EQ(parsed(R"({"cmd":"check","service":"redis","to":"old","mode":"kill","force":true})"),
              (request{.cmd = command::check,
                       .service = "redis",
                       .to = side_choice::old_side,
                       .mode = config::switch_mode::kill,
                       .force = true}));
    EXPECT_EQ(error_of(R"({"cmd":"check"})"), "cmd \"check\" needs \"service\"");
    EXPECT_EQ(parsed(R"({"cmd":"history"})"), (request{.cmd = command::history}));
    EXPECT_EQ(parsed(R"({"cmd":"history","service":"redis"})").service, "redis");
    EXPECT_THAT(error_of(R"({"cmd":"history","to":"new"})"), StartsWith("unknown field \"to\" for cmd \"history\""));
    EXPECT_EQ(parsed(R"({"cmd":"fleet"})"), (request{.cmd = command::fleet}));
    EXPECT_EQ(parsed(R"({"cmd":"fleet","service":"redis"})").service, "redis");
    EXPECT_THAT(error_of(R"({"cmd":"fleet","force":true})"), StartsWith("unknown field \"force\" for cmd \"fleet\""));
    const request check{.cmd = command::check, .service = "r", .mode = config::switch_mode::pause};
    EXPECT_EQ(parsed(encode(check)), check);
}

TEST(ParseRequest, UnicodeServiceNamesPassThrough)
{
    EXPECT_EQ(parsed("{\"cmd\":\"resume\",\"service\":\"r\\u00e9dis\"}").service, "r\xc3\xa9"
                                                                                  "dis");
}

// --- parse_request: every validation message ---------------------------------------------------

TEST(ParseRequest, GarbageIsNotJson)
{
    EXPECT_THAT(error_of("status"), StartsWith("request is not valid JSON"));
    EXPECT_THAT(error_of("{\"cmd\":\"status\""), StartsWith("request is not valid JSON"));
    EXPECT_THAT(error_of("{\"cmd\":\"status\"} {}"), StartsWith("request is not valid JSON"));
    EXPECT_THAT(error_of(""), StartsWith("request is not valid JSON"));
    EXPECT_THAT(error_of(std::string("{\"cmd\":\"st\0tus\"}", 16)), StartsWith("request is not valid JSON"));
    EXPECT_THAT(error_of("\xff\xfe{}"), StartsWith("request is not valid JSON"));
}

TEST(ParseRequest, InvalidUtf8IsRefusedAndNotEchoed)
{
    const auto message = error_of("{\"cmd\":\"status\",\"service\":\"\xc3\x28\"}");
    EXPECT_THAT(message, StartsWith("request is not valid JSON"));
    EXPECT_EQ(message.find('\xc3'), std::string::npos);
    // The error line is still valid JSON.
    EXPECT_TRUE(nlohmann::json::accept(error_line({error_code::bad_request, message})));
}

TEST(ParseRequest, NonObjects)
{
    EXPECT_EQ(error_of("[]"), "request must be a JSON object, not an array");
    EXPECT_EQ(error_of("\"status\""), "request must be a JSON object, not a string");
    EXPECT_EQ(error_of("42"), "request must be a JSON object, not a number");
    EXPECT_EQ(error_of("null"), "request must be a JSON object, not null");
    EXPECT_EQ(error_of("true"), "request must be a JSON object, not a boolean");
}

TEST(ParseRequest, NestedJunk)
{
    EXPECT_EQ(error_of(std::string(100000, '[')), "request longer than 65536 bytes");
    EXPECT_EQ(error_of(std::string(1000, '[') + std::string(1000, ']')), "request nested too deeply");
    EXPECT_EQ(error_of(R"({"cmd":{"cmd":"status"}})"), "\"cmd\" must be a string, not an object");
    EXPECT_EQ(error_of(R"({"cmd":"status","service":{"a":[1,2,{"b":null}]}})"),
              "\"service\" must be a string, not an object");
    // Brackets inside strings do not count as nesting.
    EXPECT_THAT(error_of("{\"cmd\":\"" + std::string(1000, '[') + "\"}"), StartsWith("unknown cmd \"[[["));
}

TEST(ParseRequest, CmdProblems)
{
    EXPECT_EQ(error_of("{}"), "request has no \"cmd\"");
    EXPECT_EQ(error_of(R"({"service":"redis"})"), "request has no \"cmd\"");
    EXPECT_EQ(error_of(R"({"cmd":7})"), "\"cmd\" must be a string, not a number");
    EXPECT_EQ(error_of(R"({"cmd":null})"), "\"cmd\" must be a string, not null");
    EXPECT_EQ(error_of(R"({"cmd":"explode"})"),
              "unknown cmd \"explode\" (expected one of status, tunnels, switch, rollback, split, pause, "
              "resume, reload, check, history, fleet)");
    EXPECT_THAT(error_of(R"({"cmd":"switch_side","service":"r"})"),
                StartsWith("unknown cmd \"switch_side\""));
    EXPECT_THAT(error_of("{\"cmd\":\"" + std::string(500, 'x') + "\"}"),
                StartsWith("unknown cmd \"" + std::string(64, 'x') + "...\" (expected"));
}

TEST(ParseRequest, UnknownFields)
{
    EXPECT_EQ(error_of(R"({"cmd":"split","service":"app","precent":5})"),
              "unknown field \"precent\" for cmd \"split\" (expected service, percent, sticky)");
    EXPECT_EQ(error_of(R"({"cmd":"reload","service":"app"})"),
              "unknown field \"service\" for cmd \"reload\", which takes no fields");
    EXPECT_EQ(error_of(R"({"cmd":"tunnels","json":true})"),
              "unknown field \"json\" for cmd \"tunnels\", which takes no fields");
    EXPECT_EQ(error_of(R"({"cmd":"status","force":true})"),
              "unknown field \"force\" for cmd \"status\" (expected service)");
    EXPECT_EQ(error_of(R"({"cmd":"rollback","service":"r","to":"old"})"),
              "unknown field \"to\" for cmd \"rollback\" (expected service)");
}

TEST(ParseRequest, ServiceProblems)
{
    for (const auto* cmd : {"switch", "rollback", "pause", "resume"})
        EXPECT_EQ(error_of(std::string(R"({"cmd":")") + cmd + "\"}"),
                  std::string("cmd \"") + cmd + "\" needs \"service\"");
    EXPECT_EQ(error_of(R"({"cmd":"split","percent":5})"), "cmd \"split\" needs \"service\"");
    EXPECT_EQ(error_of(R"({"cmd":"resume","service":null})"), "cmd \"resume\" needs \"service\"");
    EXPECT_EQ(error_of(R"({"cmd":"resume","service":""})"), "\"service\" must not be empty");
    EXPECT_EQ(error_of(R"({"cmd":"resume","service":5})"), "\"service\" must be a string, not a number");
    EXPECT_EQ(error_of(R"({"cmd":"status","service":["redis"]})"),
              "\"service\" must be a string, not an array");
}

TEST(ParseRequest, SwitchFieldProblems)
{
    EXPECT_EQ(error_of(R"({"cmd":"switch","service":"r","to":"sideways"})"),
              "\"to\" must be \"new\" or \"old\", not \"sideways\"");
    EXPECT_EQ(error_of(R"({"cmd":"switch","service":"r","to":"NEW"})"),
              "\"to\" must be \"new\" or \"old\", not \"NEW\"");
    EXPECT_EQ(error_of(R"({"cmd":"switch","service":"r","to":1})"),
              "\"to\" must be \"new\" or \"old\", not a number");
    EXPECT_EQ(error_of(R"({"cmd":"switch","service":"r","mode":"gentle"})"),
              "\"mode\" must be \"kill\", \"drain\" or \"pause\", not \"gentle\"");
    EXPECT_EQ(error_of(R"({"cmd":"switch","service":"r","mode":false})"),
              "\"mode\" must be \"kill\", \"drain\" or \"pause\", not a boolean");
    EXPECT_EQ(error_of(R"({"cmd":"switch","service":"r","force":"yes"})"),
              "\"force\" must be true or false, not a string");
    EXPECT_EQ(error_of(R"({"cmd":"switch","service":"r","force":1})"),
              "\"force\" must be true or false, not a number");
}

TEST(ParseRequest, SplitFieldProblems)
{
    EXPECT_EQ(error_of(R"({"cmd":"split","service":"app"})"), "cmd \"split\" needs \"percent\" (0..100)");
    EXPECT_EQ(error_of(R"({"cmd":"split","service":"app","percent":101})"),
              "\"percent\" must be 0..100, not 101");
    EXPECT_EQ(error_of(R"({"cmd":"split","service":"app","percent":-1})"),
              "\"percent\" must be 0..100, not -1");
    EXPECT_EQ(error_of(R"({"cmd":"split","service":"app","percent":18446744073709551615})"),
              "\"percent\" must be 0..100, not 18446744073709551615");
    EXPECT_EQ(error_of(R"({"cmd":"split","service":"app","percent":1e400})"),
              "request has a number out of range");
    EXPECT_EQ(error_of(R"({"cmd":"split","service":"app","percent":50.5})"),
              "\"percent\" must be an integer 0..100, not a number");
    EXPECT_EQ(error_of(R"({"cmd":"split","service":"app","percent":"50"})"),
              "\"percent\" must be an integer 0..100, not a string");
    EXPECT_EQ(error_of(R"({"cmd":"split","service":"app","percent":50,"sticky":"no"})"),
              "\"sticky\" must be true or false, not a string");
}

TEST(ParseRequest, PauseFieldProblems)
{
    EXPECT_EQ(error_of(R"({"cmd":"pause","service":"r","timeout":5})"),
              "\"timeout\" must be a duration string like \"5s\", not a number");
    EXPECT_EQ(error_of(R"({"cmd":"pause","service":"r","timeout":"soon"})"),
              "\"timeout\" must be a duration like \"250ms\", \"5s\" or \"2m\", not \"soon\"");
    EXPECT_EQ(error_of(R"({"cmd":"pause","service":"r","timeout":"0s"})"),
              "\"timeout\" must be positive, not \"0s\"");
}

// --- encode ----------------------------------------------------------------------------------

TEST(Encode, RoundTripsEveryCommand)
{
    const std::vector<request> requests{
        {.cmd = command::status},
        {.cmd = command::status, .service = "redis"},
        {.cmd = command::tunnels},
        {.cmd = command::switch_side, .service = "redis"},
        {.cmd = command::switch_side,
         .service = "redis",
         .to = side_choice::old_side,
         .mode = config::switch_mode::pause,
         .force = true},
        {.cmd = command::rollback, .service = "redis"},
        {.cmd = command::split, .service = "app", .percent = 35, .sticky = true},
        {.cmd = command::split, .service = "app", .percent = 0},
        {.cmd = command::pause, .service = "redis"},
        {.cmd = command::pause, .service = "redis", .timeout = 1500ms},
        {.cmd = command::pause, .service = "redis", .timeout = 2h},
        {.cmd = command::resume, .service = "redis"},
        {.cmd = command::reload},
        {.cmd = command::fleet},
        {.cmd = command::fleet, .service = "redis"},
    };
    for (const auto& r : requests) {
        const auto line = encode(r);
        ASSERT_FALSE(line.empty());
        EXPECT_EQ(line.back(), '\n');
        EXPECT_EQ(line.find('\n'), line.size() - 1);
        line_reader reader;
        reader.feed(line);
        const auto read = reader.next_line();
        ASSERT_TRUE(read);
        EXPECT_EQ(parsed(*read), r) << line;
    }
}

TEST(Encode, WritesTheDocumentedShape)
{
    EXPECT_EQ(
        encode({.cmd = command::switch_side, .service = "redis", .mode = config::switch_mode::drain}),
        "{\"cmd\":\"switch\",\"force\":false,\"mode\":\"drain\",\"service\":\"redis\",\"to\":\"new\"}\n");
    EXPECT_EQ(encode({.cmd = command::reload}), "{\"cmd\":\"reload\"}\n");
}

TEST(FormatDuration, UsesTheLargestExactUnit)
{
    EXPECT_EQ(format_duration(0ms), "0ms");
    EXPECT_EQ(format_duration(250ms), "250ms");
    EXPECT_EQ(format_duration(5s), "5s");
    EXPECT_EQ(format_duration(90s), "90s");
    EXPECT_EQ(format_duration(2min), "2m");
    EXPECT_EQ(format_duration(3h), "3h");
}

// --- replies ----------------------------------------------------------------------------------

TEST(Replies, BuildersWriteTheDocumentedLines)
{
    EXPECT_EQ(progress_line("holding new clients"), "{\"progress\":\"holding new clients\"}\n");
    EXPECT_EQ(ok_line({{"reloaded", true}}), "{\"ok\":true,\"result\":{\"reloaded\":true}}\n");
    EXPECT_EQ(error_line({error_code::refused, "switch refused: lag 4.2MiB exceeds max_lag 1MiB"}),
              "{\"code\":\"refused\",\"error\":\"switch refused: lag 4.2MiB exceeds max_lag "
              "1MiB\",\"ok\":false}\n");
}

TEST(Replies, BuildersSurviveInvalidUtf8AndNewlines)
{
    const auto line = progress_line("bad \xff byte\nand a newline");
    EXPECT_EQ(line.find('\n'), line.size() - 1);
    EXPECT_EQ(parse_reply(line.substr(0, line.size() - 1)),
              reply(progress{"bad \xef\xbf\xbd byte\nand a newline"}));
}

TEST(Replies, ParseReplyIsTheInverseOfTheBuilders)
{
    const auto strip = [](std::string line) {
        line.pop_back();
        return line;
    };
    EXPECT_EQ(parse_reply(strip(progress_line("promoting"))), reply(progress{"promoting"}));
    const nlohmann::json result = {{"services", nlohmann::json::array()}, {"tunnels", {{{"name", "vpc"}}}}};
    EXPECT_EQ(parse_reply(strip(ok_line(result))), reply(ok_result{result}));
    for (const auto code : {error_code::bad_request, error_code::unknown_service, error_code::refused,
                            error_code::failed, error_code::busy, error_code::forbidden}) {
        const protocol_error error{code, "because " + std::string(to_string(code))};
        EXPECT_EQ(parse_reply(strip(error_line(error))), reply(error));
        EXPECT_EQ(parse_error_code(to_string(code)), code);
    }
}

TEST(Replies, MalformedRepliesAreFailures)
{
    for (const auto* line : {"", "garbage", "[]", "{}", "{\"ok\":\"yes\"}", "{\"progress\":5}", "\xff"}) {
        const auto r = parse_reply(line);
        const auto* error = std::get_if<protocol_error>(&r);
        ASSERT_NE(error, nullptr) << line;
        EXPECT_EQ(error->code, error_code::failed);
        EXPECT_THAT(error->message, StartsWith("malformed reply from tunneld: ")) << line;
    }
}

TEST(Replies, UnknownCodesAndMissingFieldsAreTolerated)
{
    EXPECT_EQ(parse_reply(R"({"ok":false,"error":"x","code":"new_code"})"),
              reply(protocol_error{error_code::failed, "x"}));
    EXPECT_EQ(parse_reply(R"({"ok":false})"),
              reply(protocol_error{error_code::failed, "tunneld gave no reason"}));
    EXPECT_EQ(parse_reply(R"({"ok":true})"), reply(ok_result{nullptr}));
}

TEST(Names, CommandsRoundTrip)
{
    for (const auto cmd : {command::status, command::tunnels, command::switch_side, command::rollback,
                           command::split, command::pause, command::resume, command::reload, command::fleet})
        EXPECT_EQ(parse_command(to_string(cmd)), cmd);
    EXPECT_EQ(to_string(command::switch_side), "switch");
    EXPECT_EQ(parse_command("switch_side"), std::nullopt);
    EXPECT_EQ(to_string(side_choice::old_side), "old");
    EXPECT_TRUE(needs_service(command::split));
    EXPECT_FALSE(needs_service(command::status));
    EXPECT_FALSE(needs_service(command::fleet));
}

} // namespace
} // namespace tunneld::control
