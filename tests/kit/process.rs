//! The real `dockns` binary as a child process: started with `--log-format json`, it binds its
//! listeners itself (a config or `--listen` of `127.0.0.1:0`) and the kit reads the bound
//! address from its startup log line (the one with a `listen` field, written once listeners
//! are bound and privileges dropped), so no port is probed and released before dockns
//! binds it. Its log is kept for the test and echoed to the (captured) test output.
//!
//! It must not leave the child running: dropping a [`Dockns`] kills and reaps it.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_dockns");

/// A running `dockns serve`.
pub struct Dockns {
    /// The child process.
    pub child: Child,
    /// Its first listener's address (UDP and TCP), as it reported it.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

/// The first listening address in the startup line (`fields.listen`, logged once dockns is
/// set up: listeners bound, privileges dropped).
fn listening(line: &str) -> Option<SocketAddr> {
    let v: Value = serde_json::from_str(line).ok()?;
    v["fields"]["listen"]
        .as_str()?
        .trim_matches(['[', ']'])
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

impl Dockns {
    /// Runs `dockns serve --config FILE ARGS...` and waits (up to 20 s) for its listening line.
    /// The config (or `args`) must listen on a port-0 address.
    pub fn serve(config: &Path, args: &[&str]) -> Dockns {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"]).arg(config).args(args);
        Dockns::spawn(cmd)
    }

    /// Runs `cmd` (a `dockns serve` command line) with JSON logs at info level, and waits (up
    /// to 20 s) for its listening line.
    pub fn spawn(mut cmd: Command) -> Dockns {
        cmd.args(["--log-format", "json", "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("dockns: {line}");
                if let Some(addr) = listening(&line) {
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(50)) {
                break addr;
            }
            if let Ok(Some(st)) = child.try_wait() {
                let text = log.lock().unwrap().join("\n");
                panic!("dockns exited ({st}) before listening:\n{text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let text = log.lock().unwrap().join("\n");
                panic!("dockns did not report a listening address within 20 s:\n{text}");
            }
        };
        Dockns { child, addr, log }
    }

    /// Sends a signal to the child.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own, not yet reaped, child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.child.id());
    }

    /// Waits up to `wait` for the child to exit; its status and how long that took.
    pub fn wait_exit(&mut self, wait: Duration) -> Option<(ExitStatus, Duration)> {
        let t = Instant::now();
        while t.elapsed() < wait {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some((st, t.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// How many log lines so far match `f` (each line as parsed JSON).
    pub fn log_count(&self, f: impl Fn(&Value) -> bool) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| f(v))
            .count()
    }

    /// The log lines so far (JSON).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Dockns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
