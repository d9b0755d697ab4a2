//! Who the client is when requests come through proxies: the right-most X-Forwarded-For (or RFC
//! 7239 `Forwarded: for=`) hop that is not one of our proxies, and the bucket keys for that address
//! (IPv6 grouped by prefix; optional network aggregates such as an IPv4 /24 or an IPv6 /48).

use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::{Error, Result};

/// One IPv6 customer usually holds a whole /64, so counting single addresses would let them rotate
/// through 2^64 buckets.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// Longer than any address with brackets, zone and port; anything longer is not an address, and
/// refusing it early keeps the parser's work bounded.
const MAX_ADDR_LEN: usize = 100;

/// Forwarded header elements read per request; a longer chain is cut at its right-most entries
/// (the ones our proxies wrote), which keeps the parse bounded whatever a client sends.
const MAX_FORWARDED_ELEMENTS: usize = 64;

/// What adapters pass as the peer of a unix-domain socket, which has no address: `"unix:"`,
/// optionally followed by the socket's path.
pub const UNIX_PEER: &str = "unix:";

/// Which header our proxies write the client chain into. Only that one is read: a client can
/// always send the other one itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711";proto=https`.
    Forwarded,
}

impl ForwardedHeader {
    /// `"x-forwarded-for"` or `"forwarded"`, case-insensitive.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            _ => Err(Error::config("forwarded header", s, "expected \"x-forwarded-for\" or \"forwarded\"")),
        }
    }

    /// The header's name in lower case, as adapters look it up.
    pub fn name(&self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// Which peers are our own proxies, which header they write, and how IPv6 clients are grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIpRule {
    trusted: Vec<IpNet>,
    ipv6_prefix: u8,
    header: ForwardedHeader,
    trust_unix_socket: bool,
}

/// The client of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIp {
    /// The client's address (IPv4-mapped IPv6 shown as IPv4); `None` only when the peer itself
    /// is unparseable.
    pub ip: Option<IpAddr>,
    /// `"ip:1.2.3.4"`, `"ip:2001:db8:1:2::/64"`, or `"ip:unknown"`.
    pub key: String,
    /// The forwarding header was sent but the peer is not a trusted proxy, so it was ignored.
    pub forwarded_for_ignored: bool,
}

impl ClientIp {
    /// The bucket of the client's network: `ip:203.0.113.0/24` for `(V4, 24)`. None when the
    /// client is of the other family (or unknown): such a rule does not apply to it.
    pub fn network_key(&self, family: IpFamily, prefix: u8) -> Option<String> {
        match (self.ip?, family) {
            (IpAddr::V4(v4), IpFamily::V4) => Ipv4Net::new(v4, prefix).ok().map(|n| format!("ip:{}", n.trunc())),
            (IpAddr::V6(v6), IpFamily::V6) => Ipv6Net::new(v6, prefix).ok().map(|n| format!("ip:{}", n.trunc())),
            _ => None,
        }
    }
}

/// An address family, for network aggregate keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn max_prefix(&self) -> u8 {
        match self {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        }
    }
}

impl Default for ClientIpRule {
    /// No trusted proxies: the socket peer is the client.
    fn default() -> Self {
        ClientIpRule {
            trusted: Vec::new(),
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            header: ForwardedHeader::default(),
            trust_unix_socket: false,
        }
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
        Ok(ClientIpRule { trusted, ipv6_prefix, ..ClientIpRule::default() })
    }

    /// Read the client chain from this header instead of X-Forwarded-For.
    pub fn with_forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Treat a unix-socket peer ([`UNIX_PEER`]) as a trusted proxy: a local proxy (nginx,
    /// a sidecar) then names the client in the forwarding header. Off, a unix-socket peer is
    /// one unknown client, `ip:unknown`, and its header is ignored.
    pub fn with_trust_unix_socket(mut self, trust: bool) -> Self {
        self.trust_unix_socket = trust;
        self
    }

    pub fn forwarded_header(&self) -> ForwardedHeader {
        self.header
    }

    pub fn trusts_unix_socket(&self) -> bool {
        self.trust_unix_socket
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

    /// `peer`: the socket peer ("1.2.3.4", "::ffff:1.2.3.4", "[::1]:5000", "1.2.3.4:80", or
    /// [`UNIX_PEER`]). `forwarded`: every value of the configured forwarding header (X-Forwarded-For
    /// by default, else `Forwarded`), joined with ",".
    pub fn client_ip(&self, peer: &str, forwarded: Option<&str>) -> ClientIp {
        let entries = match self.header {
            ForwardedHeader::XForwardedFor => xff_entries(forwarded.unwrap_or("")),
            ForwardedHeader::Forwarded => forwarded_entries(forwarded.unwrap_or("")),
        };
        let sent = !entries.is_empty();
        let peer_ip = parse_addr(peer);
        let trusted_peer = match peer_ip {
            Some(ip) => self.is_trusted(ip),
            None => self.trust_unix_socket && peer.trim_start().starts_with(UNIX_PEER),
        };
        if !trusted_peer {
            // Anyone can send the header; only our own proxies' word counts.
            return match peer_ip {
                Some(ip) => self.client(ip, sent),
                None => ClientIp { ip: None, key: "ip:unknown".into(), forwarded_for_ignored: sent },
            };
        }
        // Each proxy appends the address it saw, so reading right to left, every entry up to the
        // first address that is not ours was written by a machine we trust. Everything left of
        // that was written by the client and may be forged.
        let mut client = peer_ip;
        for entry in entries.into_iter().rev() {
            match entry {
                Some(ip) if self.is_trusted(ip) => client = Some(ip),
                Some(ip) => {
                    client = Some(ip);
                    break;
                }
                // Garbage, "unknown" or an obfuscated "_hidden" name: the hop we trust could not
                // or would not name its client, so stop at that hop rather than believe anything
                // further left.
                None => break,
            }
        }
        match client {
            Some(ip) => self.client(ip, false),
            None => ClientIp { ip: None, key: "ip:unknown".into(), forwarded_for_ignored: false },
        }
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

/// X-Forwarded-For entries left to right; None for an entry that is not an address. Empty entries
/// are an artefact of joining several header lines, not hops.
fn xff_entries(value: &str) -> Vec<Option<IpAddr>> {
    let mut out: Vec<Option<IpAddr>> = value
        .rsplit(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .take(MAX_FORWARDED_ELEMENTS)
        .map(parse_addr)
        .collect();
    out.reverse();
    out
}

/// RFC 7239 elements left to right, each as its `for=` address; None for an element without one,
/// with an "unknown" or obfuscated ("_hidden") node, or that does not parse. Elements are split on
/// commas outside quoted strings, so a quoted "," or ";" cannot make up a hop.
fn forwarded_entries(value: &str) -> Vec<Option<IpAddr>> {
    // An unclosed quote leaves the rest as one element, which then fails to parse: a stop.
    let elements = split_outside_quotes(value, ',');
    let mut out: Vec<Option<IpAddr>> = elements
        .into_iter()
        .rev()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .take(MAX_FORWARDED_ELEMENTS)
        .map(forwarded_for)
        .collect();
    out.reverse();
    out
}

/// The `for=` node of one element (`for=192.0.2.60;proto=http;by=203.0.113.43`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let mut found = None;
    for pair in split_outside_quotes(element, ';') {
        if pair.trim().is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            continue;
        }
        if found.is_some() {
            return None; // a parameter may appear once per element
        }
        let value = value.trim();
        let node = match value.strip_prefix('"') {
            Some(rest) => rest.strip_suffix('"').filter(|v| !v.contains(['"', '\\']))?,
            None => value,
        };
        if node.eq_ignore_ascii_case("unknown") || node.starts_with('_') {
            return None;
        }
        found = Some(parse_addr(node)?);
    }
    found
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
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
    fn forwarded_table() {
        // (case, peer, Forwarded, expected key, expected forwarded_for_ignored)
        let cases: &[(&str, &str, Option<&str>, &str, bool)] = &[
            ("direct, no header", "1.2.3.4", None, "ip:1.2.3.4", false),
            ("forged from an untrusted peer is ignored", "1.2.3.4", Some("for=9.9.9.9"), "ip:1.2.3.4", true),
            ("trusted peer, one hop", "10.0.0.5", Some("for=203.0.113.7"), "ip:203.0.113.7", false),
            ("quoted IPv4 with port", "10.0.0.5", Some("for=\"203.0.113.7:47011\""), "ip:203.0.113.7", false),
            (
                "quoted bracketed IPv6 with port",
                "10.0.0.5",
                Some("for=\"[2001:db8:cafe::17]:4711\""),
                "ip:2001:db8:cafe::/64",
                false,
            ),
            ("quoted bracketed IPv6", "10.0.0.5", Some("For=\"[2001:db8:cafe::17]\""), "ip:2001:db8:cafe::/64", false),
            (
                "other parameters around for, any case",
                "10.0.0.5",
                Some("proto=https;FOR=203.0.113.7;by=10.0.0.5;host=\"a;b,c\""),
                "ip:203.0.113.7",
                false,
            ),
            (
                "right-most untrusted; forged left-most ignored",
                "10.0.0.5",
                Some("for=6.6.6.6, for=203.0.113.7;proto=https, for=10.1.1.1"),
                "ip:203.0.113.7",
                false,
            ),
            (
                "several header lines joined",
                "10.0.0.5",
                Some("for=6.6.6.6,for=203.0.113.7,for=\"[::1]:80\""),
                "ip:203.0.113.7",
                false,
            ),
            (
                "unknown stops at the last trusted hop",
                "10.0.0.5",
                Some("for=6.6.6.6, for=unknown"),
                "ip:10.0.0.5",
                false,
            ),
            (
                "obfuscated stops at the last trusted hop",
                "10.0.0.5",
                Some("for=6.6.6.6, for=_hidden, for=10.2.2.2"),
                "ip:10.2.2.2",
                false,
            ),
            ("quoted obfuscated", "10.0.0.5", Some("for=\"_SEVKISEK\""), "ip:10.0.0.5", false),
            ("element without for is a stop", "10.0.0.5", Some("for=6.6.6.6, proto=https"), "ip:10.0.0.5", false),
            ("for twice in one element is a stop", "10.0.0.5", Some("for=1.1.1.1;for=2.2.2.2"), "ip:10.0.0.5", false),
            ("garbage is a stop", "10.0.0.5", Some("for=6.6.6.6, nonsense"), "ip:10.0.0.5", false),
            (
                "a quoted comma cannot make up a hop",
                "10.0.0.5",
                Some("for=\"6.6.6.6, for=7.7.7.7\""),
                "ip:10.0.0.5",
                false,
            ),
            ("unclosed quote is a stop", "10.0.0.5", Some("for=6.6.6.6, for=\"7.7.7.7"), "ip:10.0.0.5", false),
            ("unquoted IPv6 accepted", "10.0.0.5", Some("for=2001:db8:1:2::9"), "ip:2001:db8:1:2::/64", false),
            ("empty elements are skipped", "10.0.0.5", Some("for=203.0.113.7;, ,"), "ip:203.0.113.7", false),
            ("blank header is not a warning", "1.2.3.4", Some(" , "), "ip:1.2.3.4", false),
            ("an X-Forwarded-For value is not Forwarded", "10.0.0.5", Some("203.0.113.7"), "ip:10.0.0.5", false),
        ];
        let rule = ClientIpRule::new(PROXIES, 64).unwrap().with_forwarded_header(ForwardedHeader::Forwarded);
        for (case, peer, fwd, key, ignored) in cases {
            let got = rule.client_ip(peer, *fwd);
            assert_eq!((got.key.as_str(), got.forwarded_for_ignored), (*key, *ignored), "{case}");
        }
        // The X-Forwarded-For rule does not read Forwarded syntax, and the other way round.
        let xff = ClientIpRule::new(PROXIES, 64).unwrap();
        assert_eq!(xff.client_ip("10.0.0.5", Some("for=203.0.113.7")).key, "ip:10.0.0.5");
    }

    #[test]
    fn forwarded_header_option() {
        assert_eq!(ForwardedHeader::parse(" Forwarded ").unwrap(), ForwardedHeader::Forwarded);
        assert_eq!(ForwardedHeader::parse("X-Forwarded-For").unwrap(), ForwardedHeader::XForwardedFor);
        let err = ForwardedHeader::parse("x-real-ip").unwrap_err();
        assert!(err.to_string().contains("\"x-real-ip\""), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::Config);
    }

    #[test]
    fn unix_socket_peer_table() {
        // (case, trust unix socket, header, peer, value, expected key, expected ignored)
        type Case<'a> = (&'a str, bool, ForwardedHeader, &'a str, Option<&'a str>, &'a str, bool);
        let cases: &[Case] = &[
            ("untrusted unix peer", false, ForwardedHeader::XForwardedFor, "unix:", None, "ip:unknown", false),
            (
                "untrusted unix peer: header ignored",
                false,
                ForwardedHeader::XForwardedFor,
                "unix:/run/app.sock",
                Some("203.0.113.7"),
                "ip:unknown",
                true,
            ),
            (
                "trusted unix peer, X-Forwarded-For",
                true,
                ForwardedHeader::XForwardedFor,
                "unix:/run/app.sock",
                Some("6.6.6.6, 203.0.113.7"),
                "ip:203.0.113.7",
                false,
            ),
            (
                "trusted unix peer through a trusted hop",
                true,
                ForwardedHeader::XForwardedFor,
                "unix:",
                Some("203.0.113.7, 10.1.1.1"),
                "ip:203.0.113.7",
                false,
            ),
            (
                "trusted unix peer, Forwarded",
                true,
                ForwardedHeader::Forwarded,
                "unix:",
                Some("for=\"[2001:db8:1:2::3]:9\""),
                "ip:2001:db8:1:2::/64",
                false,
            ),
            ("trusted unix peer, no header", true, ForwardedHeader::XForwardedFor, "unix:", None, "ip:unknown", false),
            (
                "trusted unix peer, garbage",
                true,
                ForwardedHeader::XForwardedFor,
                "unix:",
                Some("nonsense"),
                "ip:unknown",
                false,
            ),
            (
                "the option trusts unix peers only, not unparseable ones",
                true,
                ForwardedHeader::XForwardedFor,
                "",
                Some("203.0.113.7"),
                "ip:unknown",
                true,
            ),
            (
                "IP peers are unaffected",
                true,
                ForwardedHeader::XForwardedFor,
                "1.2.3.4",
                Some("203.0.113.7"),
                "ip:1.2.3.4",
                true,
            ),
        ];
        for (case, trust, header, peer, value, key, ignored) in cases {
            let rule =
                ClientIpRule::new(PROXIES, 64).unwrap().with_forwarded_header(*header).with_trust_unix_socket(*trust);
            let got = rule.client_ip(peer, *value);
            assert_eq!((got.key.as_str(), got.forwarded_for_ignored), (*key, *ignored), "{case}");
            assert_eq!(got.ip.is_none(), *key == "ip:unknown", "{case}");
        }
    }

    #[test]
    fn network_keys() {
        let rule = ClientIpRule::default();
        let v4 = rule.client_ip("203.0.113.77", None);
        let v6 = rule.client_ip("2001:db8:1:2:3::4", None);
        let unknown = rule.client_ip("unix:", None);
        assert_eq!(v4.network_key(IpFamily::V4, 24).as_deref(), Some("ip:203.0.113.0/24"));
        assert_eq!(v4.network_key(IpFamily::V4, 32).as_deref(), Some("ip:203.0.113.77/32"));
        assert_eq!(v4.network_key(IpFamily::V6, 48), None);
        assert_eq!(v6.network_key(IpFamily::V6, 48).as_deref(), Some("ip:2001:db8:1::/48"));
        assert_eq!(v6.network_key(IpFamily::V6, 32).as_deref(), Some("ip:2001:db8::/32"));
        assert_eq!(v6.network_key(IpFamily::V4, 24), None);
        assert_eq!(unknown.network_key(IpFamily::V4, 24), None);
        // IPv4-mapped clients are IPv4 clients.
        let mapped = rule.client_ip("::ffff:198.51.100.9", None);
        assert_eq!(mapped.network_key(IpFamily::V4, 24).as_deref(), Some("ip:198.51.100.0/24"));
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
