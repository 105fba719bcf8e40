// The libFuzzer entry point every target here defines. Built with SMTPGW_FUZZ=ON (clang) they are
// libFuzzer programs; built otherwise, replay_main.cpp runs the files of the seed corpus through
// the same entry point, so every input kept there is a regression test in the normal suite.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace fuzz {

inline std::string_view bytes(const uint8_t* data, size_t size) { return {reinterpret_cast<const char*>(data), size}; }

}  // namespace fuzz
