//! What ACL keeps per process and per thread: `aclInit`/`aclFinalize`,
//! counted across every driver of the process ([`Session`]), and the
//! device each thread is bound to ([`Session::bind`]).
//!
//! ACL may be initialised once per process, and other code in the process
//! (torch_npu, the application) may have done so first: `aclInit` then
//! answers `ACL_ERROR_REPEAT_INITIALIZE`, which is success for te, and te
//! then leaves `aclFinalize` to whoever initialised. A device is bound per
//! thread (`aclrtSetDevice`): te's event-loop thread, its copy helpers and
//! the application's threads calling te each need it, so every driver call
//! binds the calling thread first. It asks `aclrtGetDevice` and calls
//! `aclrtSetDevice` only when the thread is on another device or none; te
//! does not switch the thread back afterwards (as with CUDA engines, a
//! thread that calls te on `npu:1` is left on `npu:1`).

use std::sync::Mutex;

use te_proto::driver::DeviceIndex;
use te_proto::Result;

use crate::acl_error::{check, status_of, ACL_ERROR_REPEAT_INITIALIZE, ACL_SUCCESS};
use crate::library::Api;

/// How many sessions use one library, and whether te initialised it.
struct Users {
    api: &'static Api,
    count: usize,
    initialized_here: bool,
}

static USERS: Mutex<Vec<Users>> = Mutex::new(Vec::new());

/// One user of ACL in this process: `aclInit` with the first, `aclFinalize`
/// (if te initialised) when the last is dropped.
pub struct Session {
    api: &'static Api,
}

impl Session {
    /// Joins the process's ACL users, initialising ACL if this is the first.
    pub fn open(api: &'static Api) -> Result<Session> {
        let mut users = USERS.lock().unwrap_or_else(|p| p.into_inner());
        let at = match users.iter().position(|u| std::ptr::eq(u.api, api)) {
            Some(at) => at,
            None => {
                users.push(Users {
                    api,
                    count: 0,
                    initialized_here: false,
                });
                users.len() - 1
            }
        };
        let u = &mut users[at];
        if u.count == 0 {
            // SAFETY: aclInit takes an optional path of a JSON config; null
            // means none.
            let rc = unsafe { (api.aclInit)(std::ptr::null()) };
            match rc {
                ACL_SUCCESS => u.initialized_here = true,
                ACL_ERROR_REPEAT_INITIALIZE => u.initialized_here = false,
                other => return Err(status_of("aclInit", None, other)),
            }
        }
        u.count += 1;
        Ok(Session { api })
    }

    /// The library's functions.
    pub fn api(&self) -> &'static Api {
        self.api
    }

    /// Binds the calling thread to device `dev` unless it is bound to it.
    pub fn bind(&self, dev: DeviceIndex) -> Result<()> {
        let want = i32::from(dev);
        let mut now = -1;
        // SAFETY: aclrtGetDevice writes one int32 through its pointer.
        let rc = unsafe { (self.api.aclrtGetDevice)(&mut now) };
        if rc == ACL_SUCCESS && now == want {
            return Ok(());
        }
        // SAFETY: aclrtSetDevice takes a device index by value.
        check("aclrtSetDevice", Some(dev), unsafe {
            (self.api.aclrtSetDevice)(want)
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut users = USERS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = users.iter_mut().find(|u| std::ptr::eq(u.api, self.api)) {
            u.count -= 1;
            if u.count == 0 && u.initialized_here {
                u.initialized_here = false;
                // SAFETY: the last te user is gone, and te initialised ACL;
                // every stream, event and allocation of te's was released by
                // the drivers before their sessions dropped.
                let _ = unsafe { (self.api.aclFinalize)() };
            }
        }
    }
}
