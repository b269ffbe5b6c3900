//! ACL error codes (`aclError`, an `int`), their names as CANN's headers
//! spell them (`acl/acl_base.h`, `acl/error_codes/rt_error_codes.h`), and
//! the te [`ErrorCode`] each becomes.

use te_proto::driver::DeviceIndex;
use te_proto::{status, ErrorCode, Result, Status};

/// The C type ACL functions return.
pub type AclError = i32;

/// Success.
pub const ACL_SUCCESS: AclError = 0;
/// A bad argument, as ACL itself checks it.
pub const ACL_ERROR_INVALID_PARAM: AclError = 100_000;
/// A call before `aclInit`.
pub const ACL_ERROR_UNINITIALIZE: AclError = 100_001;
/// `aclInit` when ACL is already initialised in this process (not a failure).
pub const ACL_ERROR_REPEAT_INITIALIZE: AclError = 100_002;
/// Host-side allocation failure.
pub const ACL_ERROR_BAD_ALLOC: AclError = 200_000;
/// `ACL_ERROR_FEATURE_UNSUPPORTED`: also what te reports for an optional
/// call the loaded library lacks where it is needed.
pub const ACL_ERROR_FEATURE_UNSUPPORTED: AclError = 200_006;
/// A runtime failure without a finer code.
pub const ACL_ERROR_RT_FAILURE: AclError = 500_003;
/// The runtime's own argument check.
pub const ACL_ERROR_RT_PARAM_INVALID: AclError = 107_000;
/// A device index the runtime does not know.
pub const ACL_ERROR_RT_INVALID_DEVICEID: AclError = 107_001;
/// The calling thread has no device set (no current context).
pub const ACL_ERROR_RT_CONTEXT_NULL: AclError = 107_002;
/// Device memory exhausted.
pub const ACL_ERROR_RT_MEMORY_ALLOCATION: AclError = 207_001;
/// A stream did not drain within the timeout.
pub const ACL_ERROR_RT_STREAM_SYNC_TIMEOUT: AclError = 507_046;

/// Names of the codes te meets, for messages.
const NAMES: &[(AclError, &str)] = &[
    (100_000, "ACL_ERROR_INVALID_PARAM"),
    (100_001, "ACL_ERROR_UNINITIALIZE"),
    (100_002, "ACL_ERROR_REPEAT_INITIALIZE"),
    (100_037, "ACL_ERROR_REPEAT_FINALIZE"),
    (200_000, "ACL_ERROR_BAD_ALLOC"),
    (200_001, "ACL_ERROR_API_NOT_SUPPORT"),
    (200_002, "ACL_ERROR_INVALID_DEVICE"),
    (200_003, "ACL_ERROR_MEMORY_ADDRESS_UNALIGNED"),
    (200_006, "ACL_ERROR_FEATURE_UNSUPPORTED"),
    (500_000, "ACL_ERROR_INTERNAL_ERROR"),
    (500_001, "ACL_ERROR_FAILURE"),
    (500_003, "ACL_ERROR_RT_FAILURE"),
    (500_004, "ACL_ERROR_DRV_FAILURE"),
    (107_000, "ACL_ERROR_RT_PARAM_INVALID"),
    (107_001, "ACL_ERROR_RT_INVALID_DEVICEID"),
    (107_002, "ACL_ERROR_RT_CONTEXT_NULL"),
    (107_003, "ACL_ERROR_RT_STREAM_CONTEXT"),
    (107_008, "ACL_ERROR_RT_ADDR_UNALIGNED"),
    (107_017, "ACL_ERROR_RT_INVALID_HANDLE"),
    (107_019, "ACL_ERROR_RT_WAIT_TIMEOUT"),
    (107_020, "ACL_ERROR_RT_TASK_TIMEOUT"),
    (207_000, "ACL_ERROR_RT_FEATURE_NOT_SUPPORT"),
    (207_001, "ACL_ERROR_RT_MEMORY_ALLOCATION"),
    (207_004, "ACL_ERROR_RT_NO_DEVICE"),
    (207_006, "ACL_ERROR_RT_NO_PERMISSION"),
    (207_018, "ACL_ERROR_RT_DEVICE_OOM"),
    (507_000, "ACL_ERROR_RT_INTERNAL_ERROR"),
    (507_010, "ACL_ERROR_RT_LOST_HEARTBEAT"),
    (507_013, "ACL_ERROR_RT_SYS_DMA"),
    (507_022, "ACL_ERROR_RT_IPC_ERROR"),
    (507_033, "ACL_ERROR_RT_DEV_SETUP_ERROR"),
    (507_046, "ACL_ERROR_RT_STREAM_SYNC_TIMEOUT"),
    (507_047, "ACL_ERROR_RT_EVENT_SYNC_TIMEOUT"),
    (507_052, "ACL_ERROR_RT_COPY_DATA"),
    (507_053, "ACL_ERROR_RT_DEVICE_MEM_ERROR"),
    (507_054, "ACL_ERROR_RT_HBM_MULTI_BIT_ECC_ERROR"),
    (507_056, "ACL_ERROR_RT_LINK_ERROR"),
    (507_899, "ACL_ERROR_RT_DRV_INTERNAL_ERROR"),
    (507_901, "ACL_ERROR_RT_SOCKET_CLOSE"),
];

/// The header's name of `code`, or `"unknown"`.
pub fn name(code: AclError) -> &'static str {
    NAMES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("unknown", |(_, n)| n)
}

/// The te code an ACL failure becomes.
///
/// | ACL | te |
/// |---|---|
/// | argument checks (100000, 107000, 107001, 107008, 200003) | `Invalid` |
/// | not supported (200001, 200006, 207000) | `NotSupported` |
/// | no permission (207006) | `NotAuthorized` |
/// | timeouts (107019, 107020, 507046, 507047) | `Timeout` |
/// | device gone (207004, 507010, 507901) | `Disconnected` |
/// | everything else: allocation, DMA, memory errors, internal errors | `RuntimeError` |
pub fn te_code(code: AclError) -> ErrorCode {
    match code {
        100_000 | 107_000 | 107_001 | 107_008 | 200_003 => ErrorCode::Invalid,
        200_001 | 200_006 | 207_000 => ErrorCode::NotSupported,
        207_006 => ErrorCode::NotAuthorized,
        107_019 | 107_020 | 507_046 | 507_047 => ErrorCode::Timeout,
        207_004 | 507_010 | 507_901 => ErrorCode::Disconnected,
        _ => ErrorCode::RuntimeError,
    }
}

/// The status of ACL call `call` on `dev` (none for process-wide calls)
/// that returned `code`: `"aclrtMemcpyAsync on npu:0: ACL error 507053
/// (ACL_ERROR_RT_DEVICE_MEM_ERROR)"`.
pub fn status_of(call: &str, dev: Option<DeviceIndex>, code: AclError) -> Status {
    let te = te_code(code);
    match dev {
        Some(d) => status!(=te, "{call} on npu:{d}: ACL error {code} ({})", name(code)),
        None => status!(=te, "{call}: ACL error {code} ({})", name(code)),
    }
}

/// `Ok` for `ACL_SUCCESS`, else [`status_of`].
pub fn check(call: &str, dev: Option<DeviceIndex>, code: AclError) -> Result<()> {
    if code == ACL_SUCCESS {
        Ok(())
    } else {
        Err(status_of(call, dev, code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_and_name_as_the_headers_do() {
        assert_eq!(te_code(ACL_ERROR_INVALID_PARAM), ErrorCode::Invalid);
        assert_eq!(te_code(ACL_ERROR_BAD_ALLOC), ErrorCode::RuntimeError);
        assert_eq!(te_code(ACL_ERROR_RT_FAILURE), ErrorCode::RuntimeError);
        assert_eq!(te_code(ACL_ERROR_RT_STREAM_SYNC_TIMEOUT), ErrorCode::Timeout);
        assert_eq!(te_code(207_004), ErrorCode::Disconnected);
        assert_eq!(te_code(42), ErrorCode::RuntimeError);
        let s = status_of("aclrtMemcpyAsync", Some(3), 507_053);
        assert_eq!(s.code(), ErrorCode::RuntimeError);
        assert_eq!(
            s.message(),
            "aclrtMemcpyAsync on npu:3: ACL error 507053 (ACL_ERROR_RT_DEVICE_MEM_ERROR)"
        );
        assert_eq!(name(42), "unknown");
        assert!(check("aclInit", None, ACL_SUCCESS).is_ok());
    }
}
