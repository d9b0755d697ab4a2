//! What a response says about the limits: the IETF `RateLimit-Policy` and `RateLimit` fields
//! (draft-ietf-httpapi-ratelimit-headers-10), the legacy `X-RateLimit-*` trio, `Retry-After`, and
//! the 429 body, for one decision or for several rules that matched one request.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

use crate::decision::{Decision, WindowState};
use crate::error::{Error, Result};

const POLICY: &str = "RateLimit-Policy";
const RATELIMIT: &str = "RateLimit";
const X_LIMIT: &str = "X-RateLimit-Limit";
const X_REMAINING: &str = "X-RateLimit-Remaining";
const X_RESET: &str = "X-RateLimit-Reset";
const RETRY_AFTER: &str = "Retry-After";

/// Structured-field Integers have at most 15 digits (RFC 9651 §3.3.1).
const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

/// Which rate-limit fields a response carries. `Retry-After` is sent on every denial whatever
/// the style: it is plain HTTP (RFC 9110), and clients that know nothing else still honour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderStyle {
    /// `RateLimit-Policy` and `RateLimit`.
    Draft10,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    Legacy,
    Both,
    None,
}

impl HeaderStyle {
    /// `"draft-10"` (or `"draft10"`), `"legacy"`, `"both"`, `"none"`; case and spaces ignored.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "draft-10" | "draft10" => Ok(HeaderStyle::Draft10),
            "legacy" => Ok(HeaderStyle::Legacy),
            "both" => Ok(HeaderStyle::Both),
            "none" => Ok(HeaderStyle::None),
            _ => Err(Error::config("header style", s, "expected draft-10, legacy, both or none")),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            HeaderStyle::Draft10 => "draft-10",
            HeaderStyle::Legacy => "legacy",
            HeaderStyle::Both => "both",
            HeaderStyle::None => "none",
        }
    }

    fn draft(self) -> bool {
        matches!(self, HeaderStyle::Draft10 | HeaderStyle::Both)
    }

    fn legacy(self) -> bool {
        matches!(self, HeaderStyle::Legacy | HeaderStyle::Both)
    }
}

impl fmt::Display for HeaderStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HeaderStyle {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        HeaderStyle::parse(s)
    }
}

/// The headers for one decision: one `RateLimit-Policy` / `RateLimit` member per limit, the
/// legacy trio for the binding limit, and `Retry-After` when denied.
pub fn rate_limit_headers(decision: &Decision, style: HeaderStyle) -> Vec<(&'static str, String)> {
    merged_headers(&[("", decision)], style)
}

/// The headers for several decisions about one request (several rules matched), each with its
/// rule name. Every limit of every decision gets a member; when two members would share a
/// policy name, each is prefixed with its rule name ("login-per-minute"). The legacy trio
/// describes the binding decision (the denied one with the longest wait, else the one with the
/// fewest remaining); `Retry-After` is the longest wait among the denied.
pub fn merged_headers(decisions: &[(&str, &Decision)], style: HeaderStyle) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(6);
    if style.draft() {
        let members: Vec<(&str, &WindowState)> =
            decisions.iter().flat_map(|(rule, d)| d.windows.iter().map(move |w| (*rule, w))).collect();
        // An empty List must not be sent at all (RFC 9651 §3.1).
        if !members.is_empty() {
            let names = unique_names(&members);
            let policy: Vec<String> = members
                .iter()
                .zip(&names)
                .map(|((_, w), name)| {
                    // `w` is whole seconds; a sub-second window still takes a second to refill.
                    let window = ceil_secs(w.limit.window()).max(1);
                    format!("{};q={};w={}", sf_string(name), sf_int(w.limit.max()), sf_int(window))
                })
                .collect();
            let state: Vec<String> = members
                .iter()
                .zip(&names)
                .map(|((_, w), name)| {
                    format!("{};r={};t={}", sf_string(name), sf_int(w.remaining), sf_int(ceil_secs(w.reset_after)))
                })
                .collect();
            out.push((POLICY, policy.join(", ")));
            out.push((RATELIMIT, state.join(", ")));
        }
    }
    if style.legacy() {
        if let Some(d) = binding(decisions) {
            out.push((X_LIMIT, d.limit.to_string()));
            out.push((X_REMAINING, d.remaining.to_string()));
            out.push((X_RESET, ceil_secs(d.reset_after).to_string()));
        }
    }
    if let Some(secs) = decisions.iter().filter(|(_, d)| !d.allowed).map(|(_, d)| retry_secs(d)).max() {
        out.push((RETRY_AFTER, secs.to_string()));
    }
    out
}

/// The 429 body: `{"error":"rate_limited","limit":"5/second","retry_after":1.2}`. `limit` is the
/// limit that denied as written by `Limit`'s Display; `retry_after` is seconds, rounded up to the
/// millisecond so that a client waiting exactly that long gets through.
pub fn limited_body(decision: &Decision) -> String {
    let limit = Value::from(decision.limited_by.map(|l| l.to_string()));
    let retry = Value::from(decision.retry_after.map_or(0.0, secs_to_ms_precision));
    format!(r#"{{"error":"rate_limited","limit":{limit},"retry_after":{retry}}}"#)
}

/// The 429 body for several decisions: that of the denied one with the longest wait, or `None`
/// when every decision allowed the request.
pub fn merged_limited_body(decisions: &[(&str, &Decision)]) -> Option<String> {
    binding(decisions).filter(|d| !d.allowed).map(limited_body)
}

/// The decision a single-limit client should hear about: the denied one with the longest wait
/// (the first on ties), else the one with the fewest remaining (the first on ties).
pub(crate) fn binding<'a>(decisions: &[(&str, &'a Decision)]) -> Option<&'a Decision> {
    let mut denied: Option<&Decision> = None;
    for (_, d) in decisions.iter().filter(|(_, d)| !d.allowed) {
        if denied.is_none_or(|best| d.retry_after > best.retry_after) {
            denied = Some(d);
        }
    }
    denied.or_else(|| decisions.iter().map(|(_, d)| *d).min_by_key(|d| d.remaining))
}

fn unique_names(members: &[(&str, &WindowState)]) -> Vec<String> {
    let base: Vec<String> = members.iter().map(|(_, w)| w.limit.policy_name()).collect();
    let mut names: Vec<String> = members
        .iter()
        .zip(&base)
        .map(|((rule, _), b)| {
            let rule = printable(rule);
            if !rule.is_empty() && base.iter().filter(|x| *x == b).count() > 1 {
                format!("{rule}-{b}")
            } else {
                b.clone()
            }
        })
        .collect();
    // Still equal: the same rule name twice, or one rule with two limits of one window. Number
    // the repeats so that every RateLimit member points at exactly one policy.
    for i in 1..names.len() {
        if names[..i].contains(&names[i]) {
            let mut n = 2;
            let unique = loop {
                let candidate = format!("{}-{n}", names[i]);
                if !names.contains(&candidate) {
                    break candidate;
                }
                n += 1;
            };
            names[i] = unique;
        }
    }
    names
}

/// Rule names come from configuration, but a header value must stay visible ASCII whatever they hold.
fn printable(s: &str) -> String {
    s.trim().chars().map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '_' }).collect()
}

/// A structured-field String (RFC 9651 §3.3.3): quoted, with `"` and `\` escaped.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in printable(s).chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn sf_int(v: u64) -> u64 {
    v.min(SF_INTEGER_MAX)
}

/// Whole seconds, rounded up: a client told "0" while time remains would retry too early.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// `Retry-After` is a delay in whole seconds (RFC 9110 §10.2.3); "0" would invite an immediate
/// retry that is certain to fail, so a denial always says at least 1.
fn retry_secs(d: &Decision) -> u64 {
    ceil_secs(d.retry_after.unwrap_or(d.reset_after)).max(1)
}

fn secs_to_ms_precision(d: Duration) -> f64 {
    d.as_micros().div_ceil(1000) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Source;
    use crate::limit::Limit;

    fn w(limit: &str, remaining: u64, reset_ms: u64, retry_ms: Option<u64>) -> WindowState {
        WindowState {
            limit: Limit::parse(limit).unwrap(),
            remaining,
            reset_after: Duration::from_millis(reset_ms),
            retry_after: retry_ms.map(Duration::from_millis),
        }
    }

    /// A decision as `Decision::from_outcome` builds it: the binding window is the denier with
    /// the longest wait, else the one with the fewest remaining.
    fn decision(windows: Vec<WindowState>) -> Decision {
        let denier =
            (0..windows.len()).filter(|&i| windows[i].retry_after.is_some()).max_by_key(|&i| windows[i].retry_after);
        let allowed = denier.is_none();
        let b = denier.unwrap_or_else(|| (0..windows.len()).min_by_key(|&i| (windows[i].remaining, i)).unwrap_or(0));
        let bw = windows[b].clone();
        Decision {
            allowed,
            limit: bw.limit.max(),
            remaining: bw.remaining,
            reset_after: bw.reset_after,
            retry_after: if allowed { None } else { bw.retry_after },
            limited_by: if allowed { None } else { Some(bw.limit) },
            source: Source::Redis,
            windows,
            at_us: 0,
        }
    }

    fn h(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn single_decision_table() {
        let allowed = decision(vec![w("5/second", 3, 400, None), w("100/minute", 95, 59_200, None)]);
        let denied = decision(vec![w("5/second", 0, 1_000, Some(200)), w("100/minute", 95, 60_000, None)]);
        let odd = decision(vec![w("7/250ms", 6, 250, None), w("5/10s", 4, 9_001, None)]);
        let policy = r#""per-second";q=5;w=1, "per-minute";q=100;w=60"#;
        type Case<'a> = (&'a str, &'a Decision, HeaderStyle, Vec<(&'static str, String)>);
        let cases: Vec<Case> = vec![
            (
                "allowed, draft-10",
                &allowed,
                HeaderStyle::Draft10,
                h(&[(POLICY, policy), (RATELIMIT, r#""per-second";r=3;t=1, "per-minute";r=95;t=60"#)]),
            ),
            (
                "allowed, legacy",
                &allowed,
                HeaderStyle::Legacy,
                h(&[(X_LIMIT, "5"), (X_REMAINING, "3"), (X_RESET, "1")]),
            ),
            (
                "allowed, both",
                &allowed,
                HeaderStyle::Both,
                h(&[
                    (POLICY, policy),
                    (RATELIMIT, r#""per-second";r=3;t=1, "per-minute";r=95;t=60"#),
                    (X_LIMIT, "5"),
                    (X_REMAINING, "3"),
                    (X_RESET, "1"),
                ]),
            ),
            ("allowed, none", &allowed, HeaderStyle::None, vec![]),
            (
                "denied, draft-10 (the contract's example)",
                &denied,
                HeaderStyle::Draft10,
                h(&[
                    (POLICY, policy),
                    (RATELIMIT, r#""per-second";r=0;t=1, "per-minute";r=95;t=60"#),
                    (RETRY_AFTER, "1"),
                ]),
            ),
            (
                "denied, legacy",
                &denied,
                HeaderStyle::Legacy,
                h(&[(X_LIMIT, "5"), (X_REMAINING, "0"), (X_RESET, "1"), (RETRY_AFTER, "1")]),
            ),
            ("denied, none still says Retry-After", &denied, HeaderStyle::None, h(&[(RETRY_AFTER, "1")])),
            (
                "sub-second and multi-second windows",
                &odd,
                HeaderStyle::Draft10,
                h(&[
                    (POLICY, r#""per-250ms";q=7;w=1, "per-10s";q=5;w=10"#),
                    (RATELIMIT, r#""per-250ms";r=6;t=1, "per-10s";r=4;t=10"#),
                ]),
            ),
        ];
        for (case, d, style, want) in cases {
            assert_eq!(rate_limit_headers(d, style), want, "{case}");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_one_second() {
        for (retry_us, want) in
            [(1, "1"), (999_999, "1"), (1_000_000, "1"), (1_000_001, "2"), (1_200_000, "2"), (60_000_000, "60")]
        {
            let mut d = decision(vec![w("1/minute", 0, 60_000, Some(1))]);
            d.retry_after = Some(Duration::from_micros(retry_us));
            let got = rate_limit_headers(&d, HeaderStyle::None);
            assert_eq!(got, h(&[(RETRY_AFTER, want)]), "{retry_us} us");
        }
        // A denial without a retry time (defensive: the core always sets one) still says 1.
        let mut d = decision(vec![w("1/minute", 0, 0, Some(1))]);
        d.retry_after = None;
        assert_eq!(rate_limit_headers(&d, HeaderStyle::None), h(&[(RETRY_AFTER, "1")]));
    }

    #[test]
    fn merged_prefixes_colliding_names_only() {
        let login = decision(vec![w("5/minute", 0, 30_000, Some(12_500))]);
        let api = decision(vec![w("10/second", 9, 100, None), w("100/minute", 50, 20_000, None)]);
        let got = merged_headers(&[("login", &login), ("api", &api)], HeaderStyle::Both);
        assert_eq!(
            got,
            h(&[
                (POLICY, r#""login-per-minute";q=5;w=60, "per-second";q=10;w=1, "api-per-minute";q=100;w=60"#),
                (RATELIMIT, r#""login-per-minute";r=0;t=30, "per-second";r=9;t=1, "api-per-minute";r=50;t=20"#),
                (X_LIMIT, "5"),
                (X_REMAINING, "0"),
                (X_RESET, "30"),
                (RETRY_AFTER, "13"),
            ])
        );
    }

    #[test]
    fn merged_binding_and_retry_after() {
        let a = decision(vec![w("5/second", 0, 1_000, Some(300))]);
        let b = decision(vec![w("20/minute", 0, 40_000, Some(7_100))]);
        let c = decision(vec![w("1000/hour", 10, 3_000_000, None)]);
        let got = merged_headers(&[("a", &a), ("b", &b), ("c", &c)], HeaderStyle::Legacy);
        assert_eq!(got, h(&[(X_LIMIT, "20"), (X_REMAINING, "0"), (X_RESET, "40"), (RETRY_AFTER, "8")]));
        // All allowed: the one with the fewest remaining, no Retry-After.
        let x = decision(vec![w("100/minute", 40, 10_000, None)]);
        let y = decision(vec![w("10/second", 4, 500, None)]);
        let got = merged_headers(&[("x", &x), ("y", &y)], HeaderStyle::Legacy);
        assert_eq!(got, h(&[(X_LIMIT, "10"), (X_REMAINING, "4"), (X_RESET, "1")]));
        assert_eq!(merged_limited_body(&[("x", &x), ("y", &y)]), None);
        assert_eq!(
            merged_limited_body(&[("a", &a), ("b", &b), ("c", &c)]).unwrap(),
            r#"{"error":"rate_limited","limit":"20/minute","retry_after":7.1}"#
        );
    }

    #[test]
    fn names_stay_unique_and_valid_strings() {
        let one = decision(vec![w("1/second", 0, 1_000, Some(1_000))]);
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec!["a\"b", "c\\d"], r#""a\"b-per-second";q=1;w=1, "c\\d-per-second";q=1;w=1"#),
            (vec!["same", "same"], r#""same-per-second";q=1;w=1, "same-per-second-2";q=1;w=1"#),
            (vec!["", ""], r#""per-second";q=1;w=1, "per-second-2";q=1;w=1"#),
            (vec!["caf\u{e9}", "x\r\ny"], r#""caf_-per-second";q=1;w=1, "x__y-per-second";q=1;w=1"#),
        ];
        for (rules, want) in cases {
            let ds: Vec<(&str, &Decision)> = rules.iter().map(|r| (*r, &one)).collect();
            let got = merged_headers(&ds, HeaderStyle::Draft10);
            assert_eq!(got[0], (POLICY, want.to_string()), "{rules:?}");
        }
        // One decision with two limits of the same window.
        let twin = decision(vec![w("5/second", 4, 1_000, None), w("10/second burst 20", 9, 1_000, None)]);
        assert_eq!(
            rate_limit_headers(&twin, HeaderStyle::Draft10)[0].1,
            r#""per-second";q=5;w=1, "per-second-2";q=10;w=1"#
        );
    }

    #[test]
    fn nothing_to_say() {
        for style in [HeaderStyle::Draft10, HeaderStyle::Legacy, HeaderStyle::Both, HeaderStyle::None] {
            assert!(merged_headers(&[], style).is_empty(), "{style}");
        }
        let mut empty = decision(vec![w("1/second", 1, 0, None)]);
        empty.windows.clear();
        assert_eq!(rate_limit_headers(&empty, HeaderStyle::Draft10), vec![]);
    }

    #[test]
    fn limited_bodies() {
        let cases: &[(&str, u64, &str)] = &[
            ("5/second", 1_200_000, r#"{"error":"rate_limited","limit":"5/second","retry_after":1.2}"#),
            ("5/10s", 1, r#"{"error":"rate_limited","limit":"5/10s","retry_after":0.001}"#),
            ("100/minute", 59_000_000, r#"{"error":"rate_limited","limit":"100/minute","retry_after":59.0}"#),
            ("100/minute", 1_234_001, r#"{"error":"rate_limited","limit":"100/minute","retry_after":1.235}"#),
        ];
        for (limit, retry_us, want) in cases {
            let mut d = decision(vec![w(limit, 0, 60_000, Some(1))]);
            d.retry_after = Some(Duration::from_micros(*retry_us));
            let body = limited_body(&d);
            assert_eq!(body, *want);
            let parsed: Value = serde_json::from_str(&body).unwrap();
            assert!(parsed["retry_after"].is_f64());
        }
    }

    #[test]
    fn styles_parse() {
        for (s, style) in [
            ("draft-10", HeaderStyle::Draft10),
            ("draft10", HeaderStyle::Draft10),
            (" Legacy ", HeaderStyle::Legacy),
            ("BOTH", HeaderStyle::Both),
            ("none", HeaderStyle::None),
        ] {
            assert_eq!(HeaderStyle::parse(s).unwrap(), style, "{s}");
            assert_eq!(style.to_string().parse::<HeaderStyle>().unwrap(), style);
        }
        for s in ["", "draft-6", "ietf", "x-ratelimit"] {
            let err = HeaderStyle::parse(s).expect_err(s);
            assert!(err.to_string().contains(&format!("{s:?}")), "{err}");
        }
    }
}
