//! Who the client is: the TCP peer, unless the peer is a trusted reverse
//! proxy, in which case the address it recorded in the one header the
//! proxies are configured to write (`forwarded_header`: `X-Forwarded-For` by
//! default, or `Forwarded`, RFC 7239). Each proxy appends the address it
//! received the request from, so the list is read from the right and the
//! first hop that is not a trusted proxy is the client; everything left of it
//! was written by the client itself and is ignored (it could say anything).
//!
//! Only that one header is read: a proxy that appends to `X-Forwarded-For`
//! passes a client's own `Forwarded` through untouched (nginx, HAProxy and
//! Envoy all do), so believing the other header would let any client name
//! its own address.
//!
//! The result is what `aws:SourceIp` sees and what per-client limits count.
//!
//! The same proxies say which scheme the client used ([`Scheme`]): behind a
//! TLS-terminating proxy, Berth speaks plain HTTP but the URLs it hands out
//! (`proxyEndpoint`, `downloadUrl`) must say `https://`. That is read from
//! `X-Forwarded-Proto` (with `X-Forwarded-For`) or the `proto=` of
//! `Forwarded`, from a trusted proxy only.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

use crate::config::ForwardedHeader;

/// The addresses of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client: the peer, or the right-most untrusted forwarded hop.
    pub ip: IpAddr,
}

/// The scheme a client reached the registry with: what URLs given back to it use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The reverse proxies whose forwarding header is believed (`--trusted-proxy`),
/// and which header that is (`--forwarded-header`).
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<ipnet::IpNet>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    pub fn new(nets: Vec<ipnet::IpNet>, header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies { nets, header }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request that arrived from `peer` with `headers`.
    pub fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> ClientAddr {
        let mut ip = canonical(peer.ip());
        if self.contains(ip) {
            let hops = forwarded_hops(headers, self.header);
            for hop in hops.iter().rev() {
                match hop {
                    Some(h) => {
                        ip = *h;
                        if !self.contains(*h) {
                            break;
                        }
                    }
                    // An entry a trusted proxy wrote but we cannot read
                    // (`unknown`, an obfuscated name): stop at the last proxy.
                    None => break,
                }
            }
        }
        ClientAddr { peer, ip }
    }

    /// The scheme of a request that arrived from `peer` with `headers`
    /// over TLS (`tls`) or not: HTTPS on a TLS connection; behind a trusted
    /// proxy, what the client-facing proxy recorded (the left-most entry:
    /// each proxy behind it may append its own hop's scheme); else HTTP.
    pub fn scheme(&self, tls: bool, peer: SocketAddr, headers: &HeaderMap) -> Scheme {
        if tls {
            return Scheme::Https;
        }
        if !self.contains(peer.ip()) {
            return Scheme::Http;
        }
        let first = match self.header {
            ForwardedHeader::XForwardedFor => headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim),
            ForwardedHeader::Forwarded => headers
                .get("forwarded")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|element| {
                    element
                        .split(';')
                        .filter_map(|pair| pair.split_once('='))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case("proto"))
                        .map(|(_, v)| v.trim().trim_matches('"'))
                }),
        };
        match first {
            Some(p) if p.eq_ignore_ascii_case("https") => Scheme::Https,
            _ => Scheme::Http,
        }
    }
}

/// The address per-address limits count a client under (connections, body
/// memory, upload sessions with `--auth none`): an IPv4 address, or the /64
/// network of an IPv6 address. One IPv6 host usually holds a whole /64 and
/// can pick a fresh address from it for every connection.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The forwarded-for hops in `header`, left (the original client) to right
/// (the last proxy's peer); `None` for an entry that is not an address.
fn forwarded_hops(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    match header {
        ForwardedHeader::Forwarded => headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| parse_node(v.trim().trim_matches('"')))
            })
            .collect(),
        ForwardedHeader::XForwardedFor => headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| parse_node(s.trim()))
            .collect(),
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:80`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    let inner = s.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies_writing(header: ForwardedHeader, list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            list.iter()
                .map(|s| crate::config::parse_cidr(s).unwrap())
                .collect(),
            header,
        )
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        proxies_writing(ForwardedHeader::XForwardedFor, list)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn client(t: &TrustedProxies, peer: &str, h: &[(&str, &str)]) -> String {
        t.client_addr(peer.parse().unwrap(), &headers(h))
            .ip
            .to_string()
    }

    #[test]
    fn the_scheme_is_tls_or_what_a_trusted_proxy_recorded() {
        let scheme = |t: &TrustedProxies, tls: bool, peer: &str, h: &[(&str, &str)]| {
            t.scheme(tls, peer.parse().unwrap(), &headers(h))
        };
        let xff = proxies(&["10.0.0.0/8"]);
        let proto = [("x-forwarded-proto", "https")];
        assert_eq!(scheme(&xff, true, "203.0.113.9:1", &[]), Scheme::Https);
        assert_eq!(scheme(&xff, false, "203.0.113.9:1", &[]), Scheme::Http);
        // Only a trusted proxy is believed.
        assert_eq!(scheme(&xff, false, "203.0.113.9:1", &proto), Scheme::Http);
        assert_eq!(scheme(&xff, false, "10.0.0.2:1", &proto), Scheme::Https);
        // The client-facing proxy's entry (left-most) decides.
        assert_eq!(
            scheme(
                &xff,
                false,
                "10.0.0.2:1",
                &[("x-forwarded-proto", "https, http")]
            ),
            Scheme::Https
        );
        // Proxies writing `Forwarded`: its proto=, and not X-Forwarded-Proto.
        let fwd = proxies_writing(ForwardedHeader::Forwarded, &["10.0.0.0/8"]);
        assert_eq!(scheme(&fwd, false, "10.0.0.2:1", &proto), Scheme::Http);
        assert_eq!(
            scheme(
                &fwd,
                false,
                "10.0.0.2:1",
                &[(
                    "forwarded",
                    "for=198.51.100.7;proto=HTTPS, for=10.0.0.3;proto=http"
                )]
            ),
            Scheme::Https
        );
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let t = proxies(&["10.0.0.0/8", "::1"]);
        // An untrusted peer's header is ignored.
        assert_eq!(
            client(&t, "203.0.113.9:5000", &[("x-forwarded-for", "1.1.1.1")]),
            "203.0.113.9"
        );
        // Right-most untrusted hop: the client cannot spoof by prepending.
        assert_eq!(
            client(
                &t,
                "10.0.0.2:5000",
                &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.3")]
            ),
            "198.51.100.7"
        );
        // Several header lines are one list.
        assert_eq!(
            client(
                &t,
                "10.0.0.2:1",
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "198.51.100.8")
                ]
            ),
            "198.51.100.8"
        );
        // Behind proxies that write X-Forwarded-For, a `Forwarded` header
        // is the client's own: it is not believed (nor is it merged).
        assert_eq!(
            client(
                &t,
                "10.0.0.2:1",
                &[
                    ("forwarded", "for=10.9.9.9"),
                    ("x-forwarded-for", "198.51.100.7")
                ]
            ),
            "198.51.100.7"
        );
        assert_eq!(
            client(&t, "10.0.0.2:1", &[("forwarded", "for=192.0.2.1")]),
            "10.0.0.2"
        );
        // Proxies configured to write `Forwarded`: only it is read; IPv6
        // with brackets and port.
        let f = proxies_writing(ForwardedHeader::Forwarded, &["10.0.0.0/8", "::1"]);
        assert_eq!(
            client(
                &f,
                "[::1]:1",
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    (
                        "forwarded",
                        "for=192.0.2.60;proto=http, for=\"[2001:db8::17]:4711\""
                    )
                ]
            ),
            "2001:db8::17"
        );
        assert_eq!(
            client(&f, "10.0.0.2:1", &[("x-forwarded-for", "6.6.6.6")]),
            "10.0.0.2"
        );
        // Only trusted hops: the left-most one is as far as we can see.
        assert_eq!(
            client(
                &t,
                "10.0.0.2:1",
                &[("x-forwarded-for", "10.1.1.1, 10.0.0.3")]
            ),
            "10.1.1.1"
        );
        // Garbage written by a proxy stops the walk at that proxy.
        assert_eq!(
            client(&f, "10.0.0.2:1", &[("forwarded", "for=unknown")]),
            "10.0.0.2"
        );
        // No header: the peer.
        assert_eq!(client(&t, "10.0.0.2:1", &[]), "10.0.0.2");
        // IPv4-mapped peers match IPv4 ranges.
        assert!(t.contains("::ffff:10.1.2.3".parse().unwrap()));
        // Limits count IPv6 clients per /64, IPv4 ones per address.
        let key = |s: &str| limit_key(s.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:ffff:1:2:3"), "2001:db8:1:2::");
        assert_eq!(key("::ffff:198.51.100.7"), "198.51.100.7");
        assert_eq!(key("198.51.100.7"), "198.51.100.7");
        assert!(!proxies(&[]).contains("10.1.2.3".parse().unwrap()));
    }
}
