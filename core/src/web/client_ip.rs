//! Who the client is when requests come through proxies: the right-most X-Forwarded-For hop that
//! is not one of our proxies, and the bucket key for that address (IPv6 grouped by prefix).

use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::{Error, Result};

/// One IPv6 customer usually holds a whole /64, so counting single addresses would let them rotate
/// through 2^64 buckets.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// Longer than any address with brackets, zone and port; anything longer is not an address, and
/// refusing it early keeps the parser's work bounded.
const MAX_ADDR_LEN: usize = 100;

/// Which peers are our own proxies, and how IPv6 clients are grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIpRule {
    trusted: Vec<IpNet>,
    ipv6_prefix: u8,
}

/// The client of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIp {
    /// The client's address (IPv4-mapped IPv6 shown as IPv4); `None` only when the peer itself
    /// is unparseable.
    pub ip: Option<IpAddr>,
    /// `"ip:1.2.3.4"`, `"ip:2001:db8:1:2::/64"`, or `"ip:unknown"`.
    pub key: String,
    /// X-Forwarded-For was sent but the peer is not a trusted proxy, so it was ignored.
    pub forwarded_for_ignored: bool,
}

impl Default for ClientIpRule {
    /// No trusted proxies: the socket peer is the client.
    fn default() -> Self {
        ClientIpRule { trusted: Vec::new(), ipv6_prefix: DEFAULT_IPV6_PREFIX }
    }
}

impl ClientIpRule {
    /// `trusted_proxies`: CIDR blocks or single addresses of our proxies ("10.0.0.0/8",
    /// "127.0.0.1", "::1"). `ipv6_prefix`: how many leading bits of an IPv6 address name one
    /// client (1..=128; [`DEFAULT_IPV6_PREFIX`] is 64).
    pub fn new<S: AsRef<str>>(trusted_proxies: &[S], ipv6_prefix: u8) -> Result<Self> {
        if !(1..=128).contains(&ipv6_prefix) {
            return Err(Error::config("IPv6 prefix length", ipv6_prefix, "must be between 1 and 128"));
        }
        let trusted = trusted_proxies.iter().map(|s| parse_trusted(s.as_ref())).collect::<Result<Vec<_>>>()?;
        Ok(ClientIpRule { trusted, ipv6_prefix })
    }

    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted
    }

    pub fn ipv6_prefix(&self) -> u8 {
        self.ipv6_prefix
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// `peer`: the socket peer ("1.2.3.4", "::ffff:1.2.3.4", "[::1]:5000", "1.2.3.4:80").
    /// `forwarded_for`: every X-Forwarded-For value, joined with ",".
    pub fn client_ip(&self, peer: &str, forwarded_for: Option<&str>) -> ClientIp {
        let sent_xff = forwarded_for.is_some_and(|v| v.split(',').any(|e| !e.trim().is_empty()));
        let Some(peer_ip) = parse_addr(peer) else {
            return ClientIp { ip: None, key: "ip:unknown".into(), forwarded_for_ignored: sent_xff };
        };
        if !self.is_trusted(peer_ip) {
            // Anyone can send the header; only our own proxies' word counts.
            return self.client(peer_ip, sent_xff);
        }
        // Each proxy appends the address it saw, so reading right to left, every entry up to the
        // first address that is not ours was written by a machine we trust. Everything left of
        // that was written by the client and may be forged.
        let mut client = peer_ip;
        for entry in forwarded_for.unwrap_or("").rsplit(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue; // an artefact of joining several header lines, not a hop
            }
            match parse_addr(entry) {
                Some(ip) if self.is_trusted(ip) => client = ip,
                Some(ip) => {
                    client = ip;
                    break;
                }
                // A trusted proxy would not write garbage, so it came from the client: stop at
                // the last hop we can vouch for rather than trust anything beyond it.
                None => break,
            }
        }
        self.client(client, false)
    }

    fn client(&self, ip: IpAddr, forwarded_for_ignored: bool) -> ClientIp {
        ClientIp { ip: Some(ip), key: self.key_for(ip), forwarded_for_ignored }
    }

    /// The bucket key of an address: IPv4 as is, IPv6 truncated to the configured prefix.
    pub fn key_for(&self, ip: IpAddr) -> String {
        match canonical(ip) {
            IpAddr::V4(v4) => format!("ip:{v4}"),
            IpAddr::V6(v6) => match Ipv6Net::new(v6, self.ipv6_prefix) {
                Ok(net) => format!("ip:{}", net.trunc()),
                Err(_) => format!("ip:{v6}/128"),
            },
        }
    }
}

/// Dual-stack sockets report IPv4 clients as `::ffff:a.b.c.d`; they are the same client as
/// `a.b.c.d` and must share its bucket and its trust.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if v6.prefix_len() >= 96 {
            if let Some(v4) = v6.network().to_ipv4_mapped() {
                if let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(n);
                }
            }
        }
    }
    net
}

fn parse_trusted(entry: &str) -> Result<IpNet> {
    let s = entry.trim();
    let bad = || Error::config("trusted proxy", entry, "expected an IP address or a CIDR block such as \"10.0.0.0/8\"");
    let net = if s.contains('/') {
        s.parse::<IpNet>().map_err(|_| bad())?
    } else {
        IpNet::from(parse_addr(s).ok_or_else(bad)?)
    };
    Ok(canonical_net(net.trunc()))
}

/// An address as sockets and proxies write it, with or without port, brackets or IPv6 zone.
pub(crate) fn parse_addr(raw: &str) -> Option<IpAddr> {
    let s = raw.trim();
    if s.is_empty() || s.len() > MAX_ADDR_LEN {
        return None;
    }
    let ip = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        IpAddr::V6(parse_v6(host)?)
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        ip
    } else if s.matches(':').count() == 1 {
        let (host, port) = s.split_once(':')?;
        if !is_port(port) {
            return None;
        }
        IpAddr::V4(host.parse().ok()?)
    } else {
        IpAddr::V6(parse_v6(s)?)
    };
    Some(canonical(ip))
}

/// Link-local addresses may carry a zone ("fe80::1%eth0"); the zone names our interface, not
/// the client.
fn parse_v6(s: &str) -> Option<Ipv6Addr> {
    s.split_once('%').map_or(s, |(addr, _)| addr).parse().ok()
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROXIES: &[&str] = &["10.0.0.0/8", "127.0.0.1", "::1", "2001:db8:ffff::/48"];

    #[test]
    fn client_ip_table() {
        // (case, peer, X-Forwarded-For, expected key, expected forwarded_for_ignored)
        let cases: &[(&str, &str, Option<&str>, &str, bool)] = &[
            ("direct, no header", "1.2.3.4", None, "ip:1.2.3.4", false),
            ("forged XFF from an untrusted peer is ignored", "1.2.3.4", Some("9.9.9.9"), "ip:1.2.3.4", true),
            ("blank XFF is not a warning", "1.2.3.4", Some(" , "), "ip:1.2.3.4", false),
            ("trusted peer, one hop", "10.0.0.5", Some("203.0.113.7"), "ip:203.0.113.7", false),
            (
                "right-most untrusted through two trusted hops; forged left-most ignored",
                "10.0.0.5",
                Some("6.6.6.6, 203.0.113.7, 10.1.1.1, 127.0.0.1"),
                "ip:203.0.113.7",
                false,
            ),
            ("every hop trusted: left-most", "10.0.0.5", Some("10.9.9.9, 10.1.1.1"), "ip:10.9.9.9", false),
            ("trusted peer without XFF is the client", "127.0.0.1", None, "ip:127.0.0.1", false),
            (
                "garbage stops the walk at the last trusted hop",
                "10.0.0.5",
                Some("1.1.1.1, nonsense, 10.2.2.2"),
                "ip:10.2.2.2",
                false,
            ),
            ("garbage right after the peer: the peer", "10.0.0.5", Some("1.1.1.1, unknown"), "ip:10.0.0.5", false),
            ("empty entries are skipped", "10.0.0.5", Some("203.0.113.7,, ,"), "ip:203.0.113.7", false),
            ("several header lines joined", "10.0.0.5", Some("6.6.6.6,203.0.113.7,10.1.1.1"), "ip:203.0.113.7", false),
            ("entry with port", "10.0.0.5", Some("203.0.113.7:51000"), "ip:203.0.113.7", false),
            (
                "IPv6 entry with brackets and port",
                "10.0.0.5",
                Some("[2001:db8:1:2::99]:443"),
                "ip:2001:db8:1:2::/64",
                false,
            ),
            ("IPv6 grouped by /64", "2001:db8:1:2:aaaa:bbbb:cccc:dddd", None, "ip:2001:db8:1:2::/64", false),
            ("IPv6 peer with port", "[2001:db8:1:2::1]:5000", None, "ip:2001:db8:1:2::/64", false),
            ("IPv6 zone is dropped", "fe80::1%eth0", None, "ip:fe80::/64", false),
            ("IPv4-mapped peer is IPv4", "::ffff:1.2.3.4", None, "ip:1.2.3.4", false),
            ("IPv4-mapped peer is trusted as IPv4", "::ffff:10.0.0.5", Some("203.0.113.7"), "ip:203.0.113.7", false),
            ("IPv4-mapped XFF entry", "10.0.0.5", Some("::ffff:203.0.113.7"), "ip:203.0.113.7", false),
            ("IPv4 peer with port", "1.2.3.4:80", None, "ip:1.2.3.4", false),
            (
                "trusted IPv6 proxy by CIDR",
                "2001:db8:ffff:1::2",
                Some("2001:db8:5:6::7"),
                "ip:2001:db8:5:6::/64",
                false,
            ),
            ("trusted ::1 with port", "[::1]:8080", Some("198.51.100.1"), "ip:198.51.100.1", false),
            ("unparseable peer", "unix:/run/app.sock", None, "ip:unknown", false),
            ("unparseable peer, XFF ignored", "", Some("1.2.3.4"), "ip:unknown", true),
            ("leading zeros are not an address", "10.0.0.5", Some("01.2.3.4"), "ip:10.0.0.5", false),
            ("bad port", "1.2.3.4:http", None, "ip:unknown", false),
        ];
        let rule = ClientIpRule::new(PROXIES, 64).unwrap();
        for (case, peer, xff, key, ignored) in cases {
            let got = rule.client_ip(peer, *xff);
            assert_eq!((got.key.as_str(), got.forwarded_for_ignored), (*key, *ignored), "{case}");
            assert_eq!(got.ip.is_none(), *key == "ip:unknown", "{case}");
        }
    }

    #[test]
    fn ipv6_prefixes() {
        let ip = "2001:db8:1:2:3:4:5:6";
        for (prefix, key) in [
            (64, "ip:2001:db8:1:2::/64"),
            (48, "ip:2001:db8:1::/48"),
            (56, "ip:2001:db8:1::/56"),
            (128, "ip:2001:db8:1:2:3:4:5:6/128"),
        ] {
            let rule = ClientIpRule::new::<&str>(&[], prefix).unwrap();
            assert_eq!(rule.client_ip(ip, None).key, key, "/{prefix}");
        }
        // The address itself is kept whole; only the key is grouped.
        let got = ClientIpRule::default().client_ip(ip, None);
        assert_eq!(got.ip, Some(ip.parse().unwrap()));
    }

    #[test]
    fn mapped_trusted_cidr_covers_ipv4_peers() {
        let rule = ClientIpRule::new(&["::ffff:10.0.0.0/104"], 64).unwrap();
        assert_eq!(rule.trusted_proxies(), &["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert_eq!(rule.client_ip("10.3.3.3", Some("203.0.113.9")).key, "ip:203.0.113.9");
    }

    #[test]
    fn bad_config_names_the_value() {
        for (entry, prefix) in [("10.0.0.0/33", 64), ("not-an-ip", 64), ("", 64), ("1.2.3.4/x", 64)] {
            let err = ClientIpRule::new(&[entry], prefix).expect_err(entry);
            assert!(err.to_string().contains(&format!("{entry:?}")), "{err}");
            assert_eq!(err.kind(), crate::ErrorKind::Config);
        }
        for prefix in [0, 129] {
            let err = ClientIpRule::new::<&str>(&[], prefix).expect_err("prefix");
            assert!(err.to_string().contains(&format!("\"{prefix}\"")), "{err}");
        }
    }
}
