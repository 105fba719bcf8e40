// Small parsers for SMTP command lines: verb and arguments, "FROM:"/"TO:" keywords, ESMTP
// parameters (RFC 5321 4.1.2 esmtp-param). Free functions, no state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gateway {

struct CommandParts {
    std::string_view verb;
    std::string_view args;  // after the first space
};

CommandParts split_command(std::string_view line);

// A command line as it may appear in a log: an AUTH initial response is a credential and is
// replaced by "***" (the mechanism name stays).
std::string loggable(const CommandParts& cmd, std::string_view line);

// Matches `keyword` case-insensitively at the start of `args` (leading spaces tolerated);
// `rest` receives what follows.
bool strip_keyword(std::string_view args, std::string_view keyword, std::string_view& rest);

struct Parameter {
    std::string keyword;  // upper-cased
    std::string value;
    bool has_value = false;
    std::string text;  // as given, for replies
};

std::vector<Parameter> split_parameters(std::string_view text);
bool has_parameter(std::string_view text, std::string_view keyword);

std::string_view trim_spaces(std::string_view s);
// "<a@b> SIZE=1" -> "a@b": the address as the client wrote it, for replies.
std::string_view trim_brackets(std::string_view s);
std::optional<uint64_t> parse_decimal(std::string_view s);

// GET, POST, CONNECT and other HTTP methods: a web client or a proxy probe, not SMTP.
bool is_http_verb(std::string_view verb);

}  // namespace gateway
