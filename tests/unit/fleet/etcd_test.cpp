// etcd's JSON gateway without a socket: requests are encoded as the gateway reads them (base64
// keys and values, int64 as strings), replies copied from etcd 3.4 decode, and every reply that
// is not etcd's (not JSON, wrong types, bad base64, no header) fails closed as malformed_reply.
#include "fleet/etcd.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace tunneld::fleet::etcd {
namespace {

using json = nlohmann::json;
using ::testing::ElementsAre;

// A reply of etcd 3.4.23 to POST /v3/kv/range for /a/x = "hi".
constexpr std::string_view range_reply =
    R"({"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"2","raft_term":"2"},)"
    R"("kvs":[{"key":"L2EveA==","create_revision":"2","mod_revision":"2","version":"1","value":"aGk="}],"count":"1"})";

TEST(Base64, RoundTripsEveryLengthAndByte)
{
    std::string bytes;
    for (int i = 0; i < 300; ++i) {
        EXPECT_EQ(base64_decode(base64_encode(bytes)), bytes) << i;
        bytes += static_cast<char>((i * 37) & 0xff);
    }
    EXPECT_EQ(base64_encode("/a/x"), "L2EveA==");
    EXPECT_EQ(base64_encode("hi"), "aGk=");
    EXPECT_EQ(base64_encode(""), "");
}

TEST(Base64, RefusesWhatIsNotBase64)
{
    for (std::string_view bad : {"L2EveA=", "L2Ev eA==", "L2E=eA==", "====", "a=bc", "L2EveA\n=", "é123"})
        EXPECT_FALSE(base64_decode(bad)) << bad;
}

TEST(PrefixEnd, IsTheSmallestKeyAfterThePrefix)
{
    EXPECT_EQ(prefix_end("/tunneld/eu/"), "/tunneld/eu0");
    EXPECT_EQ(prefix_end(std::string("a\xff", 2)), "b");
    EXPECT_EQ(prefix_end(std::string("\xff\xff", 2)), std::string(1, '\0'));
}

TEST(Encode, RangeOmitsDefaultsAndWritesInt64AsStrings)
{
    EXPECT_EQ(json::parse(encode(range_request{"/a/x", {}})), json({{"key", "L2EveA=="}}));
    const auto prefix = range_request::prefix("/a/");
    EXPECT_EQ(json::parse(encode(range_request{prefix.key, prefix.range_end, 7, 2})),
              json({{"key", "L2Ev"}, {"range_end", "L2Ew"}, {"revision", "7"}, {"limit", "2"}}));
    EXPECT_EQ(json::parse(encode(put_request{"k", "v", 42})),
              json({{"key", "aw=="}, {"value", "dg=="}, {"lease", "42"}}));
    EXPECT_EQ(json::parse(encode_lease_grant(10)), json({{"TTL", "10"}}));
    EXPECT_EQ(json::parse(encode_lease_id(7)), json({{"ID", "7"}}));
}

TEST(Encode, TxnSpellsCompareTargetsAndWritesZero)
{
    txn_request txn{{compare::absent("k"), compare::mod_revision_is("k", 9), compare::value_is("k", "v")},
                    {put_request{"k", "v", 0}, delete_request{"d", {}}},
                    {range_request{"k", {}}}};
    EXPECT_EQ(json::parse(encode(txn)),
              json::parse(R"({"compare":[
                  {"key":"aw==","target":"CREATE","result":"EQUAL","create_revision":"0"},
                  {"key":"aw==","target":"MOD","result":"EQUAL","mod_revision":"9"},
                  {"key":"aw==","target":"VALUE","result":"EQUAL","value":"dg=="}],
                "success":[{"request_put":{"key":"aw==","value":"dg=="}},{"request_delete_range":{"key":"ZA=="}}],
                "failure":[{"request_range":{"key":"aw=="}}]})"));
}

TEST(Encode, WatchAsksForProgressNotifications)
{
    EXPECT_EQ(json::parse(encode(watch_create{"/a/", "/a0", 12, true})),
              json::parse(R"({"create_request":{"key":"L2Ev","range_end":"L2Ew","start_revision":"12","progress_notify":true}})"));
}

TEST(Decode, RangeAsEtcdWritesIt)
{
    const auto r = decode_range(range_reply);
    ASSERT_TRUE(r) << r.err().to_string();
    EXPECT_EQ(r->revision, 2);
    EXPECT_EQ(r->count, 1);
    EXPECT_THAT(r->kvs, ElementsAre(key_value{"/a/x", "hi", 2, 2, 1, 0}));
}

TEST(Decode, AbsentFieldsAreTheirDefaults)
{
    const auto r = decode_range(R"({"header":{"revision":"5"}})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->revision, 5);
    EXPECT_TRUE(r->kvs.empty());
    EXPECT_FALSE(r->more);
    const auto t = decode_txn(R"({"header":{"revision":"5"}})");
    ASSERT_TRUE(t);
    EXPECT_FALSE(t->succeeded);
    EXPECT_TRUE(t->responses.empty());
}

TEST(Decode, TxnBranchResponses)
{
    const auto t = decode_txn(
        R"({"header":{"revision":"9"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"9"}}},)"
        R"({"response_range":{"header":{"revision":"9"},"kvs":[{"key":"aw==","mod_revision":"9"}],"count":"1"}},)"
        R"({"response_delete_range":{"header":{},"deleted":"2"}}]})");
    ASSERT_TRUE(t) << t.err().to_string();
    EXPECT_TRUE(t->succeeded);
    ASSERT_EQ(t->responses.size(), 3u);
    EXPECT_EQ(std::get<put_response>(t->responses[0]).revision, 9);
    EXPECT_EQ(std::get<range_response>(t->responses[1]).kvs.at(0).key, "k");
    EXPECT_EQ(std::get<range_response>(t->responses[1]).kvs.at(0).value, "");
    EXPECT_EQ(std::get<delete_response>(t->responses[2]).deleted, 2);
}

TEST(Decode, MalformedRepliesFailClosed)
{
    for (std::string_view bad : {
             "",
             "<html>502 Bad Gateway</html>",
             "[]",
             R"({"kvs":[]})",                                                   // no header
             R"({"header":{"revision":"two"}})",                                // not an int64
             R"({"header":{"revision":"2x"}})",                                 //
             R"({"header":{"revision":2.5}})",                                  //
             R"({"header":{"revision":"2"},"kvs":{}})",                         // kvs not an array
             R"({"header":{"revision":"2"},"kvs":[{"key":"not base64!"}]})",    //
             R"({"header":{"revision":"2"},"kvs":[{"value":"aGk="}]})",         // no key
             R"({"header":{"revision":"2"},"kvs":[{"key":"aw==","version":true}]})",
             R"({"header":{"revision":"2"},"more":"yes"})",
             R"({"header":{"revision":"2"},"kvs":[{"key":"aw==","mod_revision":"2")", // truncated
         }) {
        const auto r = decode_range(bad);
        ASSERT_FALSE(r) << bad;
        EXPECT_EQ(r.err().code, errc::malformed_reply) << bad;
    }
    EXPECT_EQ(decode_txn(R"({"header":{},"succeeded":"true"})").err().code, errc::malformed_reply);
    EXPECT_EQ(decode_txn(R"({"header":{},"responses":[{"response_what":{}}]})").err().code, errc::malformed_reply);
    EXPECT_EQ(decode_lease_grant(R"({"header":{},"TTL":"5"})").err().code, errc::malformed_reply);
    EXPECT_EQ(decode_token(R"({"header":{}})").err().code, errc::malformed_reply);
}

TEST(Decode, ErrorsByEtcdsMessage)
{
    EXPECT_EQ(decode_error(400, R"({"error":"etcdserver: mvcc: required revision has been compacted","message":"etcdserver: mvcc: required revision has been compacted","code":11})")
                  .code,
              errc::compacted);
    EXPECT_EQ(decode_error(401, R"({"error":"etcdserver: invalid auth token","code":16,"message":"etcdserver: invalid auth token"})").code,
              errc::invalid_token);
    EXPECT_EQ(decode_error(400, R"({"error":"x","code":3,"message":"etcdserver: authentication failed, invalid user ID or password"})").code,
              errc::auth_failed);
    EXPECT_EQ(decode_error(400, R"({"error":"x","code":3,"message":"etcdserver: user name is empty"})").code,
              errc::auth_failed);
    EXPECT_EQ(decode_error(404, R"({"error":"x","code":5,"message":"etcdserver: requested lease not found"})").code,
              errc::lease_not_found);
    const error other = decode_error(500, R"({"error":"x","code":2,"message":"etcdserver: too many requests"})");
    EXPECT_EQ(other.code, errc::server_error);
    EXPECT_EQ(other.detail, "etcdserver: too many requests");
    EXPECT_EQ(decode_error(502, "<html>bad gateway</html>").code, errc::http_status);
    EXPECT_EQ(decode_error(502, "<html>bad gateway</html>").to_string(), "unexpected HTTP status from etcd: HTTP 502");
}

TEST(Decode, KeepAliveWithoutTtlMeansTheLeaseIsGone)
{
    const auto alive = decode_lease_keep_alive(R"({"result":{"header":{"revision":"2"},"ID":"7","TTL":"9"}})");
    ASSERT_TRUE(alive);
    EXPECT_EQ(alive->id, 7);
    EXPECT_EQ(alive->ttl, 9);
    // etcd 3.4's answer to a keep-alive of an expired lease.
    EXPECT_EQ(decode_lease_keep_alive(R"({"result":{"header":{"revision":"2","raft_term":"2"},"ID":"1"}})").err().code,
              errc::lease_not_found);
    const auto grant = decode_lease_grant(R"({"header":{"revision":"2"},"ID":"2324035715294444041","TTL":"2"})");
    ASSERT_TRUE(grant);
    EXPECT_EQ(grant->id, 2324035715294444041);
    EXPECT_EQ(grant->ttl, 2);
}

TEST(Decode, WatchMessages)
{
    auto created = decode_watch_message(R"({"result":{"header":{"revision":"2"},"created":true}})");
    ASSERT_TRUE(created);
    EXPECT_TRUE(created->created);
    EXPECT_FALSE(created->progress());

    auto events = decode_watch_message(
        R"({"result":{"header":{"revision":"4"},"events":[{"kv":{"key":"aw==","create_revision":"3","mod_revision":"3","version":"1","value":"dg=="}},)"
        R"({"type":"DELETE","kv":{"key":"aw==","mod_revision":"4"}}]}})");
    ASSERT_TRUE(events) << events.err().to_string();
    ASSERT_EQ(events->events.size(), 2u);
    EXPECT_EQ(events->events[0].kind, event::type::put);
    EXPECT_EQ(events->events[0].kv.value, "v");
    EXPECT_EQ(events->events[1].kind, event::type::del);
    EXPECT_EQ(events->events[1].kv.mod_revision, 4);

    auto progress = decode_watch_message(R"({"result":{"header":{"revision":"17"}}})");
    ASSERT_TRUE(progress);
    EXPECT_TRUE(progress->progress());
    EXPECT_EQ(progress->revision, 17);

    auto compacted = decode_watch_message(
        R"({"result":{"header":{"cluster_id":"1","raft_term":"2"},"canceled":true,"compact_revision":"2"}})");
    ASSERT_TRUE(compacted);
    EXPECT_TRUE(compacted->canceled);
    EXPECT_EQ(compacted->compact_revision, 2);

    EXPECT_EQ(decode_watch_message(R"({"error":{"grpc_code":16,"message":"etcdserver: invalid auth token"}})").err().code,
              errc::invalid_token);
    EXPECT_EQ(decode_watch_message(R"({"result":{"header":{},"events":[{"type":"TRUNCATE","kv":{"key":"aw=="}}]}})")
                  .err()
                  .code,
              errc::malformed_reply);
    EXPECT_EQ(decode_watch_message(R"({"result":{"header":{},"events":[{"type":"PUT"}]}})").err().code,
              errc::malformed_reply);
    EXPECT_EQ(decode_watch_message(R"({"header":{}})").err().code, errc::malformed_reply);
}

TEST(LineBuffer, SurvivesEverySplit)
{
    const std::string stream = "{\"a\":1}\n\r\n{\"b\":2}\r\n  \n{\"c\":3}\n{\"partial\"";
    for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
        line_buffer lines;
        std::vector<std::string> got;
        lines.append(std::string_view(stream).substr(0, cut));
        while (auto line = lines.next())
            got.push_back(*line);
        lines.append(std::string_view(stream).substr(cut));
        while (auto line = lines.next())
            got.push_back(*line);
        EXPECT_THAT(got, ElementsAre("{\"a\":1}", "{\"b\":2}", "{\"c\":3}")) << cut;
        EXPECT_EQ(lines.pending(), 10u);
    }
}

TEST(Credentials, UserSpacePasswordOnTheFirstLine)
{
    EXPECT_EQ(parse_credentials("tunneld s3cret\n"), (std::pair<std::string, std::string>{"tunneld", "s3cret"}));
    EXPECT_EQ(parse_credentials("tunneld s3cret\r\nignored"),
              (std::pair<std::string, std::string>{"tunneld", "s3cret"}));
    for (std::string_view bad : {"", "s3cret", " s3cret", "tunneld ", "a b c", "\nu p"})
        EXPECT_FALSE(parse_credentials(bad)) << bad;
}

TEST(Errors, AreStdErrorCodes)
{
    const std::error_code ec = errc::compacted;
    EXPECT_EQ(ec, errc::compacted);
    EXPECT_STREQ(ec.category().name(), "etcd");
    EXPECT_EQ(ec.message(), "revision compacted");
}

} // namespace
} // namespace tunneld::fleet::etcd
