//! [`Engine`]: an [`EngineCore`] on an event-loop thread of its own, with a
//! `Send + Sync` handle whose calls block where the seed systems' do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Events, Poll, Waker};
use te_proto::batch::{Op, TaskState, TaskStatus};
use te_proto::driver::StreamHandle;
use te_proto::{status, BatchId, BatchStatus, ErrorCode, Perm, Region, Result, Status, TaskId};
use tracing::warn;

use crate::config::EngineConfig;
use crate::config::Path;
use crate::core::{EngineCore, Notification, Request, SegmentId};
use crate::directory::{Directory, Entry, Publication};
use crate::sync::Monitor;

mod event_loop;

use self::event_loop::{deadline_nanos, drive_until, run, Poller, Shared, BASE, WAKER};

/// A running engine. Cheap to share: every method takes `&self` and may be
/// called from any number of threads at once.
///
/// ```
/// use te_runtime::{Engine, EngineConfig, Perm};
///
/// let target = Engine::start(EngineConfig::default())?;
/// let initiator = Engine::start(EngineConfig::default())?;
/// // Memory the engines own: page-aligned and registered.
/// let remote = target.alloc_memory(4096, Perm::REMOTE_READ_WRITE)?;
/// let local = initiator.alloc_memory(4096, Perm::LOCAL_ONLY)?;
/// unsafe { std::ptr::write_bytes(local as *mut u8, 7, 4096) };
///
/// initiator.transfer_sync_write(&target.segment_name(), local, remote, 4096)?;
/// assert_eq!(unsafe { *(remote as *const u8).add(4095) }, 7);
/// # Ok::<(), te_runtime::Status>(())
/// ```
pub struct Engine {
    shared: Arc<Shared>,
    /// The event-loop thread, unparked when busy-waiting callers are done.
    loop_thread: std::thread::Thread,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    segment_name: String,
    local_addr: SocketAddr,
    cfg: EngineConfig,
    /// Where names are looked up, when the config names a directory.
    directory: Option<Arc<Directory>>,
    /// This engine's entry in the directory, withdrawn by `finalize`.
    publication: std::sync::Mutex<Option<Publication>>,
}

impl Engine {
    /// Binds, then starts the event-loop thread.
    pub fn start(cfg: EngineConfig) -> Result<Engine> {
        let poll = Poll::new().map_err(|e| status!(RuntimeError, "cannot create poll: {e}"))?;
        let waker = Waker::new(poll.registry(), WAKER)
            .map_err(|e| status!(RuntimeError, "cannot create waker: {e}"))?;
        let core = EngineCore::new(cfg.clone(), poll.registry(), BASE)?;
        let segment_name = core.segment_name().to_string();
        let local_addr = core.local_addr();
        let (directory, publication) = match &cfg.directory {
            None => (None, None),
            Some(url) => {
                let dir = Arc::new(Directory::open(url, &cfg.directory_prefix, cfg.connect_timeout)?);
                let entry = own_entry(&cfg, &segment_name, local_addr)?;
                let publication = Publication::start(Arc::clone(&dir), entry, cfg.directory_ttl)?;
                (Some(dir), Some(publication))
            }
        };
        let shared = Arc::new(Shared {
            core: Monitor::new(core),
            poller: std::sync::Mutex::new(Poller {
                poll,
                events: Events::with_capacity(256),
            }),
            drivers: AtomicUsize::new(0),
            waker,
            stop: AtomicBool::new(false),
            sleep_until: AtomicU64::new(u64::MAX),
            info_lock: std::sync::Mutex::new(()),
            by_name: std::sync::Mutex::new(HashMap::new()),
        });
        let s = Arc::clone(&shared);
        let busy = cfg.busy_poll;
        let thread = std::thread::Builder::new()
            .name(format!("te-loop {segment_name}"))
            .spawn(move || run(&s, busy))
            .map_err(|e| status!(RuntimeError, "cannot start the event loop thread: {e}"))?;
        Ok(Engine {
            shared,
            loop_thread: thread.thread().clone(),
            thread: std::sync::Mutex::new(Some(thread)),
            segment_name,
            local_addr,
            cfg,
            directory,
            publication: std::sync::Mutex::new(publication),
        })
    }

    /// `RDMA: <device> port <n> gid index <i>` while the engine's RDMA
    /// device is in use, else `RDMA off: <reason>` (also logged once): not
    /// opened at start, or turned off since (its completion queue failed).
    pub fn rdma_status(&self) -> String {
        self.shared.core.lock().rdma_status().to_string()
    }

    /// This engine's segment name (what peers open).
    pub fn segment_name(&self) -> String {
        self.segment_name.clone()
    }

    /// Where memory from [`alloc_memory`](Self::alloc_memory) lives: the
    /// configured location (`cpu`, `sim:N`, `npu:N`).
    pub fn location(&self) -> te_proto::Location {
        self.cfg.location
    }

    /// The port the engine listens on.
    pub fn rpc_port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Runs `f` on the core. Whatever IO `f` starts it does itself, up to
    /// the point where the socket blocks (mio then reports readiness to the
    /// loop), so the loop needs waking only when `f` added a deadline
    /// earlier than the one it sleeps until; a busy-polling loop never
    /// sleeps. Waking it for nothing costs a system call and a context
    /// switch per call (docs/PERFORMANCE.md).
    fn with_core<R>(&self, f: impl FnOnce(&mut EngineCore) -> R) -> R {
        let mut core = self.shared.core.lock();
        let r = f(&mut core);
        if !self.cfg.busy_poll {
            let due = deadline_nanos(core.next_deadline());
            drop(core);
            if due < self.shared.sleep_until.load(Ordering::Acquire) {
                let _ = self.shared.waker.wake();
            }
            // What `f` changed may be what another caller waits for (a
            // cancel, a closed segment); free when nobody sleeps.
            self.shared.core.notify();
        }
        r
    }

    /// Waits until `check` returns `Some` or `timeout` passes (`Timeout`
    /// naming `what`).
    fn wait<R>(
        &self,
        timeout: Duration,
        what: &str,
        check: impl FnMut(&mut EngineCore) -> Option<R>,
    ) -> Result<R> {
        let got = if self.cfg.busy_poll {
            drive_until(&self.shared, &self.loop_thread, timeout, check)
        } else {
            self.shared.core.wait_for(Some(timeout), check)
        };
        got.ok_or_else(|| status!(Timeout, "{what}: no answer within {timeout:?}"))
    }

    // ---- memory ----

    /// Registers `len` bytes at `addr` with `perm`, in the engine's
    /// location. Device memory must lie inside one allocation of the
    /// location's driver.
    ///
    /// # Safety
    /// The memory must stay valid until [`unregister_memory`](Self::unregister_memory)
    /// returns (or the engine is finalized); peers with permission read and
    /// write it at any time until then.
    pub unsafe fn register_memory(&self, addr: u64, len: u64, perm: Perm) -> Result<()> {
        // SAFETY: forwarded contract.
        self.with_core(|c| unsafe { c.register(addr, len, perm) })
    }

    /// Registers several regions `(addr, len, perm)`, all or nothing.
    ///
    /// # Safety
    /// As [`register_memory`](Self::register_memory), for each region.
    pub unsafe fn register_memory_batch(&self, regions: &[(u64, u64, Perm)]) -> Result<()> {
        // SAFETY: forwarded contract.
        self.with_core(|c| unsafe { c.register_batch(regions) })
    }

    /// Unregisters the region with base `addr`; when this returns, no
    /// transfer touches the memory again. Peers' reads not yet answered are
    /// refused (`NotAuthorized`) and an answer being sent goes on from a
    /// copy, so a peer slow to read cannot hold the region; peers' writes
    /// landing in it, same-host copies and local tasks using it finish (or
    /// fail) first. `NotFound` without a region at exactly that base.
    /// `Timeout` when that did not happen within the drain timeout: the
    /// memory is then still in use (a transfer, or its registration with
    /// the RDMA NIC) and must not be freed yet; `region_exists` and a later
    /// call tell when it is free.
    pub fn unregister_memory(&self, addr: u64) -> Result<()> {
        self.with_core(|c| c.unregister(addr))?;
        self.wait(self.drain_timeout(), "unregister", |c| {
            (!c.unregister_pending(addr)).then_some(())
        })
        .map_err(|e| still_in_use(addr, e))
    }

    /// How long unregister and free wait: for the transfers using the
    /// memory, and for peers to close their imports of it (at most
    /// `KEY_CLOSE_WAIT`, after which the export is closed regardless).
    fn drain_timeout(&self) -> Duration {
        let keys = crate::same_host::device::KEY_CLOSE_WAIT + Duration::from_secs(1);
        (self.cfg.transfer_timeout + self.cfg.idle_timeout).max(keys)
    }

    /// Allocates `len` bytes of zeroed memory in the engine's location
    /// ([`EngineConfig::location`]) and registers it: page-aligned host
    /// memory for `cpu` (a sealed memfd that same-host peers map, when the
    /// engine offers the same-host path; anonymous memory on huge pages
    /// otherwise), device memory for `sim:N` (not host-addressable:
    /// reach it with [`read_memory`](Self::read_memory) and
    /// [`write_memory`](Self::write_memory)). A device without room is
    /// `RuntimeError` naming the sizes.
    pub fn alloc_memory(&self, len: u64, perm: Perm) -> Result<u64> {
        self.with_core(|c| c.alloc_memory(len, perm))
    }

    /// Copies `dst.len()` bytes of local registered memory at `addr` into
    /// `dst` (host or device memory). `NotFound` unless the range lies in
    /// one registered region of the engine's location.
    pub fn read_memory(&self, addr: u64, dst: &mut [u8]) -> Result<()> {
        self.shared.core.lock().read_memory(addr, dst)
    }

    /// Copies `src` into local registered memory at `addr` (host or device
    /// memory). `NotFound` unless the range lies in one registered region
    /// of the engine's location.
    pub fn write_memory(&self, addr: u64, src: &[u8]) -> Result<()> {
        self.shared.core.lock().write_memory(addr, src)
    }

    /// Bytes of host memory the connections hold to stage payloads they
    /// send (arriving device payloads are staged in each connection's read
    /// buffer): device payloads, and the rest of a host frame cut loose by
    /// an unregister or a cancel; at most one frame payload per connection,
    /// allocated at the first such payload and reused for every later one.
    pub fn staging_bytes(&self) -> usize {
        self.shared.core.lock().staging_bytes()
    }

    /// Runs `f` on this engine's simulated devices (`sim:N`): inject
    /// faults, make a device disappear, read statistics, or allocate device
    /// memory to register with [`register_memory`](Self::register_memory).
    #[cfg(feature = "sim")]
    pub fn with_sim_driver<R>(&self, f: impl FnOnce(&mut crate::sim::SimDriver) -> R) -> R {
        self.with_core(|c| f(c.sim_driver()))
    }

    /// Unregisters and unmaps memory from [`alloc_memory`](Self::alloc_memory),
    /// after the transfers using it have ended.
    pub fn free_memory(&self, addr: u64) -> Result<()> {
        self.with_core(|c| c.free_memory(addr))?;
        self.wait(self.drain_timeout(), "free", |c| {
            (!c.unregister_pending(addr)).then_some(())
        })
    }

    /// The locally registered regions.
    pub fn regions(&self) -> Vec<Region> {
        self.shared.core.lock().regions()
    }

    // ---- segments ----

    /// Opens the peer `name` and waits for the handshake. Without a
    /// directory `name` is `host:port`; with one it is looked up there
    /// (when it is not open already, so a peer whose link was lost is
    /// looked up again and reached where it runs now), and a name the
    /// directory does not hold is `NotFound` unless it is a `host:port`.
    /// An unreachable peer or directory is `RuntimeError` naming it; a
    /// refused secret is `NotAuthorized`.
    pub fn open_segment(&self, name: &str) -> Result<SegmentId> {
        let id = match &self.directory {
            None => self.with_core(|c| c.open_segment(name))?,
            Some(dir) => match self.connected_segment(name) {
                Some(id) => id,
                None => match dir.lookup(name)? {
                    Some(entry) => self.with_core(|c| c.open_segment_at(name, entry.tcp))?,
                    None if is_host_port(name) => self.with_core(|c| c.open_segment(name))?,
                    None => {
                        return Err(status!(
                            NotFound,
                            "segment {name} is not in directory {}",
                            dir.url()
                        ));
                    }
                },
            },
        };
        let state = self.wait(self.cfg.connect_timeout * 2, "open segment", |c| {
            match c.segment_state(id) {
                Ok(false) => None,
                Ok(true) => Some(Ok(())),
                Err(e) => Some(Err(e)),
            }
        });
        match state {
            Ok(Ok(())) => Ok(id),
            // A secret mismatch names the peer by its segment name already.
            Ok(Err(e)) | Err(e) if e.code() == ErrorCode::NotAuthorized => Err(e),
            Ok(Err(e)) | Err(e) if e.code() == ErrorCode::Invalid => {
                Err(status!(Invalid, "segment {name}: {}", e.message()))
            }
            Ok(Err(e)) | Err(e) => Err(status!(
                RuntimeError,
                "segment {name} unreachable: {}",
                e.message()
            )),
        }
    }

    /// The open segment `name` whose link is up or being set up (the core's
    /// lock is released before the caller goes on).
    fn connected_segment(&self, name: &str) -> Option<SegmentId> {
        self.shared.core.lock().connected_segment(name)
    }

    /// Closes the connection to a segment; its running tasks end `Canceled`.
    pub fn close_segment(&self, id: SegmentId) -> Result<()> {
        self.with_core(|c| c.close_segment(id))
    }

    /// The peer's remotely visible regions.
    pub fn segment_info(&self, id: SegmentId) -> Result<Vec<Region>> {
        let _one_at_a_time = self.shared.info_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.with_core(|c| c.query_segment_info(id))?;
        self.wait(self.cfg.connect_timeout * 2, "segment info", |c| {
            c.take_segment_info(id)
        })?
    }

    fn segment_by_name(&self, name: &str) -> Result<SegmentId> {
        let known = self
            .shared
            .by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied();
        if let Some(id) = known {
            if self.shared.core.lock().segment_state(id).is_ok() {
                return Ok(id);
            }
        }
        let id = self.open_segment(name)?;
        self.shared
            .by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), id);
        Ok(id)
    }

    // ---- batches ----

    /// Allocates a batch for up to `capacity` tasks.
    pub fn allocate_batch(&self, capacity: u32) -> Result<BatchId> {
        self.with_core(|c| c.alloc_batch(capacity))
    }

    /// Submits requests into a batch (all or nothing).
    pub fn submit(&self, batch: BatchId, reqs: &[Request]) -> Result<()> {
        self.with_core(|c| c.submit(batch, reqs))
    }

    /// Submits requests over `path` instead of the engine's
    /// [`EngineConfig::path`]: `Tcp` forces TCP, `Shm` the same-host path
    /// (tasks to a peer without it fail `NotSupported`, naming why).
    pub fn submit_via(&self, batch: BatchId, reqs: &[Request], path: Path) -> Result<()> {
        self.with_core(|c| c.submit_via(batch, reqs, path))
    }

    /// Submits requests into a fresh batch, ordered on the application's
    /// device stream of this engine's device (an `aclrtStream` on Ascend,
    /// as memfabric's `transfer_async_write_submit(..., stream)` takes):
    /// the transfer starts once the work queued on `stream` before this
    /// call has run, and the work queued on it afterwards waits until every
    /// task has ended. Returns at once; the host never blocks on the
    /// stream. The batch reports the outcome as any batch does (a failed
    /// transfer releases the stream too, so check the batch). `Invalid`
    /// for host memory, a batch with tasks or the null stream,
    /// `NotSupported` where the driver or its library has no stream
    /// fences (see docs/ASCEND.md).
    pub fn submit_on_stream(&self, batch: BatchId, reqs: &[Request], stream: StreamHandle) -> Result<()> {
        self.with_core(|c| c.submit_on_stream(batch, reqs, stream))
    }

    /// The path [`Path::Auto`] takes to an open segment: `Shm` when the
    /// peer is on this host and network namespace, offers the same-host
    /// path and verified this process; else `Rdma` when both sides have
    /// RDMA devices on a common fabric and their queue pairs connected;
    /// else `Tcp`. An engine configured with `Path::Rdma` gets `Rdma` once
    /// the queue pairs are connected. (A task takes RDMA only where the
    /// peer announced the remote range, so some may still take TCP.)
    pub fn segment_path(&self, id: SegmentId) -> Result<Path> {
        self.shared.core.lock().segment_path(id)
    }

    /// Submits requests and sends `{name, msg}` to the peer once every task
    /// of the batch has completed, after the data is in place. Make it the
    /// batch's last submission: the notification goes as soon as no task
    /// of the batch is pending. A batch that fails sends none.
    pub fn submit_with_notify(&self, batch: BatchId, reqs: &[Request], name: &str, msg: &[u8]) -> Result<()> {
        self.with_core(|c| c.submit_with_notify(batch, reqs, name, msg))
    }

    /// Status of one task.
    pub fn task_status(&self, task: TaskId) -> Result<TaskStatus> {
        self.shared.core.lock().task_status(task)
    }

    /// Status of every submitted task of a batch.
    pub fn tasks_status(&self, batch: BatchId) -> Result<Vec<TaskStatus>> {
        self.shared.core.lock().tasks_status(batch)
    }

    /// Overall status of a batch.
    pub fn batch_status(&self, batch: BatchId) -> Result<BatchStatus> {
        self.shared.core.lock().batch_status(batch)
    }

    /// The first failure of a batch, its message naming the task and why
    /// (`None` while nothing failed).
    pub fn batch_error(&self, batch: BatchId) -> Option<Status> {
        self.shared.core.lock().batch_error(batch)
    }

    /// Waits until no task of the batch is pending, and returns its status.
    pub fn wait_batch(&self, batch: BatchId, timeout: Duration) -> Result<BatchStatus> {
        self.wait(timeout, "batch", |c| match c.batch_status(batch) {
            Ok(s) if s.state == TaskState::Pending => None,
            other => Some(other),
        })?
    }

    /// Frees a batch; `NotReady` while a task is pending.
    pub fn free_batch(&self, batch: BatchId) -> Result<()> {
        self.with_core(|c| c.free_batch(batch))
    }

    /// Cancels a task; it ends `Canceled` and its memory is not touched afterwards.
    /// A write frame being sent goes on from a copy (the peer must receive
    /// whole frames), so this does not wait for the peer to read.
    /// A task on the same-host path ends once the peer's copies already
    /// under way are done (they write or read the task's memory directly);
    /// this call waits for that.
    pub fn cancel_task(&self, task: TaskId) -> Result<()> {
        self.with_core(|c| c.cancel_task(task))?;
        self.wait(self.drain_timeout(), "cancel", |c| {
            c.task_status(task)
                .map_or(Some(()), |t| t.state.is_terminal().then_some(()))
        })
    }

    /// Cancels every pending task of a batch (waiting as [`cancel_task`](Self::cancel_task)).
    pub fn cancel_batch(&self, batch: BatchId) -> Result<()> {
        self.with_core(|c| c.cancel_batch(batch))?;
        self.wait(self.drain_timeout(), "cancel", |c| {
            c.batch_status(batch)
                .map_or(Some(()), |b| (b.state != TaskState::Pending).then_some(()))
        })
    }

    // ---- synchronous helpers (yr.datasystem.TransferEngine) ----

    /// Reads `len` bytes at `remote` of segment `segment` into `local`.
    pub fn transfer_sync_read(&self, segment: &str, local: u64, remote: u64, len: u64) -> Result<()> {
        self.batch_transfer_sync(Op::Read, segment, &[local], &[remote], &[len])
    }

    /// Writes `len` bytes at `local` to `remote` of segment `segment`.
    pub fn transfer_sync_write(&self, segment: &str, local: u64, remote: u64, len: u64) -> Result<()> {
        self.batch_transfer_sync(Op::Write, segment, &[local], &[remote], &[len])
    }

    /// Reads many spans at once; the lists must have equal, non-zero lengths.
    pub fn batch_transfer_sync_read(
        &self,
        segment: &str,
        local: &[u64],
        remote: &[u64],
        lens: &[u64],
    ) -> Result<()> {
        self.batch_transfer_sync(Op::Read, segment, local, remote, lens)
    }

    /// Writes many spans at once; the lists must have equal, non-zero lengths.
    pub fn batch_transfer_sync_write(
        &self,
        segment: &str,
        local: &[u64],
        remote: &[u64],
        lens: &[u64],
    ) -> Result<()> {
        self.batch_transfer_sync(Op::Write, segment, local, remote, lens)
    }

    fn batch_transfer_sync(
        &self,
        op: Op,
        segment: &str,
        local: &[u64],
        remote: &[u64],
        lens: &[u64],
    ) -> Result<()> {
        if local.is_empty() {
            return Err(status!(Invalid, "empty address lists"));
        }
        if local.len() != remote.len() || local.len() != lens.len() {
            return Err(status!(
                Invalid,
                "lists of different lengths: {} local, {} remote, {} lengths",
                local.len(),
                remote.len(),
                lens.len()
            ));
        }
        let count = u32::try_from(local.len())
            .map_err(|_| status!(Invalid, "{} requests in one batch", local.len()))?;
        let segment = self.segment_by_name(segment)?;
        let reqs: Vec<Request> = (0..local.len())
            .map(|i| Request {
                op,
                local: local[i],
                segment,
                remote: remote[i],
                len: lens[i],
            })
            .collect();
        let batch = self.allocate_batch(count)?;
        let result = self
            .submit(batch, &reqs)
            .and_then(|()| self.wait_batch(batch, self.drain_timeout()));
        if result.is_err() {
            let _ = self.cancel_batch(batch);
            let _ = self.wait_batch(batch, self.drain_timeout());
        }
        let first_failure = self.first_failure(batch);
        let _ = self.free_batch(batch);
        let status = result?;
        match status.state {
            TaskState::Completed => Ok(()),
            _ => {
                Err(first_failure.unwrap_or_else(|| status!(RuntimeError, "batch ended {:?}", status.state)))
            }
        }
    }

    fn first_failure(&self, batch: BatchId) -> Option<Status> {
        if let Some(e) = self.batch_error(batch) {
            return Some(e);
        }
        let tasks = self.tasks_status(batch).ok()?;
        tasks.iter().enumerate().find_map(|(i, t)| {
            let code = match t.state {
                TaskState::Failed(code) => code,
                TaskState::Canceled => ErrorCode::Canceled,
                TaskState::Timeout => ErrorCode::Timeout,
                _ => return None,
            };
            Some(status!(=code, "task {i}: {code} after {} of {} bytes", t.transferred, t.len))
        })
    }

    // ---- notifications ----

    /// Sends a notification to an opened segment.
    pub fn send_notification(&self, id: SegmentId, name: &str, msg: &[u8]) -> Result<()> {
        self.with_core(|c| c.send_notification(id, name, msg))
    }

    /// Takes the notifications received so far (possibly none).
    pub fn take_notifications(&self) -> Vec<Notification> {
        self.with_core(|c| c.take_notifications())
    }

    /// Waits up to `timeout` for at least one notification and takes all.
    pub fn wait_notifications(&self, timeout: Duration) -> Vec<Notification> {
        self.wait(timeout, "notifications", |c| {
            let n = c.take_notifications();
            (!n.is_empty()).then_some(n)
        })
        .unwrap_or_default()
    }

    // ---- shutdown ----

    /// Refuses new work (`NotReady`), lets work in flight finish for up to
    /// the transfer timeout, fails the rest, closes every connection and
    /// stops the event loop. Idempotent.
    pub fn finalize(&self) {
        // Peers stop finding this engine first.
        let publication = self.publication.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut p) = publication {
            if let Err(e) = p.withdraw() {
                warn!("{}: the entry expires with its lease", e.message());
            }
        }
        self.with_core(|c| c.begin_finalize());
        // Our tasks, and the requests peers made of us, finish first.
        let _ = self.wait(self.cfg.transfer_timeout, "finalize", |c| {
            (c.tasks_in_flight() == 0 && !c.serving_peers()).then_some(())
        });
        // Peers close their imports of our device memory before we close
        // the exports (CANN's order); each waits at most KEY_CLOSE_WAIT.
        self.with_core(|c| c.withdraw_keys());
        let _ = self.wait(crate::same_host::device::KEY_CLOSE_WAIT, "finalize", |c| {
            (!c.keys_closing_any()).then_some(())
        });
        self.with_core(|c| c.shutdown());
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.shared.waker.wake();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                warn!("event loop thread of {} panicked", self.segment_name);
            }
        }
    }
}

/// Whether `name` reads as `host:port` (a port after the last colon).
fn is_host_port(name: &str) -> bool {
    name.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

/// What this engine publishes in the directory.
fn own_entry(cfg: &EngineConfig, name: &str, addr: SocketAddr) -> Result<Entry> {
    if addr.ip().is_unspecified() {
        return Err(status!(
            Invalid,
            "listen {addr} is no address peers can reach: with a directory, listen on the one they use"
        ));
    }
    let nonce = crate::core::random_nonce();
    let mut paths = vec!["tcp".to_string()];
    if cfg.path != Path::Tcp {
        paths.push("shm".into());
    }
    Ok(Entry {
        name: name.to_string(),
        tcp: addr,
        paths,
        location: cfg.location.to_string(),
        host: rustix::system::uname().nodename().to_string_lossy().into_owned(),
        pid: std::process::id(),
        instance: nonce[..8].iter().map(|b| format!("{b:02x}")).collect(),
    })
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.finalize();
    }
}

/// The `Timeout` of an unregister that did not end: the memory at `addr` is
/// still in use and must not be freed yet.
fn still_in_use(addr: u64, e: Status) -> Status {
    if e.code() != ErrorCode::Timeout {
        return e;
    }
    status!(
        Timeout,
        "{}: the memory at {addr:#x} is still in use (a transfer, or its registration with the RDMA NIC): do not free it yet",
        e.message()
    )
}
