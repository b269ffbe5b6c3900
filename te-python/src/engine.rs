//! `te.Engine`: te_runtime::Engine from Python.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyString, PyTuple};
use te_runtime::{
    BatchId, Engine, EngineConfig, ErrorCode, Location, Op, Path, Perm, Request as TeRequest, SegmentId,
    Status, StreamHandle, TaskId, TaskState,
};

use crate::addr::{resolve, Keep, Span, Use};
use crate::errors::{error, invalid, status, OrRaise};
use crate::memory::Memory;
use crate::types::{BatchStatus, Notification, Region, Request, TaskStatus};

/// Blocking waits run in slices this long, with a check for signals
/// (Ctrl-C) between them.
const SLICE: Duration = Duration::from_millis(50);

/// Locks a mutex, taking a poisoned one anyway (a panic elsewhere must not
/// stop the engine from being used or closed).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn parse_perm(py: Python<'_>, s: &str) -> PyResult<Perm> {
    Ok(match s {
        "local_only" | "local" => Perm::LOCAL_ONLY,
        "remote_read" | "read" => Perm::REMOTE_READ,
        "remote_write" | "write" => Perm::REMOTE_WRITE,
        "remote_read_write" | "read_write" | "rw" => Perm::REMOTE_READ_WRITE,
        other => {
            return Err(invalid(
                py,
                format!(
                    "unknown permission {other:?}: expected local_only, remote_read, remote_write or \
                     remote_read_write"
                ),
            ))
        }
    })
}

fn parse_path(py: Python<'_>, s: &str) -> PyResult<Path> {
    s.parse::<Path>().or_raise(py)
}

fn parse_op(op: &Bound<'_, PyAny>) -> PyResult<Op> {
    let py = op.py();
    if let Ok(s) = op.cast::<PyString>() {
        return match s.to_str()? {
            "read" | "Read" | "READ" => Ok(Op::Read),
            "write" | "Write" | "WRITE" => Ok(Op::Write),
            other => Err(invalid(
                py,
                format!("unknown op {other:?}: expected \"read\" or \"write\""),
            )),
        };
    }
    match op.extract::<i64>() {
        Ok(0) => Ok(Op::Read),
        Ok(1) => Ok(Op::Write),
        _ => Err(invalid(
            py,
            format!("unknown op {op}: expected \"read\"/\"write\" or 0 (read) / 1 (write)"),
        )),
    }
}

fn seconds(py: Python<'_>, name: &str, v: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let s: f64 = v
        .extract()
        .map_err(|_| invalid(py, format!("{name} {v} is not a number of seconds")))?;
    Duration::try_from_secs_f64(s)
        .map_err(|_| invalid(py, format!("{name} {s} is not a valid number of seconds")))
}

fn timeout_arg(py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Duration>> {
    timeout
        .map(|t| {
            Duration::try_from_secs_f64(t)
                .map_err(|_| invalid(py, format!("timeout {t} is not a valid number of seconds")))
        })
        .transpose()
}

fn config_from(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<EngineConfig> {
    let mut c = EngineConfig::default();
    let Some(kwargs) = kwargs else { return Ok(c) };
    for (k, v) in kwargs.iter() {
        let key: String = k.extract()?;
        let num = |name: &str| -> PyResult<u64> {
            v.extract::<u64>()
                .map_err(|_| invalid(py, format!("{name} {v} is not a non-negative integer")))
        };
        let small = |name: &str| -> PyResult<u32> {
            let n = num(name)?;
            u32::try_from(n).map_err(|_| invalid(py, format!("{name} {n} is above {}", u32::MAX)))
        };
        let text = |name: &str| -> PyResult<String> {
            v.extract::<String>()
                .map_err(|_| invalid(py, format!("{name} {v} is not a string")))
        };
        match key.as_str() {
            "listen" => c.listen = text("listen")?,
            "segment_name" => {
                c.segment_name = if v.is_none() {
                    None
                } else {
                    Some(text("segment_name")?)
                }
            }
            "directory" => {
                c.directory = if v.is_none() {
                    None
                } else {
                    Some(text("directory")?)
                }
            }
            "directory_prefix" => c.directory_prefix = text("directory_prefix")?,
            "directory_ttl" => c.directory_ttl = seconds(py, "directory_ttl", &v)?,
            "location" => c.location = text("location")?.parse::<Location>().or_raise(py)?,
            "path" => c.path = parse_path(py, &text("path")?)?,
            "secret" => {
                c.secret = if v.is_none() {
                    None
                } else if let Ok(s) = v.extract::<String>() {
                    Some(s.into_bytes())
                } else {
                    Some(
                        v.extract::<Vec<u8>>()
                            .map_err(|_| invalid(py, "secret is not str or bytes"))?,
                    )
                }
            }
            "max_payload" => c.max_payload = small("max_payload")?,
            "max_outstanding" => c.max_outstanding = small("max_outstanding")?,
            "connect_timeout" => c.connect_timeout = seconds(py, "connect_timeout", &v)?,
            "transfer_timeout" => c.transfer_timeout = seconds(py, "transfer_timeout", &v)?,
            "heartbeat_interval" => c.heartbeat_interval = seconds(py, "heartbeat_interval", &v)?,
            "idle_timeout" => c.idle_timeout = seconds(py, "idle_timeout", &v)?,
            "max_regions" => c.max_regions = num("max_regions")? as usize,
            "max_batches" => c.max_batches = num("max_batches")? as usize,
            "max_tasks" => c.max_tasks = num("max_tasks")? as usize,
            "max_connections" => c.max_connections = num("max_connections")? as usize,
            "max_connections_per_source" => {
                c.max_connections_per_source = num("max_connections_per_source")? as usize
            }
            "max_handshaking" => c.max_handshaking = num("max_handshaking")? as usize,
            "min_frame_rate" => c.min_frame_rate = small("min_frame_rate")?,
            "max_segments" => c.max_segments = num("max_segments")? as usize,
            "max_notifications" => c.max_notifications = num("max_notifications")? as usize,
            "busy_poll" => {
                c.busy_poll = v
                    .extract()
                    .map_err(|_| invalid(py, format!("busy_poll {v} is not a bool")))?
            }
            other => {
                return Err(invalid(
                    py,
                    format!(
                        "unknown EngineConfig field {other:?}; known: listen, segment_name, location, path, \
                         secret, max_payload, max_outstanding, connect_timeout, transfer_timeout, \
                         heartbeat_interval, idle_timeout, max_regions, max_batches, max_tasks, \
                         max_connections, max_connections_per_source, max_handshaking, min_frame_rate, \
                         max_segments, max_notifications, busy_poll, directory, directory_prefix, \
                         directory_ttl"
                    ),
                ))
            }
        }
    }
    c.validate().or_raise(py)?;
    Ok(c)
}

/// A te transfer engine: registers memory, reads and writes the registered
/// memory of peers by address, in batches or synchronously, and exchanges
/// notifications that arrive after the data.
///
/// `te.Engine(**config)` takes the fields of te's `EngineConfig` as keyword
/// arguments: `listen` (`"host:port"`, default `"127.0.0.1:0"`: a free
/// loopback port), `segment_name`, `location` (`"cpu"`, `"sim:N"`,
/// `"npu:N"`), `path` (`"auto"`, `"tcp"`, `"shm"`, `"rdma"`), `secret` (str or bytes),
/// `max_payload`, `max_outstanding`, `connect_timeout`, `transfer_timeout`,
/// `heartbeat_interval`, `idle_timeout` (seconds), `max_regions`,
/// `max_batches`, `max_tasks`, `max_connections`, `max_connections_per_source`,
/// `max_handshaking`, `min_frame_rate` (bytes per second), `max_segments`, `max_notifications`,
/// `busy_poll`, `directory` (`"etcd://host:port"` or `"redis://host:port[/db]"`:
/// `segment_name` is published there and names are looked up there),
/// `directory_prefix` (default `"te"`), `directory_ttl` (seconds, default 10).
/// A bad value raises `te.InvalidError` naming it.
///
/// Use it as a context manager (`with te.Engine() as e:`) or call
/// `finalize()`. Every method may be called from any thread; calls that
/// wait or copy release the GIL, and blocking waits end with
/// `KeyboardInterrupt` on Ctrl-C after canceling what they waited for.
///
/// Wherever an address is taken, so is an `int` with a length, a
/// `te.Memory`, or an object with the buffer protocol (bytearray, numpy),
/// `__array_interface__`, `__dlpack__` or `data_ptr()` (torch tensors).
#[pyclass(module = "te", name = "Engine", frozen)]
pub struct PyEngine {
    engine: Arc<Engine>,
    location: Location,
    path: Path,
    /// What keeps registered Python objects alive, by base address.
    regs: Mutex<HashMap<u64, Option<Keep>>>,
    /// Segments opened by name for the synchronous calls.
    segs: Mutex<HashMap<String, SegmentId>>,
    closed: AtomicBool,
    /// Threads inside a blocking wait of this engine.
    waiters: AtomicUsize,
}

/// Counts a thread in [`PyEngine::waiters`] while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicUsize) -> Waiting<'a> {
        n.fetch_add(1, Ordering::AcqRel);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PyEngine {
    fn eng(&self) -> Arc<Engine> {
        Arc::clone(&self.engine)
    }

    /// The segment named `name`, opened on first use.
    fn segment_for(&self, py: Python<'_>, name: &str) -> PyResult<SegmentId> {
        if let Some(id) = lock(&self.segs).get(name).copied() {
            return Ok(id);
        }
        let e = self.eng();
        let n = name.to_string();
        let id = py.detach(move || e.open_segment(&n)).or_raise(py)?;
        // The engine keeps one segment per name: a thread that opened it
        // meanwhile got the same id.
        lock(&self.segs).insert(name.to_string(), id);
        Ok(id)
    }

    /// Forgets a cached segment whose connection failed, so that the next
    /// call opens it anew (the engine reconnects; tasks of other threads on
    /// it are left alone).
    fn forget_segment(&self, name: &str) {
        lock(&self.segs).remove(name);
    }

    /// A segment argument: an id, or a name (opened on first use).
    fn segment_arg(&self, seg: &Bound<'_, PyAny>) -> PyResult<SegmentId> {
        let py = seg.py();
        if let Ok(s) = seg.cast::<PyString>() {
            return self.segment_for(py, s.to_str()?);
        }
        seg.extract::<u32>()
            .map(SegmentId)
            .map_err(|_| invalid(py, format!("segment {seg} is neither a segment id nor a name")))
    }

    /// Waits for `batch` in slices, checking for signals between them; on
    /// Ctrl-C the batch is canceled (and waited for) before the
    /// `KeyboardInterrupt` propagates.
    fn wait_sliced(
        &self,
        py: Python<'_>,
        batch: BatchId,
        timeout: Option<Duration>,
    ) -> PyResult<te_runtime::BatchStatus> {
        let _waiting = Waiting::new(&self.waiters);
        let start = Instant::now();
        loop {
            let slice = match timeout {
                Some(t) => {
                    let left = t.saturating_sub(start.elapsed());
                    if left.is_zero() {
                        return Err(error(
                            py,
                            ErrorCode::Timeout,
                            &format!("batch {} still pending after {t:?}", batch.to_u64()),
                        ));
                    }
                    left.min(SLICE)
                }
                None => SLICE,
            };
            let e = self.eng();
            match py.detach(move || e.wait_batch(batch, slice)) {
                Ok(s) => return Ok(s),
                Err(st) if st.code() == ErrorCode::Timeout => {}
                Err(st) => return Err(status(py, &st)),
            }
            if let Err(interrupt) = py.check_signals() {
                let e = self.eng();
                py.detach(move || {
                    let _ = e.cancel_batch(batch);
                    let _ = e.wait_batch(batch, Duration::from_secs(60));
                });
                return Err(interrupt);
            }
        }
    }

    /// Resolves the local sides and builds the requests of one op.
    fn spans_for(
        &self,
        py: Python<'_>,
        op: Op,
        locals: &Bound<'_, PyAny>,
        remotes: &[u64],
        lengths: Option<Vec<u64>>,
    ) -> PyResult<Vec<Span>> {
        let locals: Vec<Bound<'_, PyAny>> = locals
            .try_iter()
            .map_err(|_| invalid(py, "local buffers must be a list"))?
            .collect::<PyResult<_>>()?;
        let n = locals.len();
        if n == 0 {
            return Err(invalid(py, "empty address lists"));
        }
        if let Some(l) = &lengths {
            if l.len() != n || remotes.len() != n {
                return Err(invalid(
                    py,
                    format!(
                        "lists of different lengths: {n} local, {} remote, {} lengths",
                        remotes.len(),
                        l.len()
                    ),
                ));
            }
        } else if remotes.len() != n {
            return Err(invalid(
                py,
                format!("lists of different lengths: {n} local, {} remote", remotes.len()),
            ));
        }
        let how = if op == Op::Read { Use::Write } else { Use::Read };
        locals
            .iter()
            .enumerate()
            .map(|(i, l)| resolve(l, lengths.as_ref().map(|v| v[i]), how))
            .collect()
    }

    /// One synchronous batch to the segment named `target`.
    fn sync_batch(
        &self,
        py: Python<'_>,
        op: Op,
        target: &str,
        spans: Vec<Span>,
        remotes: &[u64],
    ) -> PyResult<()> {
        let segment = self.segment_for(py, target)?;
        let reqs: Vec<TeRequest> = spans
            .iter()
            .zip(remotes)
            .map(|(s, &remote)| TeRequest {
                op,
                local: s.addr,
                segment,
                remote,
                len: s.len,
            })
            .collect();
        let count = u32::try_from(reqs.len())
            .map_err(|_| invalid(py, format!("{} requests in one batch", reqs.len())))?;
        let e = self.eng();
        let batch = py
            .detach(move || {
                let b = e.allocate_batch(count)?;
                match e.submit(b, &reqs) {
                    Ok(()) => Ok(b),
                    Err(err) => {
                        let _ = e.free_batch(b);
                        Err(err)
                    }
                }
            })
            .or_raise(py)?;
        let waited = self.wait_sliced(py, batch, None);
        let e = self.eng();
        let outcome: Result<(), Status> = py.detach(move || {
            let failure = first_failure(&e, batch);
            let _ = e.free_batch(batch);
            match failure {
                Some(f) => Err(f),
                None => Ok(()),
            }
        });
        drop(spans);
        let st = waited?;
        match outcome {
            Ok(()) if st.state == TaskState::Completed => Ok(()),
            Ok(()) => Err(error(
                py,
                ErrorCode::RuntimeError,
                &format!("batch ended {:?}", st.state),
            )),
            Err(f) => {
                if matches!(f.code(), ErrorCode::Disconnected | ErrorCode::RuntimeError) {
                    self.forget_segment(target);
                }
                Err(status(py, &f))
            }
        }
    }

    fn requests(&self, py: Python<'_>, requests: &Bound<'_, PyAny>) -> PyResult<(Vec<TeRequest>, Vec<Span>)> {
        let mut reqs = Vec::new();
        let mut keep = Vec::new();
        for (i, item) in requests
            .try_iter()
            .map_err(|_| invalid(py, "requests must be a list"))?
            .enumerate()
        {
            let item = item?;
            // The fast path: a tuple of ints, as a hot loop builds them.
            if let Ok(t) = item.cast::<PyTuple>() {
                if t.len() == 5 {
                    let (o, l, g, r, n) = (
                        t.get_item(0)?,
                        t.get_item(1)?,
                        t.get_item(2)?,
                        t.get_item(3)?,
                        t.get_item(4)?,
                    );
                    if l.is_instance_of::<PyInt>() {
                        if let (Ok(local), Ok(segment), Ok(remote), Ok(len)) = (
                            l.extract::<u64>(),
                            g.extract::<u32>(),
                            r.extract::<u64>(),
                            n.extract::<u64>(),
                        ) {
                            reqs.push(TeRequest {
                                op: parse_op(&o)?,
                                local,
                                segment: SegmentId(segment),
                                remote,
                                len,
                            });
                            continue;
                        }
                    }
                }
            }
            let (op, local, segment, remote, length) = if let Ok(r) = item.cast::<Request>() {
                let r = r.get();
                (
                    r.op.bind(py).clone(),
                    r.local.bind(py).clone(),
                    r.segment,
                    r.remote,
                    r.length,
                )
            } else {
                let t = item.cast::<PyTuple>().map_err(|_| {
                    invalid(py, format!("request {i} is neither a te.Request nor a tuple (op, local, segment, remote, length)"))
                })?;
                if t.len() != 5 && t.len() != 4 {
                    return Err(invalid(
                        py,
                        format!(
                            "request {i} has {} items: expected (op, local, segment, remote, length)",
                            t.len()
                        ),
                    ));
                }
                let seg: u32 = t.get_item(2)?.extract().map_err(|_| {
                    invalid(
                        py,
                        format!(
                            "request {i}: segment {} is not a segment id",
                            t.get_item(2).map(|x| x.to_string()).unwrap_or_default()
                        ),
                    )
                })?;
                let remote: u64 = t.get_item(3)?.extract().map_err(|_| {
                    invalid(
                        py,
                        format!("request {i}: remote address is not an unsigned integer"),
                    )
                })?;
                let length: Option<u64> = if t.len() == 5 {
                    t.get_item(4)?.extract().map_err(|_| {
                        invalid(
                            py,
                            format!("request {i}: length is not an unsigned integer or None"),
                        )
                    })?
                } else {
                    None
                };
                (t.get_item(0)?, t.get_item(1)?, seg, remote, length)
            };
            let op = parse_op(&op)?;
            let how = if op == Op::Read { Use::Write } else { Use::Read };
            let span = resolve(&local, length, how)?;
            reqs.push(TeRequest {
                op,
                local: span.addr,
                segment: SegmentId(segment),
                remote,
                len: span.len,
            });
            if span.keep.is_some() {
                keep.push(span);
            }
        }
        Ok((reqs, keep))
    }
}

/// The first failure of a batch: its recorded error, or the first task
/// that ended without completing.
fn first_failure(e: &Engine, batch: BatchId) -> Option<Status> {
    if let Some(st) = e.batch_error(batch) {
        return Some(st);
    }
    let tasks = e.tasks_status(batch).ok()?;
    tasks.iter().enumerate().find_map(|(i, t)| {
        let code = match t.state {
            TaskState::Failed(code) => code,
            TaskState::Canceled => ErrorCode::Canceled,
            TaskState::Timeout => ErrorCode::Timeout,
            _ => return None,
        };
        Some(Status::new(
            code,
            &format!("task {i}: {code} after {} of {} bytes", t.transferred, t.len),
        ))
    })
}

fn to_u64_list(py: Python<'_>, what: &str, v: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    v.extract::<Vec<u64>>()
        .map_err(|_| invalid(py, format!("{what} must be a list of unsigned integers")))
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (**kwargs))]
    fn new(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<PyEngine> {
        let cfg = config_from(py, kwargs)?;
        let location = cfg.location;
        let path = cfg.path;
        let engine = py.detach(move || Engine::start(cfg)).or_raise(py)?;
        Ok(PyEngine {
            engine: Arc::new(engine),
            location,
            path,
            regs: Mutex::new(HashMap::new()),
            segs: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
        })
    }

    /// This engine's segment name (what peers open), `host:port`.
    #[getter]
    fn segment_name(&self) -> String {
        self.engine.segment_name()
    }

    /// The port the engine listens on.
    #[getter]
    fn rpc_port(&self) -> u16 {
        self.engine.rpc_port()
    }

    /// Where this engine's memory lives: `cpu`, `sim:N` or `npu:N`.
    #[getter]
    fn location(&self) -> String {
        self.location.to_string()
    }

    /// The configured path to peers: `auto`, `tcp`, `shm` or `rdma`.
    #[getter]
    fn path(&self) -> String {
        self.path.to_string()
    }

    /// True once `finalize()` ran.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Threads blocked in a wait of this engine right now (batch waits,
    /// synchronous transfers, notification waits); for diagnostics.
    #[getter]
    fn waiting(&self) -> usize {
        self.waiters.load(Ordering::Acquire)
    }

    fn __repr__(&self) -> String {
        format!(
            "te.Engine(segment_name={:?}, location={:?}{})",
            self.engine.segment_name(),
            self.location.to_string(),
            if self.closed() { ", closed" } else { "" }
        )
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.finalize(py);
        false
    }

    /// Refuses new work (`te.NotReadyError`), lets work in flight finish
    /// for up to the transfer timeout, fails the rest and stops the engine.
    /// Registered Python objects are released. Idempotent.
    fn finalize(&self, py: Python<'_>) {
        let e = self.eng();
        py.detach(move || e.finalize());
        self.closed.store(true, Ordering::Release);
        let kept: Vec<_> = lock(&self.regs).drain().collect();
        drop(kept);
        lock(&self.segs).clear();
    }

    // ---- memory ----

    /// Registers `obj` (anything address-like; an int needs `length`) so
    /// that peers can reach it as `perm` says (`remote_read_write`
    /// default, `remote_read`, `remote_write`, `local_only`). Returns the
    /// base address. The engine holds the object (and its buffer) until
    /// `unregister`. A read-only buffer is refused unless `perm` is
    /// `remote_read` or `local_only`.
    #[pyo3(signature = (obj, length=None, *, perm="remote_read_write"))]
    fn register(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        length: Option<u64>,
        perm: &str,
    ) -> PyResult<u64> {
        let perm = parse_perm(py, perm)?;
        let span = resolve(
            obj,
            length,
            Use::Register {
                writable: perm.contains(Perm::REMOTE_WRITE),
            },
        )?;
        let (addr, len) = (span.addr, span.len);
        let e = self.eng();
        // SAFETY: the span's owner (buffer export or object) is kept in
        // `regs` until unregister or finalize; an int address is the
        // caller's promise, as in the C-style APIs this mirrors.
        py.detach(move || unsafe { e.register_memory(addr, len, perm) })
            .or_raise(py)?;
        lock(&self.regs).insert(addr, span.keep);
        Ok(addr)
    }

    /// Registers several objects at once, all or nothing; `lengths` (one
    /// per object, None for its size) is optional. Returns the base addresses.
    #[pyo3(signature = (objs, lengths=None, *, perm="remote_read_write"))]
    fn register_batch(
        &self,
        py: Python<'_>,
        objs: &Bound<'_, PyAny>,
        lengths: Option<Vec<Option<u64>>>,
        perm: &str,
    ) -> PyResult<Vec<u64>> {
        let perm = parse_perm(py, perm)?;
        let objs: Vec<Bound<'_, PyAny>> = objs
            .try_iter()
            .map_err(|_| invalid(py, "objects to register must be a list"))?
            .collect::<PyResult<_>>()?;
        if objs.is_empty() {
            return Err(invalid(py, "empty list of regions"));
        }
        if let Some(l) = &lengths {
            if l.len() != objs.len() {
                return Err(invalid(
                    py,
                    format!(
                        "lists of different lengths: {} regions, {} lengths",
                        objs.len(),
                        l.len()
                    ),
                ));
            }
        }
        let how = Use::Register {
            writable: perm.contains(Perm::REMOTE_WRITE),
        };
        let spans: Vec<Span> = objs
            .iter()
            .enumerate()
            .map(|(i, o)| resolve(o, lengths.as_ref().and_then(|l| l[i]), how))
            .collect::<PyResult<_>>()?;
        let regions: Vec<(u64, u64, Perm)> = spans.iter().map(|s| (s.addr, s.len, perm)).collect();
        let e = self.eng();
        // SAFETY: as in `register`, for each span.
        py.detach(move || unsafe { e.register_memory_batch(&regions) })
            .or_raise(py)?;
        let mut regs = lock(&self.regs);
        Ok(spans
            .into_iter()
            .map(|s| {
                regs.insert(s.addr, s.keep);
                s.addr
            })
            .collect())
    }

    /// Unregisters the region whose base is `obj` (an int address, or the
    /// object registered); `te.NotFoundError` unless a region starts
    /// exactly there. When this returns, no transfer touches the memory.
    fn unregister(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let addr = self.base_of(obj)?;
        let e = self.eng();
        py.detach(move || e.unregister_memory(addr)).or_raise(py)?;
        let kept = lock(&self.regs).remove(&addr);
        drop(kept);
        Ok(())
    }

    /// Unregisters several regions (each as `unregister`), stopping at the
    /// first failure.
    fn unregister_batch(&self, py: Python<'_>, objs: &Bound<'_, PyAny>) -> PyResult<()> {
        let objs: Vec<Bound<'_, PyAny>> = objs
            .try_iter()
            .map_err(|_| invalid(py, "regions to unregister must be a list"))?
            .collect::<PyResult<_>>()?;
        if objs.is_empty() {
            return Err(invalid(py, "empty list of regions"));
        }
        for o in &objs {
            self.unregister(py, o)?;
        }
        Ok(())
    }

    /// Allocates `length` bytes of zeroed memory in the engine's location
    /// and registers it with `perm`; returns a `te.Memory` (buffer protocol
    /// for host memory).
    #[pyo3(signature = (length, *, perm="remote_read_write"))]
    fn alloc(&self, py: Python<'_>, length: u64, perm: &str) -> PyResult<Memory> {
        let perm = parse_perm(py, perm)?;
        let e = self.eng();
        let addr = py.detach(move || e.alloc_memory(length, perm)).or_raise(py)?;
        Ok(Memory::new(self.eng(), addr, length, self.location))
    }

    /// Frees memory from `alloc` (same as `mem.free()`).
    fn free(&self, py: Python<'_>, mem: &Bound<'_, Memory>) -> PyResult<()> {
        mem.get().free_now(py)
    }

    /// The locally registered regions.
    fn regions(&self, py: Python<'_>) -> Vec<Region> {
        let e = self.eng();
        py.detach(move || e.regions())
            .into_iter()
            .map(Region::from)
            .collect()
    }

    /// Copies `length` bytes of local registered memory at `addr` out as
    /// bytes (host or device memory).
    fn read_memory<'py>(&self, py: Python<'py>, addr: u64, length: u64) -> PyResult<Bound<'py, PyBytes>> {
        let e = self.eng();
        // Check the range before allocating what would receive it.
        let regions = py.detach(|| e.regions());
        let inside = regions.iter().any(|r| {
            addr >= r.span.addr
                && addr
                    .checked_add(length)
                    .is_some_and(|end| end <= r.span.addr + r.span.len)
        });
        if !inside {
            return Err(error(
                py,
                ErrorCode::NotFound,
                &format!("no registered region holds [{addr:#x}, +{length})"),
            ));
        }
        let mut out = crate::memory::zeroed(py, length)?;
        py.detach(|| e.read_memory(addr, &mut out)).or_raise(py)?;
        Ok(PyBytes::new(py, &out))
    }

    /// Copies `data` (any buffer) into local registered memory at `addr`
    /// (host or device memory).
    fn write_memory(&self, py: Python<'_>, addr: u64, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let src = resolve(data, None, Use::Read)?;
        // SAFETY: `src` holds the source's buffer until after the copy.
        let bytes = unsafe { src.bytes(py) }?;
        let e = self.eng();
        py.detach(|| e.write_memory(addr, bytes)).or_raise(py)
    }

    /// Bytes of host memory the connections hold to stage payloads.
    fn staging_bytes(&self, py: Python<'_>) -> usize {
        let e = self.eng();
        py.detach(move || e.staging_bytes())
    }

    // ---- segments ----

    /// Opens the peer `name` (`host:port`) and waits for the handshake;
    /// returns its segment id. Unreachable: `te.RuntimeError` naming the
    /// address; a refused secret: `te.NotAuthorizedError`.
    fn open_segment(&self, py: Python<'_>, name: &str) -> PyResult<u32> {
        let e = self.eng();
        let n = name.to_string();
        py.detach(move || e.open_segment(&n)).or_raise(py).map(|s| s.0)
    }

    /// Closes the connection to a segment; its running tasks end canceled.
    fn close_segment(&self, py: Python<'_>, segment: u32) -> PyResult<()> {
        lock(&self.segs).retain(|_, id| id.0 != segment);
        let e = self.eng();
        py.detach(move || e.close_segment(SegmentId(segment)))
            .or_raise(py)
    }

    /// The peer's remotely visible regions.
    fn segment_info(&self, py: Python<'_>, segment: u32) -> PyResult<Vec<Region>> {
        let e = self.eng();
        let r = py
            .detach(move || e.segment_info(SegmentId(segment)))
            .or_raise(py)?;
        Ok(r.into_iter().map(Region::from).collect())
    }

    /// The path transfers to the segment take by default: `shm` or `tcp`.
    fn segment_path(&self, py: Python<'_>, segment: u32) -> PyResult<String> {
        let e = self.eng();
        py.detach(move || e.segment_path(SegmentId(segment)))
            .or_raise(py)
            .map(|p| p.to_string())
    }

    // ---- batches ----

    /// Allocates a batch for up to `capacity` tasks; returns its id.
    fn allocate_batch(&self, py: Python<'_>, capacity: u32) -> PyResult<u64> {
        let e = self.eng();
        py.detach(move || e.allocate_batch(capacity))
            .or_raise(py)
            .map(|b| b.to_u64())
    }

    /// Submits `requests` (te.Request or tuples `(op, local, segment,
    /// remote, length)`) into `batch`, all or nothing; `path` (`tcp`,
    /// `shm`, `auto`) overrides the engine's. The local memory must be
    /// registered and stay alive until the tasks end.
    #[pyo3(signature = (batch, requests, *, path=None))]
    fn submit(
        &self,
        py: Python<'_>,
        batch: u64,
        requests: &Bound<'_, PyAny>,
        path: Option<&str>,
    ) -> PyResult<()> {
        let path = path.map(|p| parse_path(py, p)).transpose()?;
        let (reqs, _keep) = self.requests(py, requests)?;
        let e = self.eng();
        let b = BatchId::from_u64(batch);
        py.detach(move || match path {
            Some(p) => e.submit_via(b, &reqs, p),
            None => e.submit(b, &reqs),
        })
        .or_raise(py)
    }

    /// Submits `requests` into a fresh `batch`, ordered on the
    /// application's device `stream` (an `aclrtStream` as an int, as
    /// memfabric's `transfer_async_write_submit(..., stream)` takes, e.g.
    /// `torch_npu.npu.current_stream().npu_stream`): the transfer starts
    /// after the work queued on the stream before this call, and the work
    /// queued after it waits on the device for its end. Returns at once;
    /// the batch reports the outcome.
    fn submit_on_stream(
        &self,
        py: Python<'_>,
        batch: u64,
        requests: &Bound<'_, PyAny>,
        stream: u64,
    ) -> PyResult<()> {
        let (reqs, _keep) = self.requests(py, requests)?;
        let e = self.eng();
        let b = BatchId::from_u64(batch);
        py.detach(move || e.submit_on_stream(b, &reqs, StreamHandle(stream)))
            .or_raise(py)
    }

    /// Submits `requests` like `submit`, and sends the notification
    /// `{name, msg}` to the peer once every task of the batch completed,
    /// after the data is in place (make it the batch's last submission).
    fn submit_with_notify(
        &self,
        py: Python<'_>,
        batch: u64,
        requests: &Bound<'_, PyAny>,
        name: &str,
        msg: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let msg = message_bytes(msg)?;
        let (reqs, _keep) = self.requests(py, requests)?;
        let e = self.eng();
        let b = BatchId::from_u64(batch);
        let name = name.to_string();
        py.detach(move || e.submit_with_notify(b, &reqs, &name, &msg))
            .or_raise(py)
    }

    /// Status of task `index` of `batch`.
    fn task_status(&self, py: Python<'_>, batch: u64, index: u32) -> PyResult<TaskStatus> {
        let e = self.eng();
        let t = TaskId {
            batch: BatchId::from_u64(batch),
            index,
        };
        py.detach(move || e.task_status(t))
            .or_raise(py)
            .map(TaskStatus::from)
    }

    /// Status of every submitted task of `batch`.
    fn tasks_status(&self, py: Python<'_>, batch: u64) -> PyResult<Vec<TaskStatus>> {
        let e = self.eng();
        let r = py
            .detach(move || e.tasks_status(BatchId::from_u64(batch)))
            .or_raise(py)?;
        Ok(r.into_iter().map(TaskStatus::from).collect())
    }

    /// Overall status of `batch`.
    fn batch_status(&self, py: Python<'_>, batch: u64) -> PyResult<BatchStatus> {
        let e = self.eng();
        py.detach(move || e.batch_status(BatchId::from_u64(batch)))
            .or_raise(py)
            .map(BatchStatus::from)
    }

    /// The first failure of `batch` as a `te.Error` (not raised), or None.
    fn batch_error(&self, py: Python<'_>, batch: u64) -> Option<Py<PyAny>> {
        let e = self.eng();
        let b = BatchId::from_u64(batch);
        py.detach(move || first_failure(&e, b))
            .map(|st| status(py, &st).into_value(py).into_any())
    }

    /// Waits until no task of `batch` is pending (at most `timeout`
    /// seconds, default: no limit) and returns its `BatchStatus`. Past the
    /// timeout: `te.TimeoutError`. Ctrl-C cancels the batch and raises
    /// `KeyboardInterrupt`.
    #[pyo3(signature = (batch, timeout=None))]
    fn wait_batch(&self, py: Python<'_>, batch: u64, timeout: Option<f64>) -> PyResult<BatchStatus> {
        let t = timeout_arg(py, timeout)?;
        self.wait_sliced(py, BatchId::from_u64(batch), t)
            .map(BatchStatus::from)
    }

    /// Cancels task `index` of `batch`; it ends canceled and its memory is
    /// not touched afterwards.
    fn cancel_task(&self, py: Python<'_>, batch: u64, index: u32) -> PyResult<()> {
        let e = self.eng();
        let t = TaskId {
            batch: BatchId::from_u64(batch),
            index,
        };
        py.detach(move || e.cancel_task(t)).or_raise(py)
    }

    /// Cancels every pending task of `batch`.
    fn cancel_batch(&self, py: Python<'_>, batch: u64) -> PyResult<()> {
        let e = self.eng();
        py.detach(move || e.cancel_batch(BatchId::from_u64(batch)))
            .or_raise(py)
    }

    /// Frees `batch`; `te.NotReadyError` while a task is pending.
    fn free_batch(&self, py: Python<'_>, batch: u64) -> PyResult<()> {
        let e = self.eng();
        py.detach(move || e.free_batch(BatchId::from_u64(batch)))
            .or_raise(py)
    }

    // ---- synchronous transfers ----

    /// Reads `length` bytes (default: the size of `local`) at `remote` of
    /// the segment named `target` into `local`, and waits. `local` must lie
    /// in memory registered with this engine.
    #[pyo3(signature = (target, local, remote, length=None))]
    fn transfer_sync_read(
        &self,
        py: Python<'_>,
        target: &str,
        local: &Bound<'_, PyAny>,
        remote: u64,
        length: Option<u64>,
    ) -> PyResult<()> {
        let span = resolve(local, length, Use::Write)?;
        self.sync_batch(py, Op::Read, target, vec![span], &[remote])
    }

    /// Writes `length` bytes (default: the size of `local`) of `local` to
    /// `remote` of the segment named `target`, and waits.
    #[pyo3(signature = (target, local, remote, length=None))]
    fn transfer_sync_write(
        &self,
        py: Python<'_>,
        target: &str,
        local: &Bound<'_, PyAny>,
        remote: u64,
        length: Option<u64>,
    ) -> PyResult<()> {
        let span = resolve(local, length, Use::Read)?;
        self.sync_batch(py, Op::Write, target, vec![span], &[remote])
    }

    /// Reads many spans at once: item i of `remotes` into item i of
    /// `locals`; the lists must have equal, non-zero lengths (`lengths`
    /// optional: each local's size).
    #[pyo3(signature = (target, locals, remotes, lengths=None))]
    fn batch_transfer_sync_read(
        &self,
        py: Python<'_>,
        target: &str,
        locals: &Bound<'_, PyAny>,
        remotes: &Bound<'_, PyAny>,
        lengths: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let remotes = to_u64_list(py, "remote addresses", remotes)?;
        let lengths = lengths.map(|l| to_u64_list(py, "lengths", l)).transpose()?;
        let spans = self.spans_for(py, Op::Read, locals, &remotes, lengths)?;
        self.sync_batch(py, Op::Read, target, spans, &remotes)
    }

    /// Writes many spans at once: item i of `locals` to item i of `remotes`.
    #[pyo3(signature = (target, locals, remotes, lengths=None))]
    fn batch_transfer_sync_write(
        &self,
        py: Python<'_>,
        target: &str,
        locals: &Bound<'_, PyAny>,
        remotes: &Bound<'_, PyAny>,
        lengths: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let remotes = to_u64_list(py, "remote addresses", remotes)?;
        let lengths = lengths.map(|l| to_u64_list(py, "lengths", l)).transpose()?;
        let spans = self.spans_for(py, Op::Write, locals, &remotes, lengths)?;
        self.sync_batch(py, Op::Write, target, spans, &remotes)
    }

    // ---- notifications ----

    /// Sends the notification `{name, msg}` (msg: bytes or str) to a
    /// segment (an id, or a name opened on first use).
    fn send_notification(
        &self,
        py: Python<'_>,
        segment: &Bound<'_, PyAny>,
        name: &str,
        msg: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let seg = self.segment_arg(segment)?;
        let msg = message_bytes(msg)?;
        let e = self.eng();
        let name = name.to_string();
        py.detach(move || e.send_notification(seg, &name, &msg))
            .or_raise(py)
    }

    /// Takes the notifications received so far (possibly none).
    fn take_notifications(&self, py: Python<'_>) -> Vec<Notification> {
        let e = self.eng();
        py.detach(move || e.take_notifications())
            .into_iter()
            .map(|n| Notification::new(py, n))
            .collect()
    }

    /// Waits up to `timeout` seconds (default: no limit) for at least one
    /// notification and takes all (empty after the timeout). Ctrl-C raises
    /// `KeyboardInterrupt`.
    #[pyo3(signature = (timeout=None))]
    fn wait_notifications(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Vec<Notification>> {
        let t = timeout_arg(py, timeout)?;
        let _waiting = Waiting::new(&self.waiters);
        let start = Instant::now();
        loop {
            let slice = match t {
                Some(t) => {
                    let left = t.saturating_sub(start.elapsed());
                    if left.is_zero() {
                        return Ok(Vec::new());
                    }
                    left.min(SLICE)
                }
                None => SLICE,
            };
            let e = self.eng();
            let got = py.detach(move || e.wait_notifications(slice));
            if !got.is_empty() {
                return Ok(got.into_iter().map(|n| Notification::new(py, n)).collect());
            }
            py.check_signals()?;
        }
    }
}

impl PyEngine {
    fn base_of(&self, obj: &Bound<'_, PyAny>) -> PyResult<u64> {
        let py = obj.py();
        if let Ok(a) = obj.extract::<u64>() {
            return Ok(a);
        }
        if obj.cast::<Memory>().is_ok() {
            return Err(invalid(
                py,
                "te.Memory comes from alloc: release it with free(), not unregister()",
            ));
        }
        // The object's base address, without holding it.
        resolve(obj, None, Use::Read).map(|s| s.addr)
    }
}

fn message_bytes(msg: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = msg.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes().to_vec());
    }
    let span = resolve(msg, None, Use::Read)?;
    // SAFETY: `span` holds the message's buffer while it is copied here.
    let v = unsafe { span.bytes(msg.py()) }?.to_vec();
    Ok(v)
}
