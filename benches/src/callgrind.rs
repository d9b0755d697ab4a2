//! What a decision costs redis-server, counted by valgrind's callgrind: a private redis-server
//! under callgrind, its instruction counter zeroed and read around a stretch of work, and a driver
//! of a fixed number of decisions. Used by floodwall-redis-cost and `floodwall-bench algorithms`.
//! Needs valgrind (callgrind_control) on PATH.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use floodwall::Limiter;
use floodwall_testkit::RedisServer;

/// A private redis-server under callgrind, its dumps written to `dumps`.
pub struct Counted {
    pub server: RedisServer,
    pid: String,
    dumps: PathBuf,
    /// `--keep DIR`: each case's dump is moved there (for callgrind_annotate) instead of deleted
    keep: Option<PathBuf>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dumps);
    }
}

pub fn start(keep: Option<PathBuf>) -> Counted {
    let dumps = std::env::temp_dir().join(format!("floodwall-redis-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dumps).expect("temp dir");
    let out = format!("--callgrind-out-file={}/callgrind.%p", dumps.display());
    let server = RedisServer::start_wrapped(&["valgrind", "--tool=callgrind", &out]);
    let pid = server.pid().expect("running").to_string();
    Counted { server, pid, dumps, keep }
}

/// One command's reply, as the harness reads it.
pub fn command(s: &Counted, args: &[&str]) -> String {
    s.server.command(args).expect("redis-server under callgrind answers")
}

/// Counting starts now (callgrind_control zeroes the counters).
pub fn start_counting(s: &Counted) {
    let st =
        Command::new("callgrind_control").arg("-z").arg(&s.pid).stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(st.is_ok_and(|s| s.success()), "callgrind_control -z");
}

/// Instructions since start_counting (callgrind_control dumps; the newest file's totals), counted
/// for the case named `case`.
pub fn instructions(s: &Counted, case: &str) -> u64 {
    let st =
        Command::new("callgrind_control").args(["-d", &s.pid]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(st.is_ok_and(|s| s.success()), "callgrind_control -d");
    let newest = |dir: &Path| -> Option<PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("callgrind."))
            .collect();
        files.sort_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
        files.last().map(|e| e.path())
    };
    let file = newest(&s.dumps).expect("a callgrind dump");
    let text = std::fs::read_to_string(&file).expect("read the dump");
    let total = text.lines().find_map(|l| l.strip_prefix("totals: ").or_else(|| l.strip_prefix("summary: ")));
    match &s.keep {
        // kept for callgrind_annotate, named after the case counted
        Some(dir) => {
            let _ = std::fs::rename(
                &file,
                dir.join(format!("callgrind.{}", case.replace(|c: char| !c.is_ascii_alphanumeric(), "_"))),
            );
        }
        None => {
            let _ = std::fs::remove_file(&file);
        }
    }
    total.and_then(|t| t.trim().parse().ok()).expect("totals in the dump")
}

pub fn evalsha_calls(s: &Counted) -> u64 {
    let stats = command(s, &["INFO", "commandstats"]);
    let line = stats.lines().find(|l| l.starts_with("cmdstat_evalsha:")).unwrap_or("");
    line.split(['=', ',']).nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `decisions` checks, `concurrency` in flight, over `identities` identities.
pub async fn drive(limiter: &Limiter, decisions: u64, concurrency: u64, identities: u64, offset: u64) {
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let l = limiter.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while i < decisions {
                let d = l.check(&format!("id:{}", (i + offset) % identities)).await.expect("decision");
                assert!(d.allowed, "limits far above the load");
                i += concurrency;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}
