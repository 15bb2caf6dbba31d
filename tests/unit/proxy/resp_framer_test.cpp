// RESP framing: every request and reply of a table fed whole, cut at every offset and byte by
// byte gives the same frames at the same offsets (Beast's parser tests); RESP3 pushes are frames
// but not replies, attributes are neither; garbage is a protocol error with a reason, never a crash.

#include "proxy/resp_framer.hpp"

#include <cstdint>
#include <gtest/gtest.h>
#include <string>
#include <utility>
#include <vector>

namespace tunneld::proxy {
namespace {

struct framed {
    std::vector<std::string> frames; ///< "offset:description" per ended frame
    resp_error error = resp_error::none;
    bool operator==(const framed&) const = default;
};

std::string describe(const request_view& r)
{
    std::string text = "n=" + std::to_string(r.argument_count());
    for (std::size_t i = 0; i < r.argument_count() && i < request_framer::max_arguments; ++i)
        text += "|" + std::string(r.argument(i)) + (r.kept_whole(i) ? "" : "~");
    if (r.is_inline()) text += " inline";
    if (r.quoted()) text += " quoted";
    return text;
}

std::string describe(const reply_view& r)
{
    std::string text = "t=" + std::to_string(static_cast<int>(r.type)) + " len=" + std::to_string(r.length) +
                       " head=" + std::string(r.head);
    if (r.after_attribute) text += " attr";
    if (r.error_elements) text += " errors=" + std::to_string(r.error_elements);
    if (r.error_beyond) text += " errors_beyond";
    return text;
}

/// Feeds `input` in the pieces `cuts` make (offsets in increasing order).
template <class Framer>
framed frame(std::string_view input, const std::vector<std::size_t>& cuts,
             const resp_limits* limits = nullptr)
{
    Framer framer = limits ? Framer(*limits) : Framer();
    framed out;
    std::size_t offset = 0;
    std::size_t from = 0;
    auto feed_piece = [&](std::string_view piece) {
        while (!piece.empty()) {
            const framer_step step = framer.feed(piece);
            offset += step.consumed;
            piece.remove_prefix(step.consumed);
            if (step.frame_ended)
                out.frames.push_back(std::to_string(offset) + ":" + describe(framer.last()));
            if (framer.error() != resp_error::none) {
                EXPECT_EQ(framer.feed(piece).consumed, 0u) << "a failed framer takes nothing more";
                return;
            }
            if (!step.frame_ended) {
                EXPECT_TRUE(piece.empty());
            }
        }
    };
    for (std::size_t cut : cuts) {
        feed_piece(input.substr(from, cut - from));
        from = cut;
        if (framer.error() != resp_error::none) break;
    }
    if (framer.error() == resp_error::none) feed_piece(input.substr(from));
    out.error = framer.error();
    return out;
}

/// The frames are the same whole, cut once at every offset, and byte by byte.
template <class Framer> framed frame_every_split(std::string_view input, const resp_limits* limits = nullptr)
{
    const framed whole = frame<Framer>(input, {}, limits);
    for (std::size_t cut = 0; cut <= input.size(); ++cut)
        EXPECT_EQ(frame<Framer>(input, {cut}, limits), whole) << "cut at " << cut << " of " << input;
    std::vector<std::size_t> every;
    for (std::size_t i = 1; i < input.size(); ++i)
        every.push_back(i);
    EXPECT_EQ(frame<Framer>(input, every, limits), whole) << "byte by byte: " << input;
    return whole;
}

/// Appends one case to a pipeline of all cases, shifting its expected frame offsets.
void append_to_pipeline(std::string& all, std::vector<std::string>& expected, const std::string& bytes,
                        const std::vector<std::string>& frames)
{
    for (const auto& f : frames) {
        const auto colon = f.find(':');
        expected.push_back(std::to_string(all.size() + std::stoul(f.substr(0, colon))) + f.substr(colon));
    }
    all += bytes;
}

struct request_case {
    std::string bytes;
    std::vector<std::string> frames;
};

const std::vector<request_case>& request_table()
{
    static const std::vector<request_case> table = {
        {"*1\r\n$4\r\nPING\r\n", {"14:n=1|PING"}},
        {"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n", {"33:n=3|SET|key|value"}},
        {"*2\r\n$6\r\nselect\r\n$1\r\n3\r\n", {"23:n=2|select|3"}},
        {"*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n", {"23:n=2|GET|a\r\nb"}},
        {"*2\r\n$3\r\nGET\r\n$0\r\n\r\n", {"19:n=2|GET|"}},
        {"*0\r\n", {"4:n=0"}},
        {"*-1\r\n", {"5:n=0"}},
        {"PING\r\n", {"6:n=1|PING inline"}},
        {"set  a\tb\n", {"9:n=3|set|a|b inline"}},
        {"\r\n", {"2:n=0 inline"}},
        {"   \n", {"4:n=0 inline"}},
        {"set \"a b\" c\r\n", {"13:n=4|set|\"a|b\"|c inline quoted"}},
        {"*3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$6\r\nsecret\r\n", {"39:n=3|AUTH|default|secret"}},
        // Lengths with leading zeros, as Redis reads them (a whole frame takes a shorter path).
        {"*02\r\n$003\r\nGET\r\n$01\r\nk\r\n", {"24:n=2|GET|k"}},
    };
    return table;
}

TEST(RespRequestFramer, EveryRequestOfTheTableWhateverTheSplit)
{
    for (const auto& c : request_table()) {
        const framed got = frame_every_split<request_framer>(c.bytes);
        EXPECT_EQ(got.error, resp_error::none) << c.bytes;
        EXPECT_EQ(got.frames, c.frames) << c.bytes;
    }
}

TEST(RespRequestFramer, PipelinedRequestsEndAtTheirOwnOffsets)
{
    std::string all;
    std::vector<std::string> expected;
    for (const auto& c : request_table())
        append_to_pipeline(all, expected, c.bytes, c.frames);
    const framed got = frame_every_split<request_framer>(all);
    EXPECT_EQ(got.error, resp_error::none);
    EXPECT_EQ(got.frames, expected);
}

TEST(RespRequestFramer, LongArgumentsAreKeptAsAPrefixAndSaySo)
{
    const std::string value(100, 'v');
    const std::string bytes = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\n" + value + "\r\n";
    request_framer framer;
    const auto step = framer.feed(bytes);
    ASSERT_TRUE(step.frame_ended);
    const auto r = framer.last();
    EXPECT_EQ(r.argument(2), value.substr(0, 64));
    EXPECT_FALSE(r.kept_whole(2));
    EXPECT_TRUE(r.kept_whole(1));

    // AUTH, HELLO and CLIENT keep long arguments: a password of 300 bytes is kept whole.
    const std::string password(300, 'p');
    const std::string auth = "*2\r\n$4\r\nauth\r\n$300\r\n" + password + "\r\n";
    ASSERT_TRUE(framer.feed(auth).frame_ended);
    EXPECT_TRUE(framer.last().kept_whole(1));
    EXPECT_EQ(framer.last().argument(1), password);
    EXPECT_TRUE(framer.last().argument_is(0, "AUTH"));
}

TEST(RespRequestFramer, ArgumentsBeyondTheKeptOnesAreCountedNotKept)
{
    std::string bytes = "*20\r\n$4\r\nMSET\r\n";
    for (int i = 1; i < 20; ++i)
        bytes += "$1\r\nx\r\n";
    request_framer framer;
    ASSERT_TRUE(framer.feed(bytes).frame_ended);
    EXPECT_EQ(framer.last().argument_count(), 20u);
    EXPECT_TRUE(framer.last().kept_whole(11));
    EXPECT_FALSE(framer.last().kept_whole(12));
    EXPECT_EQ(framer.last().argument(15), "");
}

TEST(RespRequestFramer, MidRequestUntilTheLastByte)
{
    const std::string bytes = "*1\r\n$4\r\nPING\r\n";
    for (std::size_t cut = 1; cut < bytes.size(); ++cut) {
        request_framer framer;
        EXPECT_FALSE(framer.mid_request());
        EXPECT_FALSE(framer.feed(std::string_view(bytes).substr(0, cut)).frame_ended);
        EXPECT_TRUE(framer.mid_request()) << cut;
        EXPECT_TRUE(framer.feed(std::string_view(bytes).substr(cut)).frame_ended);
        EXPECT_FALSE(framer.mid_request());
    }
}

TEST(RespRequestFramer, WipeZeroesTheKeptArguments)
{
    request_framer framer;
    ASSERT_TRUE(framer.feed("*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n").frame_ended);
    EXPECT_EQ(framer.last().argument(1), "secret");
    framer.wipe();
    EXPECT_EQ(framer.last().argument(1), std::string(6, '\0'));
}

struct reply_case {
    std::string bytes;
    std::vector<std::string> frames;
};

TEST(RespReplyFramer, EveryReplyOfTheTableWhateverTheSplit)
{
    // Types by number: simple_string 0, simple_error 1, integer 2, bulk_string 3, array 4, null 5,
    // boolean 6, double 7, big_number 8, bulk_error 9, verbatim 10, map 11, set 12, push 14.
    const std::vector<reply_case> table = {
        {"+OK\r\n", {"5:t=0 len=2 head=OK"}},
        {"+\r\n", {"3:t=0 len=0 head="}},
        {":-0\r\n", {"5:t=2 len=0 head="}},
        {"$03\r\nabc\r\n", {"10:t=3 len=3 head="}},
        {"$-01\r\n", {"6:t=5 len=-1 head="}},
        {"-ERR unknown command 'FOO'\r\n", {"28:t=1 len=25 head=ERR unknown command 'FOO'"}},
        {":1000\r\n", {"7:t=2 len=1000 head="}},
        {":-9223372036854775808\r\n", {"23:t=2 len=-922337203685477580 head="}}, // the value is kept to 18 digits
        {"$5\r\nhello\r\n", {"11:t=3 len=5 head="}},
        {"$0\r\n\r\n", {"6:t=3 len=0 head="}},
        {"$-1\r\n", {"5:t=5 len=-1 head="}},
        {"*-1\r\n", {"5:t=5 len=-1 head="}},
        {"*0\r\n", {"4:t=4 len=0 head="}},
        {"*2\r\n$3\r\nfoo\r\n:1\r\n", {"17:t=4 len=2 head="}},
        {"*3\r\n+OK\r\n-ERR x\r\n*1\r\n-ERR y\r\n", {"29:t=4 len=3 head= errors=2"}},
        {"_\r\n", {"3:t=5 len=-1 head="}},
        {"#t\r\n", {"4:t=6 len=0 head=t"}},
        {",3.14\r\n", {"7:t=7 len=0 head=3.14"}},
        {",-inf\r\n", {"7:t=7 len=0 head=-inf"}},
        {"(3492890328409238509324850943850943825024385\r\n",
         {"46:t=8 len=0 head=3492890328409238509324850943850943825024385"}},
        {"!21\r\nSYNTAX invalid syntax\r\n", {"28:t=9 len=21 head="}},
        {"=15\r\ntxt:Some string\r\n", {"22:t=10 len=15 head="}},
        {"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n", {"29:t=11 len=2 head="}},
        {"~2\r\n+a\r\n+b\r\n", {"12:t=12 len=2 head="}},
        {">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n", {"33:t=14 len=3 head="}},
        // An attribute before a reply: one frame, the reply's, marked.
        {"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:"
         "9543892\r\n",
         {"81:t=4 len=2 head= attr"}},
        {"|0\r\n+OK\r\n", {"9:t=0 len=2 head=OK attr"}},
        // An attribute inside an aggregate is no element of it.
        {"*2\r\n|1\r\n+ttl\r\n:3600\r\n+a\r\n-ERR b\r\n", {"33:t=4 len=2 head= errors=2"}},
        // HELLO 3's answer.
        {"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n$5\r\nproto\r\n:3\r\n"
         "$2\r\nid\r\n:5\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
         "$7\r\nmodules\r\n*0\r\n",
         {"144:t=11 len=7 head="}},
    };
    std::string all;
    std::vector<std::string> expected;
    for (const auto& c : table) {
        const framed got = frame_every_split<reply_framer>(c.bytes);
        EXPECT_EQ(got.error, resp_error::none) << c.bytes;
        EXPECT_EQ(got.frames, c.frames) << c.bytes;
        append_to_pipeline(all, expected, c.bytes, c.frames);
    }
    // All of them pipelined, cut everywhere.
    const framed got = frame_every_split<reply_framer>(all);
    EXPECT_EQ(got.error, resp_error::none);
    EXPECT_EQ(got.frames, expected);
}

TEST(RespReplyFramer, ErrorsBeyondTheSixtyFourthElementAreFlagged)
{
    std::string bytes = "*70\r\n";
    for (int i = 0; i < 70; ++i)
        bytes += i == 3 || i == 66 ? "-ERR\r\n" : "+OK\r\n";
    reply_framer framer;
    ASSERT_TRUE(framer.feed(bytes).frame_ended);
    EXPECT_EQ(framer.last().error_elements, std::uint64_t{1} << 3);
    EXPECT_TRUE(framer.last().error_beyond);
}

TEST(RespReplyFramer, AnIntegerCarriesItsValueWhateverTheSplit)
{
    // The pump reads the backend's CLIENT ID from it.
    for (const auto& [bytes, value] : std::vector<std::pair<std::string, std::int64_t>>{
             {":0\r\n", 0}, {":7\r\n", 7}, {":123456789012\r\n", 123456789012}, {":-42\r\n", -42}}) {
        for (std::size_t cut = 0; cut <= bytes.size(); ++cut) {
            reply_framer framer;
            const auto first = framer.feed(std::string_view(bytes).substr(0, cut));
            const bool ended = first.frame_ended || framer.feed(std::string_view(bytes).substr(first.consumed)).frame_ended;
            ASSERT_TRUE(ended) << bytes << " cut at " << cut;
            EXPECT_EQ(framer.last().type, resp_type::integer);
            EXPECT_EQ(framer.last().length, value) << bytes << " cut at " << cut;
        }
    }
}

TEST(RespReplyFramer, AnAttributeAloneIsMidReply)
{
    reply_framer framer;
    const auto step = framer.feed("|1\r\n+a\r\n+b\r\n");
    EXPECT_FALSE(step.frame_ended);
    EXPECT_TRUE(framer.mid_reply());
    EXPECT_TRUE(framer.feed("+OK\r\n").frame_ended);
    EXPECT_FALSE(framer.mid_reply());
}

struct garbage_case {
    std::string bytes;
    resp_error error;
};

TEST(RespRequestFramer, GarbageIsAProtocolErrorWithAReason)
{
    const std::vector<garbage_case> table = {
        {"*1\r\n+PING\r\n", resp_error::expected_bulk},
        {"*1\r\n$-1\r\n", resp_error::bad_length},
        {"*x\r\n", resp_error::bad_length},
        {"*\r\n", resp_error::bad_length},
        {"*1\r\n$4\r\nPINGX\r\n", resp_error::missing_crlf},
        {"*1\r\n$4\r\nPING\rX", resp_error::missing_crlf},
        {"*1\n", resp_error::bad_length},
        {"*1\r\r", resp_error::missing_crlf},
        {"*1\r\n$999999999\r\n", resp_error::length_too_large},
        {"*1\r\n$99999999999999999999\r\n", resp_error::bad_length},
        {"*3000000000\r\n", resp_error::length_too_large},
        {"*?\r\n", resp_error::streamed_aggregate},
        {"*1-\r\n", resp_error::bad_length},
        {std::string(70 * 1024, 'a'), resp_error::line_too_long},
    };
    for (const auto& c : table) {
        if (c.bytes.size() > 1000) { // every split of 70 KiB is too slow; the cuts around the limit
            EXPECT_EQ(frame<request_framer>(c.bytes, {}).error, c.error);
            EXPECT_EQ(frame<request_framer>(c.bytes, {100, 65535, 65536, 65537}).error, c.error);
            continue;
        }
        EXPECT_EQ(frame_every_split<request_framer>(c.bytes).error, c.error) << c.bytes;
    }
}

TEST(RespReplyFramer, GarbageIsAProtocolErrorWithAReason)
{
    std::string deep;
    for (std::size_t i = 0; i <= detail::resp_scanner::max_depth; ++i)
        deep += "*1\r\n";
    std::string deep_ok;
    for (std::size_t i = 0; i < detail::resp_scanner::max_depth; ++i)
        deep_ok += "*1\r\n";
    deep_ok += ":1\r\n";
    EXPECT_EQ(frame_every_split<reply_framer>(deep_ok).frames.size(), 1u);

    const std::vector<garbage_case> table = {
        {"?\r\n", resp_error::bad_type},
        {"OK\r\n", resp_error::bad_type},
        {"+OK\n", resp_error::missing_crlf},
        {"+OK\r\r", resp_error::missing_crlf},
        {":abc\r\n", resp_error::bad_integer},
        {":\r\n", resp_error::bad_integer},
        {":99999999999999999999\r\n", resp_error::bad_integer},
        {"$abc\r\n", resp_error::bad_length},
        {"$3\r\nabcd\r\n", resp_error::missing_crlf},
        {"$-2\r\n", resp_error::bad_length},
        {"*-2\r\n", resp_error::bad_length},
        {"%-1\r\n", resp_error::bad_length},
        {"$?\r\n", resp_error::streamed_aggregate},
        {"#x\r\n", resp_error::bad_simple_value},
        {"#\r\n", resp_error::bad_simple_value},
        {"_x\r\n", resp_error::bad_simple_value},
        {",\r\n", resp_error::bad_simple_value},
        {"(12a\r\n", resp_error::bad_integer},
        {"(-\r\n", resp_error::bad_integer},
        {"*2\r\n+a\r\n\x01\r\n", resp_error::bad_type},
        {"$5000000000\r\n", resp_error::length_too_large},
        {deep, resp_error::too_deep},
    };
    for (const auto& c : table) {
        const framed got = frame_every_split<reply_framer>(c.bytes);
        EXPECT_EQ(got.error, c.error) << c.bytes;
    }
    const resp_limits small{.max_bulk_length = 10, .max_count = 3, .max_line = 4};
    EXPECT_EQ(frame_every_split<reply_framer>("+OKAY!\r\n", &small).error, resp_error::line_too_long);
    EXPECT_EQ(frame_every_split<reply_framer>("*4\r\n", &small).error, resp_error::length_too_large);
    EXPECT_EQ(frame_every_split<reply_framer>("$11\r\n", &small).error, resp_error::length_too_large);
    EXPECT_EQ(frame_every_split<reply_framer>("$10\r\n0123456789\r\n", &small).error, resp_error::none);
}

TEST(RespReplyFramer, ErrorNamesAreDistinct)
{
    EXPECT_EQ(to_string(resp_error::too_deep), "too_deep");
    EXPECT_EQ(to_string(resp_error::expected_bulk), "expected_bulk");
}

} // namespace
} // namespace tunneld::proxy
