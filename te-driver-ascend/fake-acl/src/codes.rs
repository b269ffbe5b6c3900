//! ACL error codes and enum values used by the fake (numbers from acl_base.h, rt_error_codes.h
//! and acl_rt.h).

/// `aclError`: a C `int`.
pub type AclError = i32;

/// ACL_SUCCESS.
pub const ACL_SUCCESS: AclError = 0;
/// ACL_ERROR_INVALID_PARAM: a null pointer, a zero size, `count > destMax`, a bad enum value.
pub const ACL_ERROR_INVALID_PARAM: AclError = 100000;
/// ACL_ERROR_UNINITIALIZE: called before `aclInit` (or after `aclFinalize`).
pub const ACL_ERROR_UNINITIALIZE: AclError = 100001;
/// ACL_ERROR_REPEAT_INITIALIZE: `aclInit` while initialized.
pub const ACL_ERROR_REPEAT_INITIALIZE: AclError = 100002;
/// ACL_ERROR_REPEAT_FINALIZE: `aclFinalize` after a finalize.
pub const ACL_ERROR_REPEAT_FINALIZE: AclError = 100037;
/// ACL_ERROR_RT_PARAM_INVALID: an address or handle the runtime does not know.
pub const ACL_ERROR_RT_PARAM_INVALID: AclError = 107000;
/// ACL_ERROR_RT_INVALID_DEVICEID.
pub const ACL_ERROR_RT_INVALID_DEVICEID: AclError = 107001;
/// ACL_ERROR_RT_CONTEXT_NULL: the calling thread never called `aclrtSetDevice`.
pub const ACL_ERROR_RT_CONTEXT_NULL: AclError = 107002;
/// ACL_ERROR_RT_WAIT_TIMEOUT: a notify wait ran out of time.
pub const ACL_ERROR_RT_WAIT_TIMEOUT: AclError = 107019;
/// ACL_ERROR_RT_FEATURE_NOT_SUPPORT: `aclrtMemcpyAsync` of kind HOST_TO_HOST.
pub const ACL_ERROR_RT_FEATURE_NOT_SUPPORT: AclError = 207000;
/// ACL_ERROR_RT_MEMORY_ALLOCATION: not enough free HBM.
pub const ACL_ERROR_RT_MEMORY_ALLOCATION: AclError = 207001;
/// ACL_ERROR_RT_INTERNAL_ERROR.
pub const ACL_ERROR_RT_INTERNAL_ERROR: AclError = 507000;
/// ACL_ERROR_RT_IPC_ERROR: unknown, closed or not whitelisted IPC key; a revoked mapping.
pub const ACL_ERROR_RT_IPC_ERROR: AclError = 507022;
/// ACL_ERROR_RT_STREAM_SYNC_TIMEOUT.
pub const ACL_ERROR_RT_STREAM_SYNC_TIMEOUT: AclError = 507046;
/// ACL_ERROR_RT_DEVICE_MEM_ERROR: the backing file could not be read or written.
pub const ACL_ERROR_RT_DEVICE_MEM_ERROR: AclError = 507053;

/// aclrtMemcpyKind ACL_MEMCPY_HOST_TO_HOST.
pub const ACL_MEMCPY_HOST_TO_HOST: i32 = 0;
/// aclrtMemcpyKind ACL_MEMCPY_HOST_TO_DEVICE.
pub const ACL_MEMCPY_HOST_TO_DEVICE: i32 = 1;
/// aclrtMemcpyKind ACL_MEMCPY_DEVICE_TO_HOST.
pub const ACL_MEMCPY_DEVICE_TO_HOST: i32 = 2;
/// aclrtMemcpyKind ACL_MEMCPY_DEVICE_TO_DEVICE.
pub const ACL_MEMCPY_DEVICE_TO_DEVICE: i32 = 3;

/// aclrtEventRecordedStatus ACL_EVENT_RECORDED_STATUS_NOT_READY.
pub const ACL_EVENT_RECORDED_STATUS_NOT_READY: i32 = 0;
/// aclrtEventRecordedStatus ACL_EVENT_RECORDED_STATUS_COMPLETE.
pub const ACL_EVENT_RECORDED_STATUS_COMPLETE: i32 = 1;
/// aclrtEventStatus (deprecated) ACL_EVENT_STATUS_COMPLETE.
pub const ACL_EVENT_STATUS_COMPLETE: i32 = 0;
/// aclrtEventStatus (deprecated) ACL_EVENT_STATUS_NOT_READY.
pub const ACL_EVENT_STATUS_NOT_READY: i32 = 1;
