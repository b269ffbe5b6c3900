//! te statuses as Python exceptions.
//!
//! The exception classes live in Python (`te/_errors.py`), so that each can
//! also derive from the built-in exception a Python user expects
//! (`te.InvalidError` is a `ValueError`, `te.TimeoutError` a `TimeoutError`,
//! ...). This side only builds them from a code and a message.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use te_runtime::{ErrorCode, Status};

static FROM_CODE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The Python exception for `code` with `msg` (a `te.Error` subclass).
pub fn error(py: Python<'_>, code: ErrorCode, msg: &str) -> PyErr {
    let made = FROM_CODE
        .import(py, "te._errors", "from_code")
        .and_then(|f| f.call1((code.as_u32(), msg)));
    match made {
        Ok(e) => PyErr::from_value(e),
        // The package is broken (te._errors missing): still say what failed.
        Err(import_failed) => import_failed,
    }
}

/// The Python exception for a te status.
pub fn status(py: Python<'_>, st: &Status) -> PyErr {
    error(py, st.code(), st.message())
}

/// `te.InvalidError` with `msg`.
pub fn invalid(py: Python<'_>, msg: impl AsRef<str>) -> PyErr {
    error(py, ErrorCode::Invalid, msg.as_ref())
}

/// Converts te results into Python results.
pub trait OrRaise<T> {
    /// The value, or the te status raised as a `te.Error`.
    fn or_raise(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrRaise<T> for Result<T, Status> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| status(py, &e))
    }
}
