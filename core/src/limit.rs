//! Limits as plain data: `Limit { max, window, burst }`, and the one parser for the strings users
//! know from slowapi and `limits` ("10/second", "100 per minute", "5/10s"). Every binding calls it.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest `max` a limit may have. Far above any real rate, and low enough that every count
/// and product in the Lua scripts stays an exact integer in a double (2^53).
pub const MAX_LIMIT: u64 = 1_000_000_000_000;
/// Most limits one limiter checks together: their windows name the identity's Redis key
/// (core/src/keys.rs) and each adds work to every script call.
pub const MAX_LIMITS: usize = 8;
/// Shortest window: the scripts keep time in microseconds, and sub-millisecond windows are noise.
pub const MIN_WINDOW: Duration = Duration::from_millis(1);
/// Longest window: one year. Longer windows make TTLs and counts meaningless.
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

/// At most `max` units per `window`. For the token bucket, `burst` (default `max`) is the bucket
/// size and `max / window` the refill rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "LimitRepr", into = "LimitRepr")]
pub struct Limit {
    max: u64,
    window: Duration,
    burst: Option<u64>,
}

impl Limit {
    /// A validated limit; zero counts and windows outside [`MIN_WINDOW`, `MAX_WINDOW`] are refused.
    pub fn new(max: u64, window: Duration) -> Result<Self> {
        let limit = Limit { max, window, burst: None };
        limit.validate()?;
        Ok(limit)
    }
    pub fn per_second(max: u64) -> Result<Self> {
        Self::new(max, Duration::from_secs(1))
    }
    pub fn per_minute(max: u64) -> Result<Self> {
        Self::new(max, Duration::from_secs(60))
    }
    pub fn per_hour(max: u64) -> Result<Self> {
        Self::new(max, Duration::from_secs(3600))
    }
    pub fn per_day(max: u64) -> Result<Self> {
        Self::new(max, Duration::from_secs(86_400))
    }
    /// Token bucket size; the other algorithms ignore it.
    pub fn with_burst(mut self, burst: u64) -> Result<Self> {
        self.burst = Some(burst);
        self.validate()?;
        Ok(self)
    }

    pub fn max(&self) -> u64 {
        self.max
    }
    pub fn window(&self) -> Duration {
        self.window
    }
    pub fn burst(&self) -> u64 {
        self.burst.unwrap_or(self.max)
    }
    pub(crate) fn window_us(&self) -> u64 {
        self.window.as_micros() as u64
    }

    /// The policy name used in `RateLimit-Policy` headers: "per-second", "per-minute", "per-10s".
    pub fn policy_name(&self) -> String {
        let ms = self.window.as_millis() as u64;
        match ms {
            1_000 => "per-second".into(),
            60_000 => "per-minute".into(),
            3_600_000 => "per-hour".into(),
            86_400_000 => "per-day".into(),
            _ if ms % 86_400_000 == 0 => format!("per-{}d", ms / 86_400_000),
            _ if ms % 3_600_000 == 0 => format!("per-{}h", ms / 3_600_000),
            _ if ms % 60_000 == 0 => format!("per-{}m", ms / 60_000),
            _ if ms % 1_000 == 0 => format!("per-{}s", ms / 1_000),
            _ => format!("per-{ms}ms"),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidLimit { input: self.to_string(), reason });
        if self.max == 0 {
            return bad("the count must be at least 1".into());
        }
        if self.max > MAX_LIMIT {
            return bad(format!("the count must be at most {MAX_LIMIT}"));
        }
        if self.window < MIN_WINDOW {
            return bad("the window must be at least 1 millisecond".into());
        }
        if self.window > MAX_WINDOW {
            return bad("the window must be at most 366 days".into());
        }
        if self.window.subsec_nanos() % 1_000_000 != 0 {
            return bad("the window must be a whole number of milliseconds".into());
        }
        if let Some(b) = self.burst {
            if b == 0 || b > MAX_LIMIT {
                return bad(format!("the burst must be between 1 and {MAX_LIMIT}"));
            }
        }
        Ok(())
    }

    /// Parse one limit: `N/unit`, `N per unit`, `N/Munit`, `N per M units`, optionally followed by
    /// `burst B` (token bucket). Units: ms, s/sec/second, m/min/minute, h/hr/hour, d/day (plurals ok).
    pub fn parse(input: &str) -> Result<Self> {
        let err = |reason: &str| Error::InvalidLimit { input: input.to_string(), reason: reason.to_string() };
        let text = input.trim().to_ascii_lowercase();
        let (text, burst) = match text.split_once("burst") {
            Some((head, tail)) => {
                let b = tail.trim().trim_start_matches(['=', ' ']).trim();
                let b: u64 = b.parse().map_err(|_| err("expected a whole number after `burst`"))?;
                (head.trim().to_string(), Some(b))
            }
            None => (text, None),
        };
        let (count, per) = if let Some((c, p)) = text.split_once('/') {
            (c, p)
        } else if let Some((c, p)) = text.split_once(" per ") {
            (c, p)
        } else {
            return Err(err("expected `N/unit` or `N per unit`, e.g. \"10/second\" or \"100 per minute\""));
        };
        let count = count.trim();
        if count.starts_with('-') {
            return Err(err("the count must be positive"));
        }
        let max: u64 = count.parse().map_err(|_| err("the count is not a whole number"))?;
        let per = per.trim();
        let digits_end = per.find(|c: char| !c.is_ascii_digit()).unwrap_or(per.len());
        let (mult, unit) = per.split_at(digits_end);
        let mult: u64 = if mult.is_empty() {
            1
        } else {
            mult.parse().map_err(|_| err("the window multiplier is not a whole number"))?
        };
        if mult == 0 {
            return Err(err("the window must be longer than zero"));
        }
        let unit_ms: u64 = match unit.trim() {
            "ms" | "msec" | "millisecond" | "milliseconds" => 1,
            "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            "" => return Err(err("missing time unit (second, minute, hour, day)")),
            _ => return Err(err("unknown time unit (expected ms, second, minute, hour or day)")),
        };
        let window_ms = mult.checked_mul(unit_ms).ok_or_else(|| err("the window is too long"))?;
        let limit = Limit { max, window: Duration::from_millis(window_ms), burst };
        limit.validate().map_err(|e| match e {
            Error::InvalidLimit { reason, .. } => Error::InvalidLimit { input: input.to_string(), reason },
            other => other,
        })?;
        Ok(limit)
    }
}

/// Parse several limits: a list of strings, each of which may itself hold `;`- or `,`-separated
/// limits ("5/second; 100/minute"), as the `limits` package accepts.
pub fn parse_limits<S: AsRef<str>>(inputs: &[S]) -> Result<Vec<Limit>> {
    let mut out = Vec::new();
    for input in inputs {
        for part in input.as_ref().split([';', ',']) {
            if part.trim().is_empty() {
                continue;
            }
            out.push(Limit::parse(part)?);
        }
    }
    Ok(out)
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.window.as_millis();
        let (n, unit) = if ms % 86_400_000 == 0 {
            (ms / 86_400_000, "day")
        } else if ms % 3_600_000 == 0 {
            (ms / 3_600_000, "hour")
        } else if ms % 60_000 == 0 {
            (ms / 60_000, "minute")
        } else if ms % 1_000 == 0 {
            (ms / 1_000, "second")
        } else {
            (ms, "ms")
        };
        if n == 1 {
            write!(f, "{}/{}", self.max, unit)?;
        } else {
            let short = match unit {
                "day" => "d",
                "hour" => "h",
                "minute" => "m",
                "second" => "s",
                _ => "ms",
            };
            write!(f, "{}/{}{}", self.max, n, short)?;
        }
        if let Some(b) = self.burst {
            write!(f, " burst {b}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Limit {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Limit::parse(s)
    }
}

/// Serde form: either the string users write, or `{max, window_ms, burst}`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum LimitRepr {
    Text(String),
    Fields {
        max: u64,
        window_ms: u64,
        #[serde(default)]
        burst: Option<u64>,
    },
}

impl TryFrom<LimitRepr> for Limit {
    type Error = Error;
    fn try_from(r: LimitRepr) -> Result<Self> {
        match r {
            LimitRepr::Text(s) => Limit::parse(&s),
            LimitRepr::Fields { max, window_ms, burst } => {
                let l = Limit::new(max, Duration::from_millis(window_ms))?;
                match burst {
                    Some(b) => l.with_burst(b),
                    None => Ok(l),
                }
            }
        }
    }
}

impl From<Limit> for LimitRepr {
    fn from(l: Limit) -> Self {
        LimitRepr::Text(l.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_users_write() {
        let cases: &[(&str, u64, u64, Option<u64>)] = &[
            ("10/second", 10, 1_000, None),
            ("10/s", 10, 1_000, None),
            ("100 per minute", 100, 60_000, None),
            ("1000/hour", 1000, 3_600_000, None),
            ("5/10s", 5, 10_000, None),
            ("5 per 10 seconds", 5, 10_000, None),
            ("70000/day", 70_000, 86_400_000, None),
            ("  7 / 250ms ", 7, 250, None),
            ("10/second burst 20", 10, 1_000, Some(20)),
            ("10/SECOND", 10, 1_000, None),
        ];
        for (input, max, ms, burst) in cases {
            let l = Limit::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((l.max(), l.window().as_millis() as u64, l.burst), (*max, *ms, *burst), "{input}");
        }
    }

    #[test]
    fn bad_strings_name_the_bad_value() {
        for input in
            ["", "ten/second", "0/second", "-5/second", "5/0s", "5/fortnight", "5", "5/", "5/second burst x", "5/400d"]
        {
            let err = Limit::parse(input).expect_err(input);
            assert!(err.to_string().contains(&format!("{input:?}")), "{input}: {err}");
            assert_eq!(err.kind(), crate::ErrorKind::Config);
        }
    }

    #[test]
    fn display_round_trips() {
        for input in ["10/second", "5/10s", "100/minute", "7/250ms", "3/2h", "1/day", "10/second burst 30"] {
            let l = Limit::parse(input).unwrap();
            assert_eq!(Limit::parse(&l.to_string()).unwrap(), l);
            assert_eq!(l.to_string(), input);
        }
    }

    #[test]
    fn several_limits_in_one_string() {
        let ls = parse_limits(&["5/second; 100/minute", "1000/hour"]).unwrap();
        assert_eq!(ls.len(), 3);
        assert_eq!(ls[2], Limit::per_hour(1000).unwrap());
    }

    #[test]
    fn serde_accepts_strings_and_fields() {
        let l: Limit = serde_json::from_str("\"5/second\"").unwrap();
        assert_eq!(l, Limit::per_second(5).unwrap());
        let l: Limit = serde_json::from_str(r#"{"max": 5, "window_ms": 1000}"#).unwrap();
        assert_eq!(l, Limit::per_second(5).unwrap());
        assert!(serde_json::from_str::<Limit>("\"0/second\"").is_err());
        assert_eq!(serde_json::to_string(&l).unwrap(), "\"5/second\"");
    }

    #[test]
    fn policy_names() {
        assert_eq!(Limit::per_second(5).unwrap().policy_name(), "per-second");
        assert_eq!(Limit::parse("5/10s").unwrap().policy_name(), "per-10s");
        assert_eq!(Limit::parse("5/250ms").unwrap().policy_name(), "per-250ms");
    }
}
