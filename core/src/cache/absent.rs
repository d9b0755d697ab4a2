//! The cache layer when floodwall is built without its `cache` feature: its options still parse
//! (one schema for every build), and asking a Redis limiter for the layer is a config error.

use super::{CacheOptions, CacheStats};
use crate::algorithm::Outcome;
use crate::decision::Source;
use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::store::Request;

/// Has no values: no limiter of this build holds a cache layer.
#[derive(Debug)]
pub(crate) enum LocalCache {}

impl LocalCache {
    pub(crate) fn new(opts: CacheOptions, _windows: usize) -> Result<Self> {
        opts.validate()?;
        Err(Error::config("cache", "{..}", "floodwall was built without its `cache` feature"))
    }

    pub(crate) fn stats(&self) -> CacheStats {
        match *self {}
    }

    pub(crate) fn forget(&self, _first_key: &str) {
        match *self {}
    }

    pub(crate) async fn check(&self, _remote: &Remote, _req: &Request<'_>) -> Result<(Outcome, Source)> {
        match *self {}
    }
}
