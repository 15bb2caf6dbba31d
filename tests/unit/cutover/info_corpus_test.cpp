// Runs every file of the INFO parser's fuzz corpus through the fuzz target's own checks, so a
// crash found once (kept in tests/fuzz/corpus/info_parser/) stays fixed without libFuzzer.

#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <iterator>

// Why include the .cpp: the fuzz folder has no library of its own, and the checks must be the same.
#include "../../fuzz/info_parser_fuzz.cpp"

namespace {

TEST(InfoParserCorpus, EveryCorpusFilePassesTheFuzzChecks)
{
    const auto corpus = std::filesystem::path(TUNNELD_SOURCE_DIR) / "tests/fuzz/corpus/info_parser";
    ASSERT_TRUE(std::filesystem::is_directory(corpus)) << corpus;
    std::size_t files = 0;
    for (const auto& entry : std::filesystem::directory_iterator(corpus)) {
        std::ifstream in(entry.path(), std::ios::binary);
        const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        // The target cuts where the first byte says: shifting that byte tries several cuts per file.
        for (std::size_t shift = 0; shift < 256; shift += 17) {
            std::string input = bytes;
            if (!input.empty()) input[0] = static_cast<char>(input[0] + shift);
            LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(input.data()), input.size());
        }
        ++files;
    }
    EXPECT_GE(files, 4u);
}

} // namespace
