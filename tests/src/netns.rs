//! Test hosts in network namespaces: each host is a namespace with one
//! interface `eth0`, wired to a port of a switch in its own namespace, where
//! `te-netem` forwards frames between the ports and impairs them on command
//! (delay, jitter, loss, reordering, a bandwidth cap, a partition).
//!
//! Nothing is added to the namespace the tests run in; everything is
//! removed on drop, also when a test panics. Needs root and `ip`
//! (iproute2): [`unavailable`] says why a test cannot run.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long `te-netem` may take to start or to answer a command.
const NETEM_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `ip args...`, returning its stderr on failure.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why namespace tests cannot run here, if they cannot: not root, or no `ip`.
pub fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string));
    if euid.as_deref() != Some("0") {
        return Some(format!(
            "not root (euid {euid:?}): cannot create network namespaces"
        ));
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("`ip` (iproute2) not found".into()),
    }
}

/// Namespaces created by this process, deleted on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: String) -> Result<(), String> {
        ip(&["netns", "add", &name])?;
        self.0.push(name);
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// Hosts on one switched network `10.<net>.0.0/24`: host `i` (from 0) is
/// `10.<net>.0.<i + 1>`.
pub struct Network {
    net: u8,
    hosts: Vec<String>,
    netem: Netem,
    // Last: the namespaces go after the switch process has stopped.
    _namespaces: Namespaces,
}

impl Network {
    /// Creates `hosts` namespaces and the switch namespace, wires them up
    /// and starts `netem_exe` (the `te-netem` binary) on the switch, with
    /// impairments drawn from `seed`.
    pub fn create(net: u8, hosts: usize, netem_exe: &str, seed: u64) -> Result<Network, String> {
        let pid = std::process::id();
        let mut ns = Namespaces(Vec::new());
        let switch = format!("te-sw{net}-{pid}");
        ns.add(switch.clone())?;
        ip(&["-n", &switch, "link", "set", "lo", "up"])?;
        let mut names = Vec::new();
        let mut ports = Vec::new();
        for i in 0..hosts {
            let host = format!("te-h{net}.{i}-{pid}");
            ns.add(host.clone())?;
            let port = format!("p{i}");
            // Created inside the host, its other end moved to the switch:
            // interface names are per namespace, so these never clash.
            ip(&[
                "-n", &host, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &switch,
            ])?;
            let addr = format!("10.{net}.0.{}/24", i + 1);
            ip(&["-n", &host, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &host, "link", "set", "eth0", "up"])?;
            ip(&["-n", &host, "link", "set", "lo", "up"])?;
            ip(&["-n", &switch, "link", "set", &port, "up"])?;
            names.push(host);
            ports.push(port);
        }
        let netem = Netem::start(netem_exe, &switch, &ports, seed)?;
        Ok(Network {
            net,
            hosts: names,
            netem,
            _namespaces: ns,
        })
    }

    /// The namespace of host `i`.
    pub fn host(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// The address of host `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.net, i + 1)
    }

    /// Sends a command to the switch (`set <host> key=value...`, `clear
    /// <host>`, `heal`; see `te-netem`) and waits for its `ok`.
    pub fn netem(&mut self, command: &str) -> Result<(), String> {
        self.netem.command(command)
    }

    /// Waits up to `timeout` for the next event line of the switch (such as
    /// `healed p1` when a timed partition ends).
    pub fn netem_event(&mut self, timeout: Duration) -> Option<String> {
        self.netem
            .events
            .pop_front()
            .or_else(|| self.netem.lines.recv_timeout(timeout).ok())
    }

    /// Moves the calling thread into host `i`'s namespace: sockets it
    /// creates from then on, and threads it spawns, live there. Call it on
    /// a thread of the test's own; the others are not affected.
    pub fn enter(&self, i: usize) -> Result<(), String> {
        let path = format!("/var/run/netns/{}", self.hosts[i]);
        let f = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        // SAFETY: setns on a valid namespace descriptor changes only the
        // calling thread's network namespace; it touches no memory.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// The `te-netem` process of a network.
struct Netem {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// Event lines that arrived while a command waited for its `ok`.
    events: VecDeque<String>,
}

impl Netem {
    fn start(exe: &str, switch: &str, ports: &[String], seed: u64) -> Result<Netem, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", switch, exe, "--seed", &seed.to_string()])
            .args(ports)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {exe}: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let netem = Netem {
            child,
            stdin,
            lines,
            events: VecDeque::new(),
        };
        match netem.lines.recv_timeout(NETEM_TIMEOUT) {
            Ok(l) if l == "READY" => Ok(netem),
            other => Err(format!("te-netem did not start: {other:?}")),
        }
    }

    fn command(&mut self, command: &str) -> Result<(), String> {
        writeln!(self.stdin, "{command}").map_err(|e| format!("te-netem stdin: {e}"))?;
        loop {
            match self.lines.recv_timeout(NETEM_TIMEOUT) {
                Ok(l) if l == "ok" => return Ok(()),
                Ok(l) if l.starts_with("error") => return Err(format!("te-netem {command:?}: {l}")),
                // An event (a partition healed) that came first.
                Ok(l) => self.events.push_back(l),
                Err(e) => return Err(format!("te-netem {command:?}: no answer: {e}")),
            }
        }
    }
}

impl Drop for Netem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
