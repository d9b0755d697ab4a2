//! The cache-layer workloads of issue 5, defined once: the bench runs them at full scale and
//! core/tests/cache.rs includes this file (`#[path]`) to run them small.

/// One workload: its limits and how it picks the next identity (an index; the key is `id:<i>`).
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub name: &'static str,
    pub limits: &'static [&'static str],
    /// Hot identities and the share of requests they get; the rest spread over `tail`.
    pub hot: u64,
    pub hot_share: f64,
    pub tail: u64,
    /// Total demand as a share of what the identities' first limits allow together, paced by the
    /// bench's callers; None: as fast as they go. "Busy but allowed" must stay below its limit,
    /// or after a few seconds it is a denial-cache workload like the others.
    pub demand: Option<f64>,
}

pub const HOT_TAIL: Workload = Workload {
    name: "hot/tail",
    limits: &["100/minute", "1000/hour"],
    hot: 1_000,
    hot_share: 0.8,
    tail: 100_000,
    demand: None,
};
pub const ONE_HOT_KEY: Workload =
    Workload { name: "one hot key", limits: &["100000/minute"], hot: 1, hot_share: 1.0, tail: 0, demand: None };
pub const BUSY_ALLOWED: Workload = Workload {
    name: "busy but allowed",
    limits: &["1000000/minute"],
    hot: 10,
    hot_share: 1.0,
    tail: 0,
    demand: Some(0.9),
};

pub const ALL: [Workload; 3] = [HOT_TAIL, ONE_HOT_KEY, BUSY_ALLOWED];

/// xorshift64: deterministic per caller, cheap enough not to show in the numbers.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(0x2545_f491_4f6c_dd1d ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

impl Workload {
    /// Same shape at a smaller scale (for tests): `hot` and `tail` divided by `by`, at least 1.
    pub fn scaled(self, by: u64) -> Workload {
        Workload { hot: (self.hot / by).max(1), tail: if self.tail == 0 { 0 } else { (self.tail / by).max(1) }, ..self }
    }

    /// Decisions per second the callers ask for in total, when paced (`demand`).
    pub fn paced_rate(&self) -> Option<f64> {
        let first = floodwall::parse_limits(&self.limits[..1]).ok()?.into_iter().next()?;
        let per_identity = first.max() as f64 / first.window().as_secs_f64();
        self.demand.map(|share| share * per_identity * self.identities() as f64)
    }

    pub fn identities(&self) -> u64 {
        self.hot + self.tail
    }

    /// The next identity: hot ones are 0..hot, tail ones hot..hot+tail.
    pub fn next_identity(&self, rng: &mut Rng) -> u64 {
        let r = rng.next();
        let pick_hot = self.tail == 0 || ((r >> 40) as f64 / (1u64 << 24) as f64) < self.hot_share;
        if pick_hot {
            r % self.hot
        } else {
            self.hot + r % self.tail
        }
    }
}

pub fn key(identity: u64) -> String {
    format!("id:{identity}")
}
