//! Which addresses a report may be posted to (RELIABILITY fault 27): a sink URL
//! comes from the config, but a name can resolve anywhere, and a report posted to
//! loopback, a private network or a cloud metadata endpoint turns the daemon into
//! a proxy into places it should not reach.
//!
//! The check is on the address actually connected to: [`GuardedResolver`] is
//! reqwest's resolver and returns only permitted addresses, and [`check_url`]
//! checks hosts that are IP literals, for which reqwest resolves nothing. Both
//! are skipped when the report sets `allow_private_targets: true`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why `ip` may not receive reports, or `None` if it is a public address.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_broadcast() => "broadcast",
        (0, _, _) => "\"this network\" (0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) => "private",
        (172, 16..=31, _) => "private",
        (192, 168, _) => "private",
        (169, 254, _) => "link-local (cloud metadata)",
        (100, 64..=127, _) => "carrier-grade NAT (100.64.0.0/10)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (192, 88, 99) => "6to4 relay anycast",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved (240.0.0.0/4)",
        _ => return None,
    };
    Some(reason)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let embedded_v4 = || {
        let [.., a, b, c, d] = ip.octets();
        Ipv4Addr::new(a, b, c, d)
    };
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // IPv4-mapped (::ffff:a.b.c.d) and the deprecated IPv4-compatible (::a.b.c.d)
    // forms reach the embedded IPv4 address: judge that one.
    if segments[..5] == [0; 5] && (segments[5] == 0xffff || segments[5] == 0) {
        return forbidden_v4(embedded_v4()).or(if segments[5] == 0 {
            Some("IPv4-compatible (deprecated)")
        } else {
            None
        });
    }
    // IPv4-translated (::ffff:0:a.b.c.d, ::ffff:0:0/96, SIIT) reaches the
    // embedded IPv4 address too.
    if segments[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return forbidden_v4(embedded_v4());
    }
    // NAT64 (64:ff9b::/96) translates to the embedded IPv4 address.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded_v4());
    }
    // Local-use NAT64 (64:ff9b:1::/48, RFC 8215): a translator inside the
    // operator's network, with the IPv4 address at a prefix-dependent place.
    if segments[..3] == [0x64, 0xff9b, 1] {
        return Some("local-use NAT64 (64:ff9b:1::/48)");
    }
    let reason = match segments[0] {
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local (deprecated)",
        0xfc00..=0xfdff => "unique local (fc00::/7)",
        0xff00..=0xffff => "multicast",
        0x0100 if segments[1..4] == [0, 0, 0] => "discard-only (100::/64)",
        0x2001 if segments[1] == 0x0db8 => "documentation",
        // IETF protocol assignments: Teredo, benchmarking (2001:2::/48), ORCHID.
        0x2001 if segments[1] < 0x0200 => "IETF protocol assignments (2001::/23)",
        // 6to4 embeds an IPv4 address that the relay reaches.
        0x2002 => {
            let [a, b] = segments[1].to_be_bytes();
            let [c, d] = segments[2].to_be_bytes();
            return forbidden_v4(Ipv4Addr::new(a, b, c, d)).map(|_| "6to4 of a non-public address");
        }
        0x3fff if segments[1] < 0x1000 => "documentation",
        _ => return None,
    };
    Some(reason)
}

/// A sink's host that is an IP literal, judged before sending: reqwest connects
/// to literals without asking the resolver. `url` is parsed the way reqwest
/// parses it, so `http://2130706433/` or `http://0x7f.1/` are seen as the
/// 127.0.0.1 they are. Names are left to [`GuardedResolver`].
pub fn check_literal(url: &reqwest::Url) -> Result<(), String> {
    // The URL parser has already normalised IPv4 forms to dotted quads; IPv6
    // literals keep their brackets.
    let host = url.host_str().ok_or("the URL has no host")?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let Ok(ip) = host.parse::<IpAddr>() else {
        return Ok(());
    };
    match forbidden(ip) {
        Some(reason) => Err(format!(
            "address {ip} is {reason}; set allow_private_targets: true to allow it"
        )),
        None => Ok(()),
    }
}

/// reqwest's resolver for sinks: resolves with tokio (the system resolver) and
/// returns only addresses [`forbidden`] accepts, so the connection can only go
/// to one of them. A name with no permitted address fails, naming the name and
/// the addresses refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
                .into_iter()
                .partition(|addr| forbidden(addr.ip()).is_none());
            if allowed.is_empty() {
                let refused: Vec<String> = refused
                    .iter()
                    .map(|a| format!("{} ({})", a.ip(), forbidden(a.ip()).unwrap_or("no address")))
                    .collect();
                return Err(Refused(format!(
                    "host {host} resolves to no public address ({}); set allow_private_targets: true to allow it",
                    if refused.is_empty() {
                        "none at all".to_owned()
                    } else {
                        refused.join(", ")
                    }
                ))
                .into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The resolver's refusal, found again in reqwest's error chain to tell a refused
/// address (never retried) from a failed connection.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_refused() {
        let refused = [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("100.64.0.1", "carrier-grade NAT (100.64.0.0/10)"),
            ("100.127.255.254", "carrier-grade NAT (100.64.0.0/10)"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "\"this network\" (0.0.0.0/8)"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved (240.0.0.0/4)"),
            ("192.0.2.10", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.1", "documentation"),
            ("198.18.0.1", "benchmarking (198.18.0.0/15)"),
            ("192.0.0.8", "IETF protocol assignments (192.0.0.0/24)"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("::8.8.8.8", "IPv4-compatible (deprecated)"),
            ("64:ff9b::a9fe:a9fe", "link-local (cloud metadata)"),
            ("::ffff:0:7f00:1", "loopback"),
            ("::ffff:0:a9fe:a9fe", "link-local (cloud metadata)"),
            ("::ffff:0:a00:1", "private"),
            ("64:ff9b:1::a9fe:a9fe", "local-use NAT64 (64:ff9b:1::/48)"),
            (
                "64:ff9b:1:ffff::808:808",
                "local-use NAT64 (64:ff9b:1::/48)",
            ),
            ("2002:7f00:1::", "6to4 of a non-public address"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fd00::1", "unique local (fc00::/7)"),
            ("fc00::1", "unique local (fc00::/7)"),
            ("fd00:ec2::254", "unique local (fc00::/7)"),
            ("fec0::1", "site-local (deprecated)"),
            ("ff02::1", "multicast"),
            ("100::1", "discard-only (100::/64)"),
            ("2001:db8::1", "documentation"),
            ("2001:2::1", "IETF protocol assignments (2001::/23)"),
            ("2001::1", "IETF protocol assignments (2001::/23)"),
        ];
        for (ip, reason) in refused {
            let parsed: IpAddr = ip.parse().expect("an address");
            assert_eq!(forbidden(parsed), Some(reason), "{ip}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "52.95.110.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "169.253.1.1",
            "192.169.0.1",
            "198.20.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4007:80f::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "::ffff:0:808:808",
            "2002:808:808::1",
            "2001:4860:4860::8888",
        ] {
            let parsed: IpAddr = ip.parse().expect("an address");
            assert_eq!(forbidden(parsed), None, "{ip}");
        }
    }

    #[test]
    fn literals_are_judged_as_reqwest_reads_them() {
        for url in [
            "http://127.0.0.1:8080/x",
            "http://2130706433/x",
            "http://0x7f.1/x",
            "http://0177.0.0.1/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://[::ffff:7f00:1]/x",
            "https://169.254.169.254/latest/meta-data",
            "http://[fd00::1]/",
        ] {
            let parsed = reqwest::Url::parse(url).expect("a URL");
            let e = check_literal(&parsed).expect_err(url);
            assert!(e.contains("allow_private_targets"), "{e}");
        }
        for url in [
            "https://hooks.slack.com/services/x",
            "http://8.8.8.8/",
            "http://[2606:4700::1]/",
        ] {
            check_literal(&reqwest::Url::parse(url).expect("a URL")).expect(url);
        }
    }

    #[tokio::test]
    async fn names_resolving_only_to_private_addresses_are_refused() {
        let name: Name = "localhost".parse().expect("a name");
        let error = match GuardedResolver.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        };
        assert!(
            error.starts_with("host localhost resolves to no public address"),
            "{error}"
        );
        assert!(error.contains("loopback"), "{error}");
    }
}
