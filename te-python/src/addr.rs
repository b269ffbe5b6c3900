//! Addresses from the caller's objects.
//!
//! Wherever the API takes an address it takes any of: a plain `int` with a
//! length, a [`Memory`](crate::memory::Memory) from `Engine.alloc`, an object
//! with the buffer protocol (bytes, bytearray, memoryview, numpy arrays),
//! one with `__array_interface__`, one with `__dlpack__` (host memory), or
//! one with `data_ptr()` and a size (torch tensors: `nbytes`, or
//! `numel() * element_size()`). A read-only object is refused where the
//! memory is a destination.

use std::ffi::{c_void, CStr};

use pyo3::buffer::PyUntypedBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict, PyInt, PyTuple};

use crate::errors::invalid;
use crate::memory::Memory;

/// What keeps the memory of a resolved object alive (and, for a buffer,
/// exported: a bytearray cannot be resized while a buffer is held).
pub enum Keep {
    /// A held buffer-protocol export.
    Buffer(#[allow(dead_code)] PyUntypedBuffer),
    /// A reference to the object owning the memory.
    Object(#[allow(dead_code)] Py<PyAny>),
}

/// A resolved span of memory.
pub struct Span {
    /// First byte.
    pub addr: u64,
    /// Bytes.
    pub len: u64,
    /// Holds the memory alive; `None` for a plain integer address.
    pub keep: Option<Keep>,
    /// False for device memory (a `te.Memory` of a device engine), which
    /// this process cannot read or write through a pointer.
    pub host: bool,
}

impl Span {
    /// The span's bytes, for copying out of it.
    ///
    /// # Safety
    /// `self.keep` must hold the memory (or, for an int address, the caller
    /// vouches that the memory is valid) for as long as the slice is used,
    /// and nothing may write it meanwhile.
    pub unsafe fn bytes(&self, py: Python<'_>) -> PyResult<&[u8]> {
        if !self.host {
            return Err(invalid(
                py,
                format!(
                    "memory at {:#x} is device memory, not host-addressable",
                    self.addr
                ),
            ));
        }
        // SAFETY: forwarded contract.
        Ok(unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len as usize) })
    }
}

/// How the memory will be used.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Only read by this process's side of the transfer (a source).
    Read,
    /// Written (a destination): read-only objects are refused.
    Write,
    /// Registered: peers may read or write it, as its permission says.
    Register { writable: bool },
}

impl Use {
    fn writes(self) -> bool {
        match self {
            Use::Read => false,
            Use::Write => true,
            Use::Register { writable } => writable,
        }
    }
}

fn describe(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".into())
}

/// Applies an explicit `length` to an object of `size` bytes: it may take a
/// prefix, never more.
fn with_length(py: Python<'_>, what: &str, size: u64, length: Option<u64>) -> PyResult<u64> {
    match length {
        None => Ok(size),
        Some(l) if l <= size => Ok(l),
        Some(l) => Err(invalid(
            py,
            format!("length {l} is larger than the {size} bytes of the {what}"),
        )),
    }
}

/// Resolves `obj` (and an optional explicit `length`) to a span.
pub fn resolve(obj: &Bound<'_, PyAny>, length: Option<u64>, how: Use) -> PyResult<Span> {
    let py = obj.py();
    if obj.is_instance_of::<PyInt>() {
        let addr: u64 = obj
            .extract()
            .map_err(|_| invalid(py, format!("address {obj} is not an unsigned 64-bit integer")))?;
        let len =
            length.ok_or_else(|| invalid(py, format!("address {addr:#x} given as an int needs a length")))?;
        return Ok(Span {
            addr,
            len,
            keep: None,
            host: true,
        });
    }
    if let Ok(m) = obj.cast::<Memory>() {
        let m = m.get();
        let len = with_length(py, "engine memory", m.len, length)?;
        return Ok(Span {
            addr: m.addr,
            len,
            keep: Some(Keep::Object(obj.clone().unbind())),
            host: m.location.is_host(),
        });
    }
    let name = describe(obj);
    // The buffer protocol first: bytes, bytearray, memoryview, numpy.
    if let Ok(buf) = PyUntypedBuffer::get(obj) {
        if !buf.is_c_contiguous() {
            return Err(invalid(py, format!("the {name} buffer is not C-contiguous")));
        }
        if how.writes() && buf.readonly() {
            return Err(invalid(
                py,
                format!("the {name} buffer is read-only and cannot be a destination"),
            ));
        }
        let len = with_length(py, &format!("{name} buffer"), buf.len_bytes() as u64, length)?;
        return Ok(Span {
            addr: buf.buf_ptr() as u64,
            len,
            keep: Some(Keep::Buffer(buf)),
            host: true,
        });
    }
    if let Some(span) = array_interface(obj, &name, length, how)? {
        return Ok(span);
    }
    let dlpack_refusal = match dlpack(obj, &name, length)? {
        Dl::Span(span) => return Ok(span),
        Dl::Absent => None,
        Dl::Refused(msg) => Some(msg),
    };
    if obj.hasattr("data_ptr")? {
        return data_ptr(obj, &name, length);
    }
    Err(invalid(
        py,
        dlpack_refusal.unwrap_or_else(|| {
            format!(
                "a {name} is not memory: expected an int address with a length, te.Memory, or an \
                 object with the buffer protocol, __array_interface__, __dlpack__ or data_ptr()"
            )
        }),
    ))
}

/// Bytes of one element of a numpy type string (`<f4`, `|u1`, ...).
fn typestr_size(typestr: &str) -> Option<u64> {
    let digits = typestr.get(2..)?;
    digits.parse().ok()
}

fn array_interface(
    obj: &Bound<'_, PyAny>,
    name: &str,
    length: Option<u64>,
    how: Use,
) -> PyResult<Option<Span>> {
    let py = obj.py();
    let Ok(ai) = obj.getattr("__array_interface__") else {
        return Ok(None);
    };
    let bad = |what: &str| invalid(py, format!("__array_interface__ of the {name}: {what}"));
    let ai = ai.cast::<PyDict>().map_err(|_| bad("not a dict"))?;
    let data = ai.get_item("data")?.ok_or_else(|| bad("no 'data'"))?;
    let data = data
        .cast::<PyTuple>()
        .map_err(|_| bad("'data' is not a (pointer, read-only) tuple"))?;
    let ptr: u64 = data.get_item(0)?.extract().map_err(|_| bad("bad pointer"))?;
    let readonly: bool = data
        .get_item(1)?
        .extract()
        .map_err(|_| bad("bad read-only flag"))?;
    let shape: Vec<u64> = ai
        .get_item("shape")?
        .ok_or_else(|| bad("no 'shape'"))?
        .extract()
        .map_err(|_| bad("bad 'shape'"))?;
    let typestr: String = ai
        .get_item("typestr")?
        .ok_or_else(|| bad("no 'typestr'"))?
        .extract()
        .map_err(|_| bad("bad 'typestr'"))?;
    let item = typestr_size(&typestr).ok_or_else(|| bad(&format!("unknown typestr {typestr:?}")))?;
    if let Some(strides) = ai.get_item("strides")? {
        if !strides.is_none() {
            let strides: Vec<i64> = strides.extract().map_err(|_| bad("bad 'strides'"))?;
            let mut want = item as i64;
            for (s, d) in strides.iter().zip(&shape).rev() {
                if *d > 1 && *s != want {
                    return Err(bad("not C-contiguous"));
                }
                want *= *d as i64;
            }
        }
    }
    if how.writes() && readonly {
        return Err(invalid(
            py,
            format!("the {name} is read-only and cannot be a destination"),
        ));
    }
    let size = shape.iter().product::<u64>() * item;
    let len = with_length(py, name, size, length)?;
    Ok(Some(Span {
        addr: ptr,
        len,
        keep: Some(Keep::Object(obj.clone().unbind())),
        host: true,
    }))
}

// DLPack's C structures (dlpack.h, version 0.8 unversioned capsules).
#[repr(C)]
struct DlDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
struct DlDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DlTensor {
    data: *mut c_void,
    device: DlDevice,
    ndim: i32,
    dtype: DlDataType,
    shape: *const i64,
    strides: *const i64,
    byte_offset: u64,
}

const DL_CPU: i32 = 1;
const DL_CUDA_HOST: i32 = 3;

enum Dl {
    Span(Span),
    Absent,
    /// Exported, but not host memory (or not contiguous).
    Refused(String),
}

fn dlpack(obj: &Bound<'_, PyAny>, name: &str, length: Option<u64>) -> PyResult<Dl> {
    let py = obj.py();
    if !obj.hasattr("__dlpack__")? {
        return Ok(Dl::Absent);
    }
    let capsule = match obj.call_method0("__dlpack__") {
        Ok(c) => c,
        Err(e) => return Ok(Dl::Refused(format!("the {name} refused __dlpack__: {e}"))),
    };
    let capsule = capsule
        .cast::<PyCapsule>()
        .map_err(|_| invalid(py, format!("__dlpack__ of the {name} returned no capsule")))?;
    const NAME: &CStr = c"dltensor";
    let ptr = capsule.pointer_checked(Some(NAME))?;
    // SAFETY: a capsule named "dltensor" holds a DLManagedTensor, whose first
    // member is the DLTensor; the capsule (kept alive below, and not
    // consumed, so its destructor frees the tensor) keeps it valid while we
    // read it.
    let t = unsafe { &*(ptr.as_ptr() as *const DlTensor) };
    if t.device.device_type != DL_CPU && t.device.device_type != DL_CUDA_HOST {
        return Ok(Dl::Refused(format!(
            "the {name} is on DLPack device type {} (not host memory); pass an engine of its \
             device its data_ptr() and size",
            t.device.device_type
        )));
    }
    let ndim = usize::try_from(t.ndim).unwrap_or(0);
    // SAFETY: DLPack guarantees `shape` (and `strides`, when not null) point
    // at `ndim` int64 values that live as long as the tensor.
    let shape: &[i64] = if ndim == 0 {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(t.shape, ndim) }
    };
    let item = (t.dtype.bits as u64 * t.dtype.lanes as u64).div_ceil(8);
    if !t.strides.is_null() && ndim > 0 {
        // SAFETY: as above.
        let strides = unsafe { std::slice::from_raw_parts(t.strides, ndim) };
        let mut want = 1i64;
        for (s, d) in strides.iter().zip(shape).rev() {
            if *d > 1 && *s != want {
                return Ok(Dl::Refused(format!("the {name} is not C-contiguous")));
            }
            want *= *d;
        }
    }
    let count: u64 = shape.iter().map(|&d| d.max(0) as u64).product();
    let len = with_length(py, name, count * item, length)?;
    Ok(Dl::Span(Span {
        addr: t.data as u64 + t.byte_offset,
        len,
        keep: Some(Keep::Object(capsule.clone().into_any().unbind())),
        host: true,
    }))
}

fn data_ptr(obj: &Bound<'_, PyAny>, name: &str, length: Option<u64>) -> PyResult<Span> {
    let py = obj.py();
    if obj.hasattr("is_contiguous")? {
        let contiguous: bool = obj.call_method0("is_contiguous")?.extract()?;
        if !contiguous {
            return Err(invalid(py, format!("the {name} is not contiguous")));
        }
    }
    let addr: u64 = obj
        .call_method0("data_ptr")?
        .extract()
        .map_err(|_| invalid(py, format!("data_ptr() of the {name} is not an address")))?;
    let size: Option<u64> = if obj.hasattr("nbytes")? {
        obj.getattr("nbytes")?.extract().ok()
    } else if obj.hasattr("numel")? && obj.hasattr("element_size")? {
        let n: u64 = obj.call_method0("numel")?.extract()?;
        let e: u64 = obj.call_method0("element_size")?.extract()?;
        Some(n * e)
    } else {
        None
    };
    let len = match (size, length) {
        (Some(s), l) => with_length(py, name, s, l)?,
        (None, Some(l)) => l,
        (None, None) => {
            return Err(invalid(
                py,
                format!(
                    "the {name} has data_ptr() but no size (nbytes or numel/element_size): give a length"
                ),
            ))
        }
    };
    Ok(Span {
        addr,
        len,
        keep: Some(Keep::Object(obj.clone().unbind())),
        host: true,
    })
}
