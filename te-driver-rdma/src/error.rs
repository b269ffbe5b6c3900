//! Errors of verbs calls and of work completions, their names, and the te
//! [`ErrorCode`] each becomes.

use std::fmt;

use te_proto::{ErrorCode, Status};

/// What went wrong in a verbs call or a work request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A call failed with this errno (from its return value or `errno`).
    Errno(i32),
    /// A work request completed with this `enum ibv_wc_status` (and the provider's
    /// `vendor_err`).
    Completion {
        /// `ibv_wc.status`.
        status: u32,
        /// `ibv_wc.vendor_err`.
        vendor_err: u32,
    },
    /// The driver refused the request itself, with this te code.
    Refused(ErrorCode),
}

/// An RDMA error: the verbs call (or `"ibv_poll_cq"` for a completion), what it was about,
/// and the cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerbsError {
    /// The verbs function, e.g. `"ibv_reg_mr"`.
    pub call: &'static str,
    /// What the call was doing, e.g. `"region 0x7f00..+4096 on mlx5_0"`.
    pub what: String,
    /// Why it failed.
    pub cause: Cause,
}

impl VerbsError {
    /// A failed call with `errno`.
    pub fn errno(call: &'static str, what: impl Into<String>, errno: i32) -> VerbsError {
        VerbsError {
            call,
            what: what.into(),
            cause: Cause::Errno(errno),
        }
    }

    /// A request the driver refuses with `code`.
    pub fn refused(call: &'static str, what: impl Into<String>, code: ErrorCode) -> VerbsError {
        VerbsError {
            call,
            what: what.into(),
            cause: Cause::Refused(code),
        }
    }

    /// The te code: a remote access error is `NotAuthorized` (the peer's NIC refused the rkey,
    /// bounds or permission), a lost peer or a flushed queue pair `Disconnected`, a missing
    /// device `NotSupported`, anything else `RuntimeError`.
    pub fn code(&self) -> ErrorCode {
        match self.cause {
            Cause::Refused(c) => c,
            Cause::Completion { status, .. } => match status {
                IBV_WC_REM_ACCESS_ERR => ErrorCode::NotAuthorized,
                IBV_WC_WR_FLUSH_ERR
                | IBV_WC_RETRY_EXC_ERR
                | IBV_WC_RNR_RETRY_EXC_ERR
                | IBV_WC_RESP_TIMEOUT_ERR => ErrorCode::Disconnected,
                _ => ErrorCode::RuntimeError,
            },
            Cause::Errno(e) if e == libc::ENOSYS || e == libc::EOPNOTSUPP || e == libc::ENODEV => {
                ErrorCode::NotSupported
            }
            Cause::Errno(_) => ErrorCode::RuntimeError,
        }
    }

    /// The te [`Status`] (code and this error's text, cut to the status capacity).
    pub fn to_status(&self) -> Status {
        Status::with_args(self.code(), format_args!("{self}"))
    }

    /// The completion status, when the cause is one.
    pub fn wc_status(&self) -> Option<u32> {
        match self.cause {
            Cause::Completion { status, .. } => Some(status),
            _ => None,
        }
    }
}

impl fmt::Display for VerbsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): ", self.call, self.what)?;
        match self.cause {
            Cause::Errno(e) => write!(
                f,
                "{} ({e}): {}",
                errno_name(e),
                std::io::Error::from_raw_os_error(e)
            ),
            Cause::Completion { status, vendor_err } => {
                write!(f, "{} ({status})", wc_status_name(status))?;
                if vendor_err != 0 {
                    write!(f, ", vendor_err {vendor_err:#x}")?;
                }
                Ok(())
            }
            Cause::Refused(c) => write!(f, "{c}"),
        }
    }
}

impl std::error::Error for VerbsError {}

/// `IBV_WC_SUCCESS`.
pub const IBV_WC_SUCCESS: u32 = 0;
/// `IBV_WC_WR_FLUSH_ERR`: the queue pair was in error; the request was not carried out.
pub const IBV_WC_WR_FLUSH_ERR: u32 = 5;
/// `IBV_WC_REM_ACCESS_ERR`: the responder refused the rkey, range or access.
pub const IBV_WC_REM_ACCESS_ERR: u32 = 10;
/// `IBV_WC_RETRY_EXC_ERR`: the peer did not answer within the retries.
pub const IBV_WC_RETRY_EXC_ERR: u32 = 12;
/// `IBV_WC_RNR_RETRY_EXC_ERR`.
pub const IBV_WC_RNR_RETRY_EXC_ERR: u32 = 13;
/// `IBV_WC_RESP_TIMEOUT_ERR`.
pub const IBV_WC_RESP_TIMEOUT_ERR: u32 = 20;

/// The names of `enum ibv_wc_status`, in order (verbs.h).
const WC_NAMES: [&str; 24] = [
    "IBV_WC_SUCCESS",
    "IBV_WC_LOC_LEN_ERR",
    "IBV_WC_LOC_QP_OP_ERR",
    "IBV_WC_LOC_EEC_OP_ERR",
    "IBV_WC_LOC_PROT_ERR",
    "IBV_WC_WR_FLUSH_ERR",
    "IBV_WC_MW_BIND_ERR",
    "IBV_WC_BAD_RESP_ERR",
    "IBV_WC_LOC_ACCESS_ERR",
    "IBV_WC_REM_INV_REQ_ERR",
    "IBV_WC_REM_ACCESS_ERR",
    "IBV_WC_REM_OP_ERR",
    "IBV_WC_RETRY_EXC_ERR",
    "IBV_WC_RNR_RETRY_EXC_ERR",
    "IBV_WC_LOC_RDD_VIOL_ERR",
    "IBV_WC_REM_INV_RD_REQ_ERR",
    "IBV_WC_REM_ABORT_ERR",
    "IBV_WC_INV_EECN_ERR",
    "IBV_WC_INV_EEC_STATE_ERR",
    "IBV_WC_FATAL_ERR",
    "IBV_WC_RESP_TIMEOUT_ERR",
    "IBV_WC_GENERAL_ERR",
    "IBV_WC_TM_ERR",
    "IBV_WC_TM_RNDV_INCOMPLETE",
];

/// The verbs.h name of a work-completion status, or `"IBV_WC_(unknown)"`.
pub fn wc_status_name(status: u32) -> &'static str {
    WC_NAMES
        .get(status as usize)
        .copied()
        .unwrap_or("IBV_WC_(unknown)")
}

/// The C name of the errnos verbs calls return, or `"errno"`.
pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENOSYS => "ENOSYS",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        _ => "errno",
    }
}

/// The calling thread's errno (EIO when there is none).
pub fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .filter(|&e| e != 0)
        .unwrap_or(libc::EIO)
}

/// The errno of a verbs call that returns an int: the return value when positive, else
/// `errno` (`ibv_query_gid` returns -1 and sets it).
pub fn rc_errno(rc: i32) -> i32 {
    if rc > 0 {
        rc
    } else {
        last_errno()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_errors_map_to_te_codes_and_name_the_status() {
        let e = VerbsError {
            call: "ibv_poll_cq",
            what: "RDMA_WRITE".into(),
            cause: Cause::Completion {
                status: IBV_WC_REM_ACCESS_ERR,
                vendor_err: 0x88,
            },
        };
        assert_eq!(e.code(), ErrorCode::NotAuthorized);
        assert_eq!(
            e.to_string(),
            "ibv_poll_cq (RDMA_WRITE): IBV_WC_REM_ACCESS_ERR (10), vendor_err 0x88"
        );
        let flush = VerbsError {
            cause: Cause::Completion {
                status: IBV_WC_WR_FLUSH_ERR,
                vendor_err: 0,
            },
            ..e.clone()
        };
        assert_eq!(flush.code(), ErrorCode::Disconnected);
        assert_eq!(wc_status_name(IBV_WC_RETRY_EXC_ERR), "IBV_WC_RETRY_EXC_ERR");
        assert_eq!(wc_status_name(99), "IBV_WC_(unknown)");
        let call = VerbsError::errno("ibv_reg_mr", "region", libc::ENOMEM);
        assert_eq!(call.code(), ErrorCode::RuntimeError);
        assert!(
            call.to_string().starts_with("ibv_reg_mr (region): ENOMEM (12)"),
            "{call}"
        );
        assert_eq!(call.to_status().code(), ErrorCode::RuntimeError);
    }
}
