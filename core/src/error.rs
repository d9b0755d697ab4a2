//! The one error type of the core. Being rate limited is not an error (that is a `Decision`);
//! errors are for input that is wrong (`Config`) and for a store that failed (`Store`).

/// Which family an error belongs to; bindings map these onto their exception classes / codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller passed something invalid; retrying will not help.
    Config,
    /// The store (Redis) failed or was unreachable; retrying later may help.
    Store,
}

// Clone: one failed script call answers every caller batched into it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid limit {input:?}: {reason}")]
    InvalidLimit { input: String, reason: String },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidConfig { what: &'static str, value: String, reason: String },
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("invalid Redis URL {url:?}: {reason}")]
    InvalidRedisUrl { url: String, reason: String },
    #[error("Redis at {url} failed: {message}")]
    Store { url: String, message: String },
    #[error("Redis at {url} did not answer within {timeout_ms} ms")]
    Timeout { url: String, timeout_ms: u64 },
    #[error("Redis at {url} is unavailable (circuit breaker open)")]
    Unavailable { url: String },
    /// Redis is at maxmemory and refuses writes (`noeviction`): it read the identity's state
    /// (`state`, as stored; for the sliding log, the count of each window) and would allow the
    /// request, but could not record it. The local fallback decides, starting from that state.
    #[error("Redis at {url} is full (maxmemory reached): the request was not recorded")]
    Full { url: String, state: Vec<i64> },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store { .. } | Error::Timeout { .. } | Error::Unavailable { .. } | Error::Full { .. } => {
                ErrorKind::Store
            }
            _ => ErrorKind::Config,
        }
    }

    pub(crate) fn config(what: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        Error::InvalidConfig { what, value: value.to_string(), reason: reason.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
