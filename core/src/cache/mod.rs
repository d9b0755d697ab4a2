//! Local cache layer between the limiter and Redis (issue 5): denial cache, coalescing,
//! pipelining and hot-key leases. Until it lands, every call passes straight to Redis.

use serde::{Deserialize, Serialize};

use crate::algorithm::Outcome;
use crate::decision::Source;
use crate::error::Result;
use crate::remote::Remote;
use crate::store::Request;

/// Cache settings (filled in by the cache layer).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheOptions {}

#[derive(Debug)]
pub(crate) struct LocalCache {
    _opts: CacheOptions,
}

impl LocalCache {
    pub(crate) fn new(opts: CacheOptions) -> Result<Self> {
        Ok(LocalCache { _opts: opts })
    }

    /// Decide `req`, locally when the cache can, otherwise through `remote`.
    pub(crate) async fn check(&self, remote: &Remote, req: &Request<'_>) -> Result<(Outcome, Source)> {
        remote.evaluate(req).await.map(|o| (o, Source::Redis))
    }
}
