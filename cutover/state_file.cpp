#include "cutover/state_file.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <limits>
#include <cstring>
#include <fcntl.h>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace tunneld::cutover {

namespace {

constexpr int state_version = 1;
/// A file with a journal: a tunneld that predates the journal refuses it instead of ignoring it.
constexpr int journal_state_version = 2;

const char* const journal_steps[] = {"pause_writes", "fence", "promote", "follow", "roll_back"};

struct fd_closer {
    int fd;
    ~fd_closer()
    {
        if (fd >= 0) ::close(fd);
    }
};

std::string errno_text(int error)
{
    return std::strerror(error);
}

} // namespace

std::string encode(const state& s)
{
    nlohmann::json services = nlohmann::json::object();
    bool journaled = false;
    for (const auto& [name, record] : s.services) {
        services[name] = {
            {"active", record.split ? "split" : record.active},
            {"side", record.active},
            {"split_percent", record.split ? record.split_percent : 0},
            {"sticky", record.sticky},
            {"fenced", record.fenced},
            {"updated", record.updated},
        };
        if (record.new_fenced) services[name]["new_fenced"] = true;
        if (!record.min_replicas_before_fence.empty())
            services[name]["min_replicas_before_fence"] = record.min_replicas_before_fence;
        if (const auto& j = record.journal) {
            journaled = true;
            nlohmann::json journal = {
                {"id", j->id}, {"from", j->from}, {"to", j->to}, {"mode", j->mode}, {"step", j->step},
            };
            if (j->pause_expires_unix_ms) journal["pause_expires_unix_ms"] = *j->pause_expires_unix_ms;
            if (j->hook_pgid) journal["hook_pgid"] = *j->hook_pgid;
            services[name]["journal"] = std::move(journal);
        }
    }
    return nlohmann::json{{"version", journaled ? journal_state_version : state_version}, {"services", services}}
               .dump(2) +
           "\n";
}

std::variant<state, std::string> decode(std::string_view text)
{
    const auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return std::string("not valid JSON");
    if (!doc.is_object()) return std::string("not a JSON object");
    const auto version = doc.find("version");
    if (version == doc.end() || !version->is_number_integer() ||
        (version->get<int>() != state_version && version->get<int>() != journal_state_version))
        return fmt::format("missing or unsupported \"version\" (expected {} or {})", state_version,
                           journal_state_version);
    const auto services = doc.find("services");
    if (services == doc.end() || !services->is_object()) return std::string("missing \"services\" object");

    state result;
    for (const auto& [name, entry] : services->items()) {
        if (!entry.is_object()) return fmt::format("service \"{}\": not an object", name);
        service_record record;
        const auto side = entry.value("side", entry.value("active", std::string()));
        if (side != "old" && side != "new")
            return fmt::format("service \"{}\": side must be \"old\" or \"new\", not \"{}\"", name, side);
        record.active = side;
        const auto active = entry.find("active");
        if (active == entry.end() || !active->is_string())
            return fmt::format("service \"{}\": missing \"active\"", name);
        record.split = active->get<std::string>() == "split";
        const auto percent = entry.find("split_percent");
        if (percent != entry.end()) {
            if (!percent->is_number_unsigned() || percent->get<unsigned>() > 100)
                return fmt::format("service \"{}\": split_percent must be 0..100", name);
            record.split_percent = percent->get<unsigned>();
        }
        const auto flag = [&](const char* key, bool& out) -> bool {
            const auto it = entry.find(key);
            if (it == entry.end()) return true;
            if (!it->is_boolean()) return false;
            out = it->get<bool>();
            return true;
        };
        if (!flag("sticky", record.sticky))
            return fmt::format("service \"{}\": sticky must be a boolean", name);
        if (!flag("fenced", record.fenced))
            return fmt::format("service \"{}\": fenced must be a boolean", name);
        if (!flag("new_fenced", record.new_fenced))
            return fmt::format("service \"{}\": new_fenced must be a boolean", name);
        record.updated = entry.value("updated", std::string());
        if (const auto before = entry.find("min_replicas_before_fence"); before != entry.end()) {
            const auto bad = fmt::format("service \"{}\": min_replicas_before_fence must map \"old\"/\"new\" to a count",
                                         name);
            if (!before->is_object()) return bad;
            for (const auto& [which, value] : before->items()) {
                if ((which != "old" && which != "new") || !value.is_number_unsigned() ||
                    value.get<std::uint64_t>() > std::numeric_limits<unsigned>::max())
                    return bad;
                record.min_replicas_before_fence[which] = value.get<unsigned>();
            }
        }
        if (const auto journal = entry.find("journal"); journal != entry.end()) {
            if (!journal->is_object()) return fmt::format("service \"{}\": journal must be an object", name);
            journal_record j;
            const auto text = [&](const char* key, std::string& out) {
                const auto it = journal->find(key);
                if (it == journal->end() || !it->is_string()) return false;
                out = it->get<std::string>();
                return true;
            };
            if (!text("id", j.id) || !text("from", j.from) || !text("to", j.to) || !text("mode", j.mode) ||
                !text("step", j.step))
                return fmt::format("service \"{}\": journal needs id, from, to, mode and step", name);
            const auto is_side = [](const std::string& v) { return v == "old" || v == "new"; };
            if (!is_side(j.from) || !is_side(j.to))
                return fmt::format("service \"{}\": journal from/to must be \"old\" or \"new\"", name);
            if (std::find(std::begin(journal_steps), std::end(journal_steps), j.step) == std::end(journal_steps))
                return fmt::format("service \"{}\": journal step \"{}\" is not one this tunneld knows", name,
                                   j.step);
            if (const auto it = journal->find("pause_expires_unix_ms"); it != journal->end()) {
                if (!it->is_number_integer())
                    return fmt::format("service \"{}\": journal pause_expires_unix_ms must be an integer", name);
                j.pause_expires_unix_ms = it->get<std::int64_t>();
            }
            if (const auto it = journal->find("hook_pgid"); it != journal->end()) {
                if (!it->is_number_integer() || it->get<std::int64_t>() <= 1 ||
                    it->get<std::int64_t>() > std::numeric_limits<int>::max())
                    return fmt::format("service \"{}\": journal hook_pgid must be a process group id", name);
                j.hook_pgid = it->get<int>();
            }
            record.journal = std::move(j);
        }
        result.services.emplace(name, std::move(record));
    }
    return result;
}

std::variant<state, state_error> load_state(const std::filesystem::path& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        if (errno == ENOENT) return state{};
        return state_error{fmt::format("state file {}: {}", path.string(), errno_text(errno))};
    }
    std::ostringstream text;
    text << in.rdbuf();
    auto decoded = decode(text.str());
    if (auto* message = std::get_if<std::string>(&decoded))
        return state_error{fmt::format("state file {} is corrupt: {}; fix or remove it (removing it starts "
                                       "every service on old)",
                                       path.string(), *message)};
    return std::get<state>(std::move(decoded));
}

std::string utc_now()
{
    return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}",
                       fmt::gmtime(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now())));
}

std::optional<std::string> save_state(const std::filesystem::path& path, const state& s)
{
    return write_file_atomically(path, encode(s));
}

std::optional<std::string> write_file_atomically(const std::filesystem::path& path, std::string_view text)
{
    const auto directory = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    const auto temp = directory / (path.filename().string() + ".tmp");
    {
        fd_closer file{::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640)};
        if (file.fd < 0) return fmt::format("cannot write {}: {}", temp.string(), errno_text(errno));
        std::size_t written = 0;
        while (written < text.size()) {
            const ssize_t n = ::write(file.fd, text.data() + written, text.size() - written);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return fmt::format("cannot write {}: {}", temp.string(), errno_text(errno));
            written += static_cast<std::size_t>(n);
        }
        if (::fsync(file.fd) != 0)
            return fmt::format("cannot fsync {}: {}", temp.string(), errno_text(errno));
    }
    if (::rename(temp.c_str(), path.c_str()) != 0)
        return fmt::format("cannot rename {} to {}: {}", temp.string(), path.string(), errno_text(errno));
    // The rename is durable only once the directory entry is on disk.
    fd_closer dir{::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
    if (dir.fd < 0 || ::fsync(dir.fd) != 0)
        return fmt::format("cannot fsync directory {}: {}", directory.string(), errno_text(errno));
    return std::nullopt;
}

} // namespace tunneld::cutover
