//! `te.Memory`: memory the engine allocated, exposed through the buffer
//! protocol when it is host memory.

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use te_runtime::{Engine, ErrorCode, Location};

use crate::errors::{error, invalid, OrRaise};

/// Memory allocated and registered by an engine (`Engine.alloc`).
///
/// Host memory (`cpu` engines) exposes the buffer protocol:
/// `memoryview(mem)` and `numpy.frombuffer(mem, dtype)` see the engine's
/// memory itself, without a copy. Device memory (`sim:N`, `npu:N`) is not
/// host-addressable: use `read` and `write`. Pass the object (or its
/// `addr`) wherever an address is taken. `free()` (or `Engine.free`)
/// unregisters and releases it; it refuses while buffer views are alive.
#[pyclass(module = "te", frozen)]
pub struct Memory {
    pub(crate) engine: Arc<Engine>,
    pub(crate) addr: u64,
    pub(crate) len: u64,
    pub(crate) location: Location,
    pub(crate) freed: AtomicBool,
    exports: AtomicUsize,
}

impl Memory {
    pub(crate) fn new(engine: Arc<Engine>, addr: u64, len: u64, location: Location) -> Memory {
        Memory {
            engine,
            addr,
            len,
            location,
            freed: AtomicBool::new(false),
            exports: AtomicUsize::new(0),
        }
    }

    fn check_live(&self, py: Python<'_>) -> PyResult<()> {
        if self.freed.load(Ordering::Acquire) {
            return Err(error(
                py,
                ErrorCode::NotFound,
                &format!("memory at {:#x} was freed", self.addr),
            ));
        }
        Ok(())
    }

    fn range(&self, py: Python<'_>, offset: u64, len: u64) -> PyResult<u64> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(self.addr + offset),
            _ => Err(invalid(
                py,
                format!(
                    "offset {offset} + length {len} is outside the {} bytes of this memory",
                    self.len
                ),
            )),
        }
    }

    pub(crate) fn free_now(&self, py: Python<'_>) -> PyResult<()> {
        let exports = self.exports.load(Ordering::Acquire);
        if exports > 0 {
            return Err(error(
                py,
                ErrorCode::NotReady,
                &format!(
                    "memory at {:#x} has {exports} buffer view(s) alive (memoryview or numpy \
                     array); delete them before freeing",
                    self.addr
                ),
            ));
        }
        if self.freed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let engine = Arc::clone(&self.engine);
        let addr = self.addr;
        let r = py.detach(move || engine.free_memory(addr));
        if let Err(e) = &r {
            // Still registered (for example the engine is finalized): the
            // engine releases it when it ends.
            if e.code() != ErrorCode::NotReady {
                self.freed.store(false, Ordering::Release);
            }
        }
        r.or_raise(py)
    }
}

/// `len` zeroed bytes, or `te.InvalidError` when they cannot be had
/// (never an abort on a huge length).
pub(crate) fn zeroed(py: Python<'_>, len: u64) -> PyResult<Vec<u8>> {
    let n = usize::try_from(len).map_err(|_| invalid(py, format!("length {len} is too large")))?;
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| invalid(py, format!("cannot allocate {len} bytes to copy into")))?;
    v.resize(n, 0);
    Ok(v)
}

#[pymethods]
impl Memory {
    /// First byte's address (an int, as the Mooncake and datasystem APIs take).
    #[getter]
    fn addr(&self) -> u64 {
        self.addr
    }

    /// Size in bytes.
    #[getter]
    fn length(&self) -> u64 {
        self.len
    }

    /// Where the memory lives: `cpu`, `sim:N` or `npu:N`.
    #[getter]
    fn location(&self) -> String {
        self.location.to_string()
    }

    /// True once freed.
    #[getter]
    fn freed(&self) -> bool {
        self.freed.load(Ordering::Acquire)
    }

    fn __len__(&self) -> usize {
        self.len as usize
    }

    fn __repr__(&self) -> String {
        format!(
            "te.Memory(addr={:#x}, length={}, location={}{})",
            self.addr,
            self.len,
            self.location,
            if self.freed.load(Ordering::Acquire) {
                ", freed"
            } else {
                ""
            }
        )
    }

    /// Copies `length` bytes (default: to the end) from `offset` out as bytes
    /// (works for device memory too).
    #[pyo3(signature = (offset=0, length=None))]
    fn read<'py>(&self, py: Python<'py>, offset: u64, length: Option<u64>) -> PyResult<Bound<'py, PyBytes>> {
        self.check_live(py)?;
        let len = length.unwrap_or(self.len.saturating_sub(offset));
        let addr = self.range(py, offset, len)?;
        let engine = Arc::clone(&self.engine);
        let mut out = zeroed(py, len)?;
        py.detach(|| engine.read_memory(addr, &mut out)).or_raise(py)?;
        Ok(PyBytes::new(py, &out))
    }

    /// Copies `data` (any buffer) into the memory at `offset` (works for
    /// device memory too).
    #[pyo3(signature = (data, offset=0))]
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>, offset: u64) -> PyResult<()> {
        self.check_live(py)?;
        let src = crate::addr::resolve(data, None, crate::addr::Use::Read)?;
        let addr = self.range(py, offset, src.len)?;
        let engine = Arc::clone(&self.engine);
        // SAFETY: `src` keeps the source object's buffer exported (and so
        // alive and unresized) until after the copy.
        let bytes = unsafe { src.bytes(py) }?;
        py.detach(|| engine.write_memory(addr, bytes)).or_raise(py)
    }

    /// Unregisters and releases the memory. Refused (`te.NotReadyError`)
    /// while a memoryview or numpy array of it is alive. Idempotent.
    fn free(&self, py: Python<'_>) -> PyResult<()> {
        self.free_now(py)
    }

    /// The buffer protocol: host memory only.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let m = slf.get();
        if !m.location.is_host() {
            return Err(PyBufferError::new_err(format!(
                "memory at {:#x} is {} memory, not host-addressable: use read() and write()",
                m.addr, m.location
            )));
        }
        if m.freed.load(Ordering::Acquire) {
            return Err(PyBufferError::new_err(format!(
                "memory at {:#x} was freed",
                m.addr
            )));
        }
        let len =
            isize::try_from(m.len).map_err(|_| PyBufferError::new_err("memory too large for a buffer"))?;
        // SAFETY: `view` is the Py_buffer the interpreter passes to this slot;
        // the memory is mapped for `len` bytes while it is not freed, and
        // `free` refuses while an export is counted (released in
        // `__releasebuffer__`); the view holds a reference to `slf`, which
        // holds the engine.
        let rc = unsafe {
            pyo3::ffi::PyBuffer_FillInfo(view, slf.as_ptr(), m.addr as *mut std::ffi::c_void, len, 0, flags)
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        m.exports.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut pyo3::ffi::Py_buffer) {
        self.exports.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        if !self.freed.swap(true, Ordering::AcqRel) {
            // Nothing can reach the memory any more (no Python reference, so
            // no view either): give it back to the engine.
            let _ = self.engine.free_memory(self.addr);
        }
    }
}
