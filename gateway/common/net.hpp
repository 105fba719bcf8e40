// libuv network helpers: addresses in and out of sockaddr, errors as text.
#pragma once

#include "conf/cidr.hpp"
#include "conf/config.hpp"

#include <uv.h>

#include <optional>
#include <string>

namespace gateway {

std::optional<sockaddr_storage> to_sockaddr(const conf::HostPort& hp);
std::optional<conf::IpAddress> peer_address(const uv_tcp_t* tcp);
std::optional<int> local_port(const uv_tcp_t* tcp);
// "Connection refused": libuv's description of an error code, as the log shows it.
std::string uv_text(int err);

}  // namespace gateway
