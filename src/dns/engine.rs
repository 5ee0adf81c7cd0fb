//! The UDP listener engine: a fixed set of worker threads (`[server] workers`) that serve every
//! UDP listener, however many there are.
//!
//! Each listener address has one SO_REUSEPORT socket per worker (the kernel spreads its queries
//! over the group, which keeps the `recvmmsg`/`sendmmsg` batching); each worker registers its
//! socket of every listener in its own epoll (`mio::Poll`) and blocks there until a socket is
//! readable or the engine wakes it (an eventfd: a listener added or removed, or stop). There is
//! no timer: an idle engine costs no CPU. A busy socket is served a bounded number of batches
//! per turn, so one flooded listener cannot starve the others.
//!
//! This module only schedules; answering a batch is `udp.rs`, binding is `listen.rs`. Adding
//! or removing a listener is a command the worker applies between turns; removal waits until
//! every worker let go of the socket, so its counters can be retired.

use super::udp::{Served, Slot, UdpDeps, UdpWorker};
use crate::room::Room;
use crate::stats::{Stats, WorkerStats};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Batches one socket is served in a row before the worker looks at the others.
const TURN_BATCHES: usize = 16;
/// After a busy socket drained, the worker keeps polling (without sleeping) this long: under
/// load a sleep/wake cycle per batch costs more CPU than a few empty polls.
const SPIN: Duration = Duration::from_micros(50);
/// How long a removal waits for a worker to let go of its socket.
const REMOVE_WAIT: Duration = Duration::from_secs(2);
/// The token of the engine's wake-up eventfd.
const WAKE: Token = Token(usize::MAX);

enum Command {
    Add(usize, Slot),
    Remove(usize, mpsc::SyncSender<()>),
    Stop,
}

/// The mailbox of one worker.
struct Control {
    waker: Waker,
    commands: Mutex<Vec<Command>>,
}

impl Control {
    fn send(&self, c: Command) {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c);
        if let Err(e) = self.waker.wake() {
            tracing::error!("cannot wake a UDP worker: {e}");
        }
    }
}

/// The running workers.
pub struct UdpEngine {
    controls: Vec<Arc<Control>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl UdpEngine {
    /// Starts `workers` threads. Their forwarded-reply counters are registered in `stats` for
    /// the engine's lifetime.
    pub fn start(workers: usize, deps: &UdpDeps, stats: &Stats) -> std::io::Result<UdpEngine> {
        let mut engine = UdpEngine {
            controls: Vec::new(),
            threads: Vec::new(),
        };
        for i in 0..workers.max(1) {
            let poll = Poll::new()?;
            let control = Arc::new(Control {
                waker: Waker::new(poll.registry(), WAKE)?,
                commands: Mutex::new(Vec::new()),
            });
            let worker = EngineThread {
                poll,
                control: control.clone(),
                slots: HashMap::new(),
                room: Room::default(),
                ready: VecDeque::new(),
                udp: UdpWorker::new(deps.clone(), stats.worker()),
            };
            // On a failure, the threads started so far stop when `engine` drops.
            let t = std::thread::Builder::new()
                .name(format!("udp-{i}"))
                .spawn(move || worker.run())?;
            engine.controls.push(control);
            engine.threads.push(t);
        }
        Ok(engine)
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.controls.len()
    }

    /// Hands listener `id` to the workers: socket `i` (one per worker) to worker `i`.
    pub fn add(&self, id: usize, slots: Vec<Slot>) {
        for (c, slot) in self.controls.iter().zip(slots) {
            c.send(Command::Add(id, slot));
        }
    }

    /// Takes listener `id` from every worker; returns once each has deregistered and dropped
    /// its socket (or after [`REMOVE_WAIT`] for a worker that does not answer).
    pub fn remove(&self, id: usize) {
        let mut acks = Vec::new();
        for c in &self.controls {
            let (tx, rx) = mpsc::sync_channel(1);
            c.send(Command::Remove(id, tx));
            acks.push(rx);
        }
        for rx in acks {
            let _ = rx.recv_timeout(REMOVE_WAIT);
        }
    }

    /// Stops every worker and waits for its thread to end.
    pub fn stop(mut self) {
        self.signal_stop();
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }

    fn signal_stop(&self) {
        for c in &self.controls {
            c.send(Command::Stop);
        }
    }
}

impl Drop for UdpEngine {
    fn drop(&mut self) {
        // Dropped without `stop` (a server dropped in a test): the threads still end.
        if !self.threads.is_empty() {
            self.signal_stop();
        }
    }
}

/// One worker thread: its epoll, the sockets registered in it, and its buffers.
struct EngineThread {
    poll: Poll,
    control: Arc<Control>,
    /// Listener id → its socket in this worker, and whether it is in `ready`.
    slots: HashMap<usize, (Slot, bool)>,
    /// When `slots` gives its room back (hundreds of listeners removed as Docker networks go).
    room: Room,
    /// Sockets that may still hold datagrams (epoll is edge-triggered: a socket stays here
    /// until a read finds it empty).
    ready: VecDeque<usize>,
    udp: UdpWorker,
}

impl EngineThread {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut spin_until: Option<Instant> = None;
        loop {
            // Block (no timeout) unless work is queued or the worker is spinning.
            let timeout =
                (!self.ready.is_empty() || spin_until.is_some()).then_some(Duration::ZERO);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!("UDP worker: epoll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let mut woken = false;
            for ev in events.iter() {
                match ev.token() {
                    WAKE => woken = true,
                    Token(id) => self.mark_ready(id),
                }
            }
            if woken && !self.apply_commands() {
                return;
            }
            if self.ready.is_empty() {
                if spin_until.is_some_and(|t| Instant::now() >= t) {
                    spin_until = None;
                }
                continue;
            }
            // Spin on after a busy batch; a quiet one ends the spin (as a blocking receive would).
            spin_until = self.serve_ready().then(|| Instant::now() + SPIN);
        }
    }

    fn mark_ready(&mut self, id: usize) {
        if let Some((_, queued)) = self.slots.get_mut(&id) {
            if !*queued {
                *queued = true;
                self.ready.push_back(id);
            }
        }
    }

    /// Gives every ready socket one turn; returns whether any busy socket drained (start
    /// spinning).
    fn serve_ready(&mut self) -> bool {
        let mut spin = false;
        for _ in 0..self.ready.len() {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some((slot, queued)) = self.slots.get_mut(&id) else {
                continue;
            };
            match self.udp.serve(slot, TURN_BATCHES) {
                Served::More => self.ready.push_back(id),
                Served::Drained { busy } => {
                    *queued = false;
                    spin |= busy;
                }
            }
        }
        spin
    }

    /// Applies queued commands; false when told to stop.
    fn apply_commands(&mut self) -> bool {
        let commands = std::mem::take(
            &mut *self
                .control
                .commands
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for c in commands {
            match c {
                Command::Add(id, slot) => {
                    let fd = slot.socket.as_raw_fd();
                    match self.poll.registry().register(
                        &mut SourceFd(&fd),
                        Token(id),
                        Interest::READABLE,
                    ) {
                        Ok(()) => {
                            self.slots.insert(id, (slot, false));
                            self.room.grew(self.slots.len());
                            // Datagrams may have arrived before the registration.
                            self.mark_ready(id);
                        }
                        Err(e) => tracing::error!("UDP worker cannot watch a socket: {e}"),
                    }
                }
                Command::Remove(id, ack) => {
                    if let Some((slot, _)) = self.slots.remove(&id) {
                        let fd = slot.socket.as_raw_fd();
                        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                    }
                    self.ready.retain(|r| *r != id);
                    if self.room.shrink_now(self.slots.len()) {
                        self.slots.shrink_to_fit();
                        self.ready.shrink_to_fit();
                    }
                    let _ = ack.send(());
                }
                Command::Stop => return false,
            }
        }
        true
    }
}

/// Counters of one listener's UDP sockets, one set per worker.
pub fn worker_stats(stats: &Stats, workers: usize) -> Vec<Arc<WorkerStats>> {
    (0..workers).map(|_| stats.worker_owned()).collect()
}
