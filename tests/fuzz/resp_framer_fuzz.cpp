// libFuzzer target for the RESP framers and the Redis session built on them. Checks more than
// "does not crash": the frames (where they end, what they keep) and the error do not depend on
// where the input was cut; every feed takes at most what it was given and makes progress; a
// session never has more replies than requests outstanding; a replay re-frames as exactly its
// steps.
// Build: see tests/fuzz/CMakeLists.txt (TUNNELD_FUZZ=ON with clang), then
//   build/fuzz/tests/fuzz/resp_framer_fuzz -dict=tests/fuzz/resp.dict -max_len=4096
//   tests/fuzz/corpus/resp_framer

#include "proxy/redis_session.hpp"
#include "proxy/resp_framer.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace tunneld::proxy;

void check(bool condition)
{
    if (!condition) std::abort();
}

struct frame_record {
    std::size_t end;
    std::string kept; ///< what the framer kept of the frame, flattened
    bool operator==(const frame_record&) const = default;
};

std::string flatten(const request_view& r)
{
    std::string out =
        std::to_string(r.argument_count()) + (r.is_inline() ? "i" : "") + (r.quoted() ? "q" : "");
    for (std::size_t i = 0; i < r.argument_count() && i < request_framer::max_arguments; ++i) {
        out += r.kept_whole(i) ? "|" : "~";
        out += r.argument(i);
    }
    return out;
}

std::string flatten(const reply_view& r)
{
    return std::to_string(static_cast<int>(r.type)) + "/" + std::to_string(r.length) + "/" +
           std::string(r.head) + "/" + std::to_string(r.error_elements) + (r.error_beyond ? "+" : "") +
           (r.after_attribute ? "a" : "");
}

/// Feeds `text` in pieces of at most `piece` bytes; returns the frames and the error.
template <class Framer>
std::pair<std::vector<frame_record>, resp_error> frames(std::string_view text, std::size_t piece)
{
    Framer framer;
    std::vector<frame_record> out;
    std::size_t offset = 0;
    while (offset < text.size() && framer.error() == resp_error::none) {
        std::string_view chunk = text.substr(offset, piece);
        while (!chunk.empty()) {
            const framer_step step = framer.feed(chunk);
            check(step.consumed <= chunk.size());
            offset += step.consumed;
            chunk.remove_prefix(step.consumed);
            if (step.frame_ended) out.push_back({offset, flatten(framer.last())});
            if (framer.error() != resp_error::none) {
                check(!step.frame_ended);
                check(framer.feed(chunk).consumed == 0);
                break;
            }
            check(step.frame_ended || chunk.empty()); // no frame ended: everything was taken
        }
    }
    return {out, framer.error()};
}

template <class Framer> void same_whatever_the_split(std::string_view text, std::size_t piece)
{
    const auto whole = frames<Framer>(text, text.size() + 1);
    check(frames<Framer>(text, piece) == whole);
    check(text.size() > 512 || frames<Framer>(text, 1) == whole); // byte by byte on small inputs
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size)
{
    const std::string_view text(reinterpret_cast<const char*>(bytes), size);
    const std::size_t piece = size == 0 ? 1 : 1 + bytes[0] % 64;
    same_whatever_the_split<request_framer>(text, piece);
    same_whatever_the_split<reply_framer>(text, piece);

    // A session: the input is the client's bytes up to the first NUL (or half of it), the
    // backend's after it, fed in alternating pieces as two pumps would.
    const std::size_t nul = text.find('\0');
    std::string_view client = text.substr(0, nul == std::string_view::npos ? size / 2 : nul);
    std::string_view backend = text.substr(nul == std::string_view::npos ? size / 2 : nul + 1);
    redis_session session;
    while (!client.empty() || !backend.empty()) {
        if (!client.empty()) {
            const framer_step step = session.on_client_bytes(client.substr(0, piece));
            check(step.consumed > 0 && step.consumed <= piece);
            client.remove_prefix(step.consumed);
        }
        if (!backend.empty()) {
            const framer_step step = session.on_backend_bytes(backend.substr(0, piece));
            check(step.consumed > 0 && step.consumed <= piece);
            backend.remove_prefix(step.consumed);
        }
        check(session.outstanding() < (std::uint64_t{1} << 62)); // never below zero
        if (session.movable()) check(session.pinned() == pin_reason::none && session.at_request_boundary());
    }

    // Whatever state was followed, its replay is well-formed RESP: one request per step.
    const replay r = session.make_replay();
    const auto [replayed, error] = frames<request_framer>(r.bytes(), r.bytes().size() + 1);
    check(error == resp_error::none);
    check(replayed.size() == r.steps().size());
    for (std::size_t i = 0; i < replayed.size(); ++i)
        check(replayed[i].end == r.steps()[i].offset + r.steps()[i].size);
    return 0;
}
