//! The native module `te._te` of the te Python package: te_runtime's
//! `Engine` from Python. The Python package `te` (python/te) re-exports it
//! and adds the compatible modules (`te.compat.datasystem`,
//! `te.compat.mooncake`), `te.replay` and `te.bench`.

use pyo3::prelude::*;

mod addr;
mod engine;
mod errors;
mod memory;
mod types;

/// te transfer engine, native part (import `te` instead).
#[pymodule]
fn _te(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::PyEngine>()?;
    m.add_class::<memory::Memory>()?;
    m.add_class::<types::TaskStatus>()?;
    m.add_class::<types::BatchStatus>()?;
    m.add_class::<types::Notification>()?;
    m.add_class::<types::Region>()?;
    m.add_class::<types::Request>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
