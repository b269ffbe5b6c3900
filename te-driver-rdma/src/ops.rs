//! The three data-path verbs that verbs.h defines as inline functions calling through the
//! context's ops table (`qp->context->ops.post_send`, `cq->context->ops.poll_cq`,
//! `cq->context->ops.req_notify_cq`), called the same way, as NCCL, UCX and TENT do when they
//! load libibverbs at run time.

use std::ffi::c_int;

use crate::abi::*;

/// `ibv_post_send(qp, wr, bad_wr)`: 0 or an errno; `ENOSYS` when the provider left the slot
/// empty.
///
/// # Safety
/// `qp` is a live queue pair of a live context; `wr` a valid list of work requests whose
/// SGE arrays stay valid for the call.
pub unsafe fn post_send(qp: *mut IbvQp, wr: *mut IbvSendWr, bad_wr: *mut *mut IbvSendWr) -> c_int {
    // SAFETY: the caller's contract: qp and its context are live.
    let f = unsafe { (*(*qp).context).ops.post_send };
    match f {
        // SAFETY: the provider's function with verbs.h's signature.
        Some(f) => unsafe { f(qp, wr, bad_wr) },
        None => libc::ENOSYS,
    }
}

/// `ibv_poll_cq(cq, n, wc)`: completions written, or a negative value on error.
///
/// # Safety
/// `cq` is a live completion queue of a live context; `wc` has room for `n` entries.
pub unsafe fn poll_cq(cq: *mut IbvCq, n: c_int, wc: *mut IbvWc) -> c_int {
    // SAFETY: the caller's contract.
    let f = unsafe { (*(*cq).context).ops.poll_cq };
    match f {
        // SAFETY: the provider's function with verbs.h's signature.
        Some(f) => unsafe { f(cq, n, wc) },
        None => -libc::ENOSYS,
    }
}

/// `ibv_req_notify_cq(cq, solicited_only)`: 0 or an errno.
///
/// # Safety
/// `cq` is a live completion queue of a live context.
pub unsafe fn req_notify_cq(cq: *mut IbvCq, solicited_only: c_int) -> c_int {
    // SAFETY: the caller's contract.
    let f = unsafe { (*(*cq).context).ops.req_notify_cq };
    match f {
        // SAFETY: the provider's function with verbs.h's signature.
        Some(f) => unsafe { f(cq, solicited_only) },
        None => libc::ENOSYS,
    }
}
