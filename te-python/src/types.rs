//! Plain value classes: statuses, regions, notifications, requests.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use te_runtime::{Notification as TeNotification, Perm, Region as TeRegion, TaskState};

/// A task state as (name, error code): `initial`, `pending`, `completed`,
/// `failed` (with the code), `canceled` (101), `timeout` (100).
pub fn state(s: TaskState) -> (&'static str, Option<u32>) {
    match s {
        TaskState::Initial => ("initial", None),
        TaskState::Pending => ("pending", None),
        TaskState::Completed => ("completed", None),
        TaskState::Failed(code) => ("failed", Some(code.as_u32())),
        TaskState::Canceled => ("canceled", Some(te_runtime::ErrorCode::Canceled.as_u32())),
        TaskState::Timeout => ("timeout", Some(te_runtime::ErrorCode::Timeout.as_u32())),
    }
}

/// Status of one task: `state` is `initial`, `pending`, `completed`,
/// `failed`, `canceled` or `timeout`; `code` the te error code of a task
/// that ended without completing (else None); bytes moved so far.
#[pyclass(module = "te", frozen, get_all)]
pub struct TaskStatus {
    /// The state's name.
    pub state: &'static str,
    /// Error code of a failed, canceled (101) or timed-out (100) task.
    pub code: Option<u32>,
    /// Bytes transferred so far.
    pub transferred: u64,
    /// Length of the transfer.
    pub length: u64,
}

#[pymethods]
impl TaskStatus {
    /// True once the task ended (completed or not).
    #[getter]
    fn done(&self) -> bool {
        !matches!(self.state, "initial" | "pending")
    }

    fn __repr__(&self) -> String {
        format!(
            "te.TaskStatus(state={:?}, code={:?}, transferred={}, length={})",
            self.state, self.code, self.transferred, self.length
        )
    }
}

impl From<te_runtime::TaskStatus> for TaskStatus {
    fn from(t: te_runtime::TaskStatus) -> TaskStatus {
        let (state, code) = state(t.state);
        TaskStatus {
            state,
            code,
            transferred: t.transferred,
            length: t.len,
        }
    }
}

/// Overall status of a batch: `state` (`initial` with nothing submitted,
/// `pending` while any task is, `completed` when all completed, otherwise
/// the state of the first task that did not complete), `code` of that
/// task, and counts and bytes over its tasks.
#[pyclass(module = "te", frozen, get_all)]
pub struct BatchStatus {
    /// The overall state's name.
    pub state: &'static str,
    /// Error code of the first task that did not complete (else None).
    pub code: Option<u32>,
    /// Tasks submitted.
    pub total: u32,
    /// Tasks completed.
    pub completed: u32,
    /// Tasks ended without completing.
    pub failed: u32,
    /// Bytes transferred over all tasks.
    pub transferred: u64,
    /// Bytes requested over all tasks.
    pub length: u64,
}

#[pymethods]
impl BatchStatus {
    /// True once no task is pending.
    #[getter]
    fn done(&self) -> bool {
        self.state != "pending"
    }

    /// True when every task completed.
    #[getter]
    fn ok(&self) -> bool {
        self.state == "completed"
    }

    fn __repr__(&self) -> String {
        format!(
            "te.BatchStatus(state={:?}, code={:?}, total={}, completed={}, failed={}, transferred={}, length={})",
            self.state, self.code, self.total, self.completed, self.failed, self.transferred, self.length
        )
    }
}

impl From<te_runtime::BatchStatus> for BatchStatus {
    fn from(b: te_runtime::BatchStatus) -> BatchStatus {
        let (state, code) = state(b.state);
        BatchStatus {
            state,
            code,
            total: b.total,
            completed: b.completed,
            failed: b.failed,
            transferred: b.transferred,
            length: b.len,
        }
    }
}

/// A notification from a peer: the sender's segment name (`sender`), its
/// `name` and `msg` (bytes).
#[pyclass(module = "te", frozen, get_all)]
pub struct Notification {
    /// The sending peer's segment name.
    pub sender: String,
    /// The notification's name.
    pub name: String,
    /// Its message.
    pub msg: Py<PyBytes>,
}

#[pymethods]
impl Notification {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "te.Notification(sender={:?}, name={:?}, msg={})",
            self.sender,
            self.name,
            self.msg
                .bind(py)
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_default()
        )
    }
}

impl Notification {
    pub fn new(py: Python<'_>, n: TeNotification) -> Notification {
        Notification {
            sender: n.from,
            name: n.name,
            msg: PyBytes::new(py, &n.msg).unbind(),
        }
    }
}

/// Text form of a permission: `local_only`, `remote_read`, `remote_write`,
/// `remote_read_write`.
pub fn perm_name(p: Perm) -> &'static str {
    if p.contains(Perm::REMOTE_READ_WRITE) {
        "remote_read_write"
    } else if p.contains(Perm::REMOTE_READ) {
        "remote_read"
    } else if p.contains(Perm::REMOTE_WRITE) {
        "remote_write"
    } else {
        "local_only"
    }
}

/// A registered region: `addr`, `length`, `location` and `perm`.
#[pyclass(module = "te", frozen, get_all)]
pub struct Region {
    /// First byte.
    pub addr: u64,
    /// Bytes.
    pub length: u64,
    /// `cpu`, `sim:N` or `npu:N`.
    pub location: String,
    /// `local_only`, `remote_read`, `remote_write` or `remote_read_write`.
    pub perm: &'static str,
}

#[pymethods]
impl Region {
    fn __repr__(&self) -> String {
        format!(
            "te.Region(addr={:#x}, length={}, location={:?}, perm={:?})",
            self.addr, self.length, self.location, self.perm
        )
    }
}

impl From<TeRegion> for Region {
    fn from(r: TeRegion) -> Region {
        Region {
            addr: r.span.addr,
            length: r.span.len,
            location: r.span.location.to_string(),
            perm: perm_name(r.perm),
        }
    }
}

/// One transfer for `Engine.submit`: `op` (`"read"`/`"write"`, or 0/1 as
/// Mooncake's `TransferOpcode`), `local` (anything address-like), `segment`
/// (an id from `open_segment`), `remote` (int address in the peer) and
/// `length` (default: the size of `local`). A plain tuple
/// `(op, local, segment, remote, length)` does as well.
#[pyclass(module = "te", frozen, get_all)]
pub struct Request {
    /// `"read"` or `"write"` (or 0 / 1).
    pub op: Py<PyAny>,
    /// Local memory: int address, te.Memory, buffer, array, tensor.
    pub local: Py<PyAny>,
    /// Segment id from `Engine.open_segment`.
    pub segment: u32,
    /// Address in the peer's registered memory.
    pub remote: u64,
    /// Bytes (None: the size of `local`).
    pub length: Option<u64>,
}

#[pymethods]
impl Request {
    #[new]
    #[pyo3(signature = (op, local, segment, remote, length=None))]
    fn new(op: Py<PyAny>, local: Py<PyAny>, segment: u32, remote: u64, length: Option<u64>) -> Request {
        Request {
            op,
            local,
            segment,
            remote,
            length,
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "te.Request(op={}, local={}, segment={}, remote={:#x}, length={:?})",
            self.op.bind(py).repr().map(|r| r.to_string()).unwrap_or_default(),
            self.local
                .bind(py)
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            self.segment,
            self.remote,
            self.length
        )
    }
}
