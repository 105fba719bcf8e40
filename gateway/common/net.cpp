#include "gateway/common/net.hpp"

#include <netinet/in.h>

namespace gateway {

std::optional<sockaddr_storage> to_sockaddr(const conf::HostPort& hp) {
    sockaddr_storage ss{};
    if (uv_ip4_addr(hp.host.c_str(), hp.port, reinterpret_cast<sockaddr_in*>(&ss)) == 0) return ss;
    if (uv_ip6_addr(hp.host.c_str(), hp.port, reinterpret_cast<sockaddr_in6*>(&ss)) == 0) return ss;
    return std::nullopt;
}

std::optional<conf::IpAddress> peer_address(const uv_tcp_t* tcp) {
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
    return conf::IpAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

std::optional<int> local_port(const uv_tcp_t* tcp) {
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv_tcp_getsockname(tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
    if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    return std::nullopt;
}

std::string uv_text(int err) {
    switch (err) {
    case UV_ECONNREFUSED: return "Connection refused";
    case UV_ETIMEDOUT: return "Connection timed out";
    case UV_EHOSTUNREACH: return "No route to host";
    case UV_ENETUNREACH: return "Network is unreachable";
    case UV_ECONNRESET: return "Connection reset by peer";
    case UV_EADDRINUSE: return "Address already in use";
    case UV_EACCES: return "Permission denied";
    case UV_EADDRNOTAVAIL: return "Cannot assign requested address";
    default: return uv_strerror(err);
    }
}

}  // namespace gateway
