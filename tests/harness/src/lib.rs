//! Test harness: real `redis-server` processes on free loopback ports (one, or six as a Cluster),
//! stopped when dropped, and a TCP fault proxy to put latency, blackholes and resets between a
//! limiter and its Redis. Never touches the shared server on 6379.

mod cluster;
mod proxy;

pub use cluster::RedisCluster;
pub use proxy::{Fault, FaultProxy};

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private redis-server. Dropping it kills the process and removes its directory.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra: Vec<String>,
    /// A program redis-server runs under (valgrind and its flags), empty for none.
    wrapper: Vec<String>,
}

/// A port the OS just handed out, so nothing else is listening on it.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// Start a server with no persistence on a free port and wait until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// As `start`, with extra `redis-server` arguments (e.g. `["--maxmemory", "10mb"]`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        Self::start_on(free_port, extra)
    }

    /// As `start`, with redis-server run under `wrapper` (e.g. `["valgrind", "--tool=callgrind"]`),
    /// whose slower start is waited for.
    pub fn start_wrapped(wrapper: &[&str]) -> RedisServer {
        Self::start_as(free_port, &[], wrapper)
    }

    pub(crate) fn start_on(pick_port: impl Fn() -> u16, extra: &[&str]) -> RedisServer {
        Self::start_as(pick_port, extra, &[])
    }

    fn start_as(pick_port: impl Fn() -> u16, extra: &[&str], wrapper: &[&str]) -> RedisServer {
        for _ in 0..5 {
            let port = pick_port();
            let dir = std::env::temp_dir().join(format!("floodwall-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create server dir");
            let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
            let mut server = RedisServer { port, child: None, dir, extra: owned(extra), wrapper: owned(wrapper) };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server (is it installed?)");
    }

    fn spawn(&mut self) -> bool {
        let (program, before) = match self.wrapper.split_first() {
            Some((w, flags)) => (w.as_str(), [flags, &["redis-server".to_string()]].concat()),
            None => ("redis-server", Vec::new()),
        };
        let child = Command::new(program)
            .args(&before)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.to_str().expect("utf-8 temp dir")])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        self.child = Some(child);
        let patience = if self.wrapper.is_empty() { 10 } else { 60 };
        let deadline = Instant::now() + Duration::from_secs(patience);
        while Instant::now() < deadline {
            if self.command(&["PING"]).map(|r| r == "+PONG").unwrap_or(false) {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false; // exited: port taken between free_port() and bind
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The process id of the server (of its wrapper, when it runs under one).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the process (as an outage would) and keep the port for `restart`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port: a restart empties the script cache and the data.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server did not come back on port {}", self.port);
    }

    /// Send one command over a fresh connection and return the raw first reply line (and, for
    /// bulk or array replies, the whole reply as text). Enough for test assertions.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
        }
        s.write_all(req.as_bytes())?;
        let mut r = BufReader::new(s);
        read_reply(&mut r)
    }
}

fn read_reply<R: BufRead>(r: &mut R) -> std::io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end().to_string();
    match line.as_bytes().first() {
        Some(b'$') => {
            let n: i64 = line[1..].parse().unwrap_or(-1);
            if n < 0 {
                return Ok("(nil)".into());
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n as usize]).into_owned())
        }
        Some(b'*') => {
            let n: i64 = line[1..].parse().unwrap_or(0);
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Ok(items.join("\n"))
        }
        _ => Ok(line),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
