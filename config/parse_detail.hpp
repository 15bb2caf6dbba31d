#pragma once
// Internal to tunneld_config: what `parse` knows that `load` needs for its file checks.

#include "config/config.hpp"

namespace tunneld::config::detail {

/// A file named in the config, with where its value was written.
struct named_file {
    std::string_view key; ///< "identity" or "known_hosts"
    std::filesystem::path path;
    std::uint32_t line = 0;
    std::uint32_t column = 0;
    bool secret = false; ///< refused when group or others may read or write it, like an identity key
};

struct parse_output {
    load_result result;
    std::vector<named_file> files; ///< every one that parsed, even when other errors were found
};

/// `parse`, also returning the files `load` must check.
parse_output parse_with_files(std::string_view text, const std::filesystem::path& path);

} // namespace tunneld::config::detail
