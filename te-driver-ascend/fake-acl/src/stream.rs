//! Streams (a task queue drained by one worker thread each), events and the byte copies.
//!
//! Workers never take the global state lock: a task carries everything it needs (open device
//! files, offsets, host pointers, the event it completes), so a slow or stalled stream never
//! blocks other API calls.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::codes::*;
use crate::fault;

/// One end of a copy, resolved and validated when the copy is submitted.
pub enum Loc {
    /// Host memory the caller promised stays valid until the copy completes.
    Host(*mut u8),
    /// Bytes of a device file.
    Dev {
        /// The device's backing file (the exporter's file for an imported range).
        file: Arc<File>,
        /// Byte offset in that file.
        off: u64,
        /// For an imported range: the export record whose removal revokes the mapping.
        revoke: Option<PathBuf>,
    },
}

// SAFETY: a `Loc::Host` pointer is only dereferenced by the copy, and the ACL contract (the
// caller keeps host buffers of asynchronous copies valid until the stream is synchronised) is
// what makes handing it to the worker thread sound; `File` and `PathBuf` are `Send` already.
unsafe impl Send for Loc {}

const CHUNK: usize = 1 << 20;

fn io_err(_: std::io::Error) -> i32 {
    ACL_ERROR_RT_DEVICE_MEM_ERROR
}

fn check_revoked(l: &Loc) -> Result<(), i32> {
    if let Loc::Dev { revoke: Some(p), .. } = l {
        if !p.exists() {
            return Err(ACL_ERROR_RT_IPC_ERROR);
        }
    }
    Ok(())
}

/// Copies `count` bytes from `src` to `dst`. Imported ranges are checked for revocation first.
pub fn copy(dst: &Loc, src: &Loc, count: usize) -> Result<(), i32> {
    check_revoked(dst)?;
    check_revoked(src)?;
    if count == 0 {
        return Ok(());
    }
    match (dst, src) {
        (Loc::Host(d), Loc::Host(s)) => {
            // SAFETY: both are host pointers the caller vouches for, each valid for `count` bytes
            // (ACL contract); `copy` tolerates overlap.
            unsafe { std::ptr::copy(*s, *d, count) };
            Ok(())
        }
        (Loc::Dev { file, off, .. }, Loc::Host(s)) => {
            // SAFETY: the caller vouches that `s` is valid for reads of `count` bytes.
            let buf = unsafe { std::slice::from_raw_parts(*s as *const u8, count) };
            file.write_all_at(buf, *off).map_err(io_err)
        }
        (Loc::Host(d), Loc::Dev { file, off, .. }) => {
            // SAFETY: the caller vouches that `d` is valid for writes of `count` bytes and not
            // aliased by anything we read.
            let buf = unsafe { std::slice::from_raw_parts_mut(*d, count) };
            file.read_exact_at(buf, *off).map_err(io_err)
        }
        (
            Loc::Dev {
                file: df, off: doff, ..
            },
            Loc::Dev {
                file: sf, off: soff, ..
            },
        ) => {
            let mut buf = vec![0u8; count.min(CHUNK)];
            let mut done = 0usize;
            while done < count {
                let n = (count - done).min(CHUNK);
                sf.read_exact_at(&mut buf[..n], soff + done as u64)
                    .map_err(io_err)?;
                df.write_all_at(&buf[..n], doff + done as u64).map_err(io_err)?;
                done += n;
            }
            Ok(())
        }
    }
}

/// Sets `count` bytes at `dst` to `value`. Imported ranges are checked for revocation first.
pub fn fill(dst: &Loc, value: u8, count: usize) -> Result<(), i32> {
    check_revoked(dst)?;
    match dst {
        Loc::Host(d) => {
            // SAFETY: the caller vouches that `d` is valid for writes of `count` bytes.
            unsafe { d.write_bytes(value, count) };
            Ok(())
        }
        Loc::Dev { file, off, .. } => {
            let buf = vec![value; count.min(CHUNK)];
            let mut done = 0usize;
            while done < count {
                let n = (count - done).min(CHUNK);
                file.write_all_at(&buf[..n], off + done as u64).map_err(io_err)?;
                done += n;
            }
            Ok(())
        }
    }
}

/// A task on a stream.
pub enum Task {
    /// A copy; `fail != 0` makes it fail with that code without copying (injected fault).
    Copy {
        dst: Loc,
        src: Loc,
        count: usize,
        fail: i32,
    },
    /// Sets `count` bytes at `dst` to `value`.
    Fill { dst: Loc, value: u8, count: usize },
    /// Completes generation `gen` of an event.
    Record { ev: Arc<Event>, gen: u64 },
    /// Holds the stream until generation `gen` of an event completed.
    Wait { ev: Arc<Event>, gen: u64 },
    /// Sets a notify.
    RecordNotify(Arc<Notify>),
    /// Holds the stream until a notify is set, then clears it; fails with
    /// `ACL_ERROR_RT_WAIT_TIMEOUT` after `timeout` (`None`: forever).
    WaitNotify {
        notify: Arc<Notify>,
        timeout: Option<Duration>,
    },
}

#[derive(Default)]
struct Queue {
    tasks: VecDeque<Task>,
    busy: bool,
    /// First error of a failed task since the last synchronisation (0 = none).
    sticky: i32,
    shutdown: bool,
}

/// A stream: a FIFO of tasks run by its own worker thread.
pub struct Stream {
    q: Mutex<Queue>,
    cv: Condvar,
    worker: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits on `cv` while `busy` holds, for at most `timeout` (`None`: forever); past it the
/// error is `code`.
fn wait_while<'a, T>(
    cv: &Condvar,
    mut guard: MutexGuard<'a, T>,
    timeout: Option<Duration>,
    code: i32,
    busy: impl Fn(&T) -> bool,
) -> Result<MutexGuard<'a, T>, i32> {
    let deadline = timeout.map(|t| Instant::now() + t);
    while busy(&guard) {
        guard = match deadline {
            None => cv.wait(guard).unwrap_or_else(|e| e.into_inner()),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Err(code);
                }
                cv.wait_timeout(guard, d - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
    Ok(guard)
}

impl Stream {
    /// Creates a stream and starts its worker.
    pub fn start() -> Result<Arc<Stream>, i32> {
        let s = Arc::new(Stream {
            q: Mutex::default(),
            cv: Condvar::new(),
            worker: Mutex::new(None),
        });
        let w = Arc::clone(&s);
        let h = std::thread::Builder::new()
            .name("te-fake-acl-stream".into())
            .spawn(move || w.run())
            .map_err(|_| ACL_ERROR_RT_INTERNAL_ERROR)?;
        *lock(&s.worker) = Some(h);
        Ok(s)
    }

    /// Appends a task.
    pub fn push(&self, t: Task) {
        lock(&self.q).tasks.push_back(t);
        self.cv.notify_all();
    }

    fn run(&self) {
        loop {
            let (task, sticky) = {
                let mut q = lock(&self.q);
                loop {
                    if let Some(t) = q.tasks.pop_front() {
                        q.busy = true;
                        break (t, q.sticky);
                    }
                    if q.shutdown {
                        return;
                    }
                    q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            // A slow device: the task starts its work only after the stall, so nothing it does
            // is visible early.
            let stall = fault::stall_ms();
            if stall > 0 {
                std::thread::sleep(Duration::from_millis(u64::from(stall)));
            }
            let result = match task {
                Task::Copy { fail, .. } if fail != 0 => Err(fail),
                Task::Copy { dst, src, count, .. } => copy(&dst, &src, count),
                Task::Fill { dst, value, count } => fill(&dst, value, count),
                Task::Record { ev, gen } => {
                    ev.complete(gen, sticky);
                    Ok(())
                }
                Task::Wait { ev, gen } => {
                    ev.wait_gen(gen);
                    Ok(())
                }
                Task::RecordNotify(n) => {
                    n.record();
                    Ok(())
                }
                Task::WaitNotify { notify, timeout } => notify.wait_and_reset(timeout),
            };
            let mut q = lock(&self.q);
            if let Err(code) = result {
                if q.sticky == 0 {
                    q.sticky = code;
                }
            }
            q.busy = false;
            drop(q);
            self.cv.notify_all();
        }
    }

    /// Waits until every task submitted so far ran; `None` = forever. Returns the sticky error
    /// (and clears it), or `ACL_ERROR_RT_STREAM_SYNC_TIMEOUT`.
    pub fn sync(&self, timeout: Option<Duration>) -> Result<(), i32> {
        let q = lock(&self.q);
        let mut q = wait_while(&self.cv, q, timeout, ACL_ERROR_RT_STREAM_SYNC_TIMEOUT, |q| {
            !q.tasks.is_empty() || q.busy
        })?;
        match std::mem::take(&mut q.sticky) {
            0 => Ok(()),
            e => Err(e),
        }
    }

    /// Drains the queue, stops the worker and joins it.
    pub fn shutdown(&self) {
        lock(&self.q).shutdown = true;
        self.cv.notify_all();
        if let Some(h) = lock(&self.worker).take() {
            let _ = h.join();
        }
    }
}

#[derive(Default)]
struct EvState {
    /// Generations handed out by `aclrtRecordEvent` (0 = never recorded).
    recorded: u64,
    /// Highest generation a stream reached.
    completed: u64,
    /// Sticky error of the stream when it reached the last completed generation.
    error: i32,
}

/// An event: completes when a stream reaches the marker of its latest record.
#[derive(Default)]
pub struct Event {
    s: Mutex<EvState>,
    cv: Condvar,
}

/// What a query of an event finds.
pub enum EvStatus {
    /// Never recorded, or the stream reached the latest record.
    Complete,
    /// The latest record is still queued.
    NotReady,
}

impl Event {
    /// Starts a new record; returns its generation.
    pub fn record(&self) -> u64 {
        let mut s = lock(&self.s);
        s.recorded += 1;
        s.recorded
    }

    /// The generation a `aclrtStreamWaitEvent` issued now has to wait for.
    pub fn current(&self) -> u64 {
        lock(&self.s).recorded
    }

    fn complete(&self, gen: u64, error: i32) {
        let mut s = lock(&self.s);
        if gen > s.completed {
            s.completed = gen;
            s.error = error;
        }
        drop(s);
        self.cv.notify_all();
    }

    fn wait_gen(&self, gen: u64) {
        let mut s = lock(&self.s);
        while s.completed < gen {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Status of the latest record, or the error of the stream that reached it.
    pub fn query(&self) -> Result<EvStatus, i32> {
        let s = lock(&self.s);
        if s.completed < s.recorded {
            Ok(EvStatus::NotReady)
        } else if s.recorded > 0 && s.error != 0 {
            Err(s.error)
        } else {
            Ok(EvStatus::Complete)
        }
    }

    /// Blocks until the latest record (as of now) completed.
    pub fn synchronize(&self) -> Result<(), i32> {
        let target = self.current();
        self.wait_gen(target);
        let s = lock(&self.s);
        if target > 0 && s.completed == target && s.error != 0 {
            Err(s.error)
        } else {
            Ok(())
        }
    }
}

/// A notify (`aclrtNotify`): a flag one stream sets (`aclrtRecordNotify`) and another waits for
/// and clears (`aclrtWaitAndResetNotify`). Unlike an event, a wait queued before the record
/// holds the stream until the record runs.
#[derive(Default)]
pub struct Notify {
    set: Mutex<bool>,
    cv: Condvar,
}

impl Notify {
    fn record(&self) {
        *lock(&self.set) = true;
        self.cv.notify_all();
    }

    fn wait_and_reset(&self, timeout: Option<Duration>) -> Result<(), i32> {
        let set = lock(&self.set);
        let mut set = wait_while(&self.cv, set, timeout, ACL_ERROR_RT_WAIT_TIMEOUT, |set| !*set)?;
        *set = false;
        Ok(())
    }
}
