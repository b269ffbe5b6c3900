//! Real directory stores for the directory tests: `etcd` and
//! `redis-server` from Debian, each started on free loopback ports in a
//! temporary directory of its own and stopped by its PID.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use te_runtime::directory::Directory;

/// How long a store may take to answer after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// etcd v3 (`etcd`).
    Etcd,
    /// Redis (`redis-server`).
    Redis,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::Redis => "redis-server",
        }
    }
}

/// A running store. Dropping it kills the server (SIGKILL) and removes its
/// directory.
pub struct StoreServer {
    kind: Kind,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

/// Whether `binary` is on the PATH.
fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(binary).is_file()))
}

impl StoreServer {
    /// Starts a store of `kind` and waits until it answers; `None`, with
    /// the reason printed, when its binary is not installed (`.ci/run`
    /// installs both).
    pub fn start(kind: Kind) -> Option<StoreServer> {
        if !on_path(kind.binary()) {
            println!(
                "skipped: {} is not installed (apt-get install etcd-server redis-server)",
                kind.binary()
            );
            return None;
        }
        let dir = std::env::temp_dir().join(format!("te-store-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("store directory");
        let mut s = StoreServer {
            kind,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        s.restart();
        Some(s)
    }

    /// The URL engines use: `etcd://127.0.0.1:P` or `redis://127.0.0.1:P`.
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Etcd => format!("etcd://127.0.0.1:{}", self.client_port),
            Kind::Redis => format!("redis://127.0.0.1:{}", self.client_port),
        }
    }

    /// A client of the store under key prefix `te`.
    pub fn directory(&self) -> Directory {
        Directory::open(&self.url(), "te", Duration::from_secs(5)).expect("directory URL")
    }

    /// Stops the server with SIGTERM and waits for it to exit. etcd keeps
    /// its data for [`restart`](Self::restart); Redis (no persistence)
    /// comes back empty.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid, which is not yet reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Starts the server (again) on the same ports and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the store is running");
        let (c, p) = (self.client_port, self.peer_port);
        let mut cmd = Command::new(self.kind.binary());
        match self.kind {
            Kind::Etcd => {
                cmd.arg("--name")
                    .arg("te-test")
                    .arg("--data-dir")
                    .arg(self.dir.join("etcd"))
                    .arg("--listen-client-urls")
                    .arg(format!("http://127.0.0.1:{c}"))
                    .arg("--advertise-client-urls")
                    .arg(format!("http://127.0.0.1:{c}"))
                    .arg("--listen-peer-urls")
                    .arg(format!("http://127.0.0.1:{p}"))
                    .arg("--initial-advertise-peer-urls")
                    .arg(format!("http://127.0.0.1:{p}"))
                    .arg("--initial-cluster")
                    .arg(format!("te-test=http://127.0.0.1:{p}"));
            }
            Kind::Redis => {
                cmd.args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &c.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(&self.dir);
            }
        }
        let log = std::fs::File::create(self.dir.join("log")).expect("store log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("store log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.kind.binary()));
        self.child = Some(child);
        let dir = self.directory();
        let deadline = Instant::now() + READY_TIMEOUT;
        while dir.lookup("readiness-probe").is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not answer within {READY_TIMEOUT:?}; its log: {}",
                self.kind.binary(),
                std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20)); // polling a server that starts
        }
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Calls `cond` every 20 ms until it is true or `timeout` passes; whether it became true.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20)); // polling a store
    }
}
