//! Finding and loading `libascendcl.so`, and the table of ACL functions
//! resolved from it ([`Api`]).
//!
//! A path the caller gives ([`AscendConfig::library`](crate::AscendConfig::library))
//! is the only one tried. Without one, the library is looked for in order:
//! 1. `$TE_ACL_LIBRARY`,
//! 2. `$ASCEND_HOME_PATH/lib64/libascendcl.so` (what CANN's `set_env.sh` exports),
//! 3. `libascendcl.so` through the dynamic loader (`LD_LIBRARY_PATH`, the
//!    loader cache).
//!
//! The first candidate that exists is opened (`RTLD_NOW | RTLD_LOCAL |
//! RTLD_NODELETE`, as memfabric does: ACL's own threads may outlive any
//! handle), and every required symbol must resolve; optional symbols (newer
//! CANN only) may be absent. A library is loaded once per process and path
//! and never unloaded; failures are not remembered, so a later attempt with
//! another path can succeed.

use std::ffi::{c_char, c_int, c_void, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::acl_error::AclError;

/// Why `libascendcl.so` could not be used: the candidates tried and what
/// each gave, or the required symbol the library lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// Each path tried, with the loader's reason.
    pub tried: Vec<(String, String)>,
    /// A required symbol missing from the library that did open.
    pub missing_symbol: Option<&'static str>,
}

impl LoadError {
    /// A one-line summary short enough for a te status message: the first
    /// path tried (or the symbol missing).
    pub fn summary(&self) -> String {
        match (self.missing_symbol, self.tried.last()) {
            (Some(sym), Some((path, _))) => format!("{path} lacks ACL symbol {sym}"),
            _ => {
                let first = self.tried.first().map_or("nothing", |(p, _)| p.as_str());
                match self.tried.len() {
                    0 | 1 => format!("no libascendcl.so loadable: tried {first}"),
                    n => format!("no libascendcl.so loadable: tried {first} and {} more", n - 1),
                }
            }
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(sym), Some((path, _))) = (self.missing_symbol, self.tried.last()) {
            return write!(f, "{path} lacks the required ACL symbol {sym}");
        }
        write!(f, "libascendcl.so could not be loaded; tried")?;
        for (i, (path, why)) in self.tried.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(f, "{sep}{path}: {why}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// The candidates, in the order of the [module docs](self).
fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("TE_ACL_LIBRARY").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("ASCEND_HOME_PATH").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(home).join("lib64").join("libascendcl.so"));
    }
    out.push(PathBuf::from(OsString::from("libascendcl.so")));
    out
}

/// Whether a library file stands where [`load`] would look first: the
/// caller's path, `$TE_ACL_LIBRARY` or `$ASCEND_HOME_PATH/lib64` (not the
/// loader's search, which only loading can tell). Nothing is loaded, so an
/// engine that may never touch NPU memory can ask cheaply.
pub fn findable(explicit: Option<&Path>) -> bool {
    let named = candidates(explicit);
    let explicit_only = explicit.is_some();
    named
        .iter()
        .filter(|p| explicit_only || p.components().count() > 1)
        .any(|p| p.is_file())
}

/// Declares [`Api`] and its resolution from one list of signatures, so the
/// fields and the symbols looked up cannot drift apart.
macro_rules! acl_api {
    (
        required { $( $name:ident ( $( $arg:ty ),* ); )* }
        optional { $( $oname:ident ( $( $oarg:ty ),* ); )* }
    ) => {
        /// The ACL functions te calls, resolved from one loaded library.
        /// Required ones are plain function pointers; optional ones (newer
        /// CANN) are `None` where the library lacks them.
        #[allow(non_snake_case, missing_docs)]
        pub struct Api {
            $( pub $name: unsafe extern "C" fn($($arg),*) -> AclError, )*
            $( pub $oname: Option<unsafe extern "C" fn($($oarg),*) -> AclError>, )*
            /// Where the library was loaded from.
            pub path: PathBuf,
        }

        impl Api {
            /// Resolves every symbol from `lib`; the first required one
            /// missing is returned.
            #[allow(non_snake_case)]
            fn resolve(lib: &libloading::Library, path: PathBuf) -> Result<Api, &'static str> {
                // SAFETY: each symbol is looked up with the C signature
                // acl_rt.h declares for it (listed once, above); the library
                // is never unloaded (see `load`), so the pointers stay valid.
                unsafe {
                    $(
                        let $name = *lib
                            .get::<unsafe extern "C" fn($($arg),*) -> AclError>(
                                concat!(stringify!($name), "\0").as_bytes(),
                            )
                            .map_err(|_| stringify!($name))?;
                    )*
                    $(
                        let $oname = lib
                            .get::<unsafe extern "C" fn($($oarg),*) -> AclError>(
                                concat!(stringify!($oname), "\0").as_bytes(),
                            )
                            .ok()
                            .map(|s| *s);
                    )*
                    Ok(Api { $($name,)* $($oname,)* path })
                }
            }
        }
    };
}

acl_api! {
    required {
        aclInit(*const c_char);
        aclFinalize();
        aclrtSetDevice(i32);
        aclrtGetDevice(*mut i32);
        aclrtGetDeviceCount(*mut u32);
        aclrtGetMemInfo(c_int, *mut usize, *mut usize);
        aclrtMalloc(*mut *mut c_void, usize, c_int);
        aclrtFree(*mut c_void);
        aclrtMallocHost(*mut *mut c_void, usize);
        aclrtFreeHost(*mut c_void);
        aclrtMemcpy(*mut c_void, usize, *const c_void, usize, c_int);
        aclrtMemcpyAsync(*mut c_void, usize, *const c_void, usize, c_int, *mut c_void);
        aclrtCreateStream(*mut *mut c_void);
        aclrtDestroyStream(*mut c_void);
        aclrtSynchronizeStreamWithTimeout(*mut c_void, i32);
        aclrtCreateEvent(*mut *mut c_void);
        aclrtDestroyEvent(*mut c_void);
        aclrtRecordEvent(*mut c_void, *mut c_void);
        aclrtQueryEventStatus(*mut c_void, *mut c_int);
        aclrtStreamWaitEvent(*mut c_void, *mut c_void);
        aclrtDeviceCanAccessPeer(*mut i32, i32, i32);
        aclrtDeviceEnablePeerAccess(i32, u32);
    }
    optional {
        aclrtMemset(*mut c_void, usize, i32, usize);
        aclrtMemGetAddressRange(*mut c_void, *mut *mut c_void, *mut usize);
        aclrtIpcMemGetExportKey(*mut c_void, usize, *mut c_char, usize, u64);
        aclrtIpcMemSetImportPid(*const c_char, *mut i32, usize);
        aclrtIpcMemImportByKey(*mut *mut c_void, *const c_char, u64);
        aclrtIpcMemClose(*const c_char);
        aclrtDeviceGetBareTgid(*mut i32);
        aclrtCreateNotify(*mut *mut c_void, u64);
        aclrtDestroyNotify(*mut c_void);
        aclrtRecordNotify(*mut c_void, *mut c_void);
        aclrtWaitAndResetNotify(*mut c_void, *mut c_void, u32);
    }
}

/// Libraries loaded so far, by the path they were asked for.
static LOADED: Mutex<Vec<&'static Api>> = Mutex::new(Vec::new());

/// The ACL functions of the first loadable candidate (see the [module
/// docs](self)); `explicit` is the caller's path, if any.
pub fn load(explicit: Option<&Path>) -> Result<&'static Api, LoadError> {
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    let mut tried = Vec::new();
    for path in candidates(explicit) {
        if let Some(api) = loaded.iter().find(|a| a.path == path) {
            return Ok(api);
        }
        let shown = path.display().to_string();
        let flags = libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_NODELETE;
        // SAFETY: opening a library runs its initialisers; libascendcl.so's
        // (and the test fake's) only set up their own state.
        let opened = unsafe { libloading::os::unix::Library::open(Some(&path), flags) };
        let lib: libloading::Library = match opened {
            Ok(lib) => lib.into(),
            Err(e) => {
                tried.push((shown, e.to_string()));
                continue;
            }
        };
        tried.push((shown, "loaded".to_string()));
        let api = Api::resolve(&lib, path).map_err(|sym| LoadError {
            tried: tried.clone(),
            missing_symbol: Some(sym),
        })?;
        // Never unloaded: the function pointers in `api` point into it.
        std::mem::forget(lib);
        let api: &'static Api = Box::leak(Box::new(api));
        loaded.push(api);
        return Ok(api);
    }
    Err(LoadError {
        tried,
        missing_symbol: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_names_the_path_tried() {
        let e = match load(Some(Path::new("/nonexistent/libascendcl.so"))) {
            Err(e) => e,
            Ok(api) => panic!("loaded {}", api.path.display()),
        };
        assert_eq!(e.tried[0].0, "/nonexistent/libascendcl.so");
        assert!(
            e.summary().contains("/nonexistent/libascendcl.so"),
            "{}",
            e.summary()
        );
        assert!(e.to_string().contains("No such file"), "{e}");
    }

    #[test]
    fn a_library_without_acl_names_the_missing_symbol() {
        // libc is there on every Linux machine and has no ACL symbols.
        let libc_path = Path::new("libc.so.6");
        let e = match load(Some(libc_path)) {
            Err(e) => e,
            Ok(api) => panic!("loaded {}", api.path.display()),
        };
        assert_eq!(e.missing_symbol, Some("aclInit"));
        assert_eq!(e.summary(), "libc.so.6 lacks ACL symbol aclInit");
    }
}
