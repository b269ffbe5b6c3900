//! Finding and loading `libibverbs.so.1`, and the table of verbs functions resolved from it
//! ([`Verbs`]).
//!
//! A path the caller gives ([`RdmaConfig::library`](crate::RdmaConfig::library)) is the only
//! one tried. Without one: `$TE_VERBS_LIBRARY` if set, else `libibverbs.so.1` through the
//! dynamic loader. The library is opened `RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE` (as UCX and
//! TENT do, plus NODELETE: provider threads may outlive a handle), every symbol of the list
//! must resolve, and the library is never unloaded. `ibv_post_send`, `ibv_poll_cq` and
//! `ibv_req_notify_cq` are not symbols: they are inline functions of verbs.h that call through
//! the context's ops table, and the driver calls them that way ([`crate::ops`]).

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::abi::*;

/// Why `libibverbs.so.1` could not be used: the path tried and the loader's reason, or the
/// symbol the library lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// The path (or loader name) tried.
    pub path: String,
    /// The loader's message, when the library did not open.
    pub reason: Option<String>,
    /// A required symbol missing from the library that did open.
    pub missing_symbol: Option<&'static str>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.missing_symbol, &self.reason) {
            (Some(sym), _) => write!(f, "{} lacks the verbs symbol {sym}", self.path),
            (None, Some(why)) => write!(f, "{} could not be loaded: {why}", self.path),
            (None, None) => write!(f, "{} could not be loaded", self.path),
        }
    }
}

impl std::error::Error for LoadError {}

/// Declares [`Verbs`] and its resolution from one list of signatures, so the fields and the
/// symbols looked up cannot drift apart.
macro_rules! verbs_api {
    ( $( $name:ident ( $( $arg:ty ),* ) -> $ret:ty; )* ) => {
        /// The verbs functions te calls, resolved from one loaded library, with the C
        /// signatures of verbs.h.
        #[allow(missing_docs)]
        pub struct Verbs {
            $( pub $name: unsafe extern "C" fn($($arg),*) -> $ret, )*
            /// Where the library was loaded from.
            pub path: PathBuf,
        }

        impl Verbs {
            /// Resolves every symbol from `lib`; the first one missing is returned.
            fn resolve(lib: &libloading::Library, path: PathBuf) -> Result<Verbs, &'static str> {
                // SAFETY: each symbol is looked up with the C signature verbs.h declares for
                // it (listed once, below); the library is never unloaded (see `load`), so
                // the pointers stay valid.
                unsafe {
                    $(
                        let $name = *lib
                            .get::<unsafe extern "C" fn($($arg),*) -> $ret>(
                                concat!(stringify!($name), "\0").as_bytes(),
                            )
                            .map_err(|_| stringify!($name))?;
                    )*
                    Ok(Verbs { $($name,)* path })
                }
            }
        }
    };
}

verbs_api! {
    ibv_get_device_list(*mut c_int) -> *mut *mut c_void;
    ibv_free_device_list(*mut *mut c_void) -> ();
    ibv_get_device_name(*mut c_void) -> *const c_char;
    ibv_open_device(*mut c_void) -> *mut IbvContext;
    ibv_close_device(*mut IbvContext) -> c_int;
    ibv_query_device(*mut IbvContext, *mut IbvDeviceAttr) -> c_int;
    ibv_query_port(*mut IbvContext, u8, *mut IbvPortAttr) -> c_int;
    ibv_query_gid(*mut IbvContext, u8, c_int, *mut IbvGid) -> c_int;
    ibv_alloc_pd(*mut IbvContext) -> *mut IbvPd;
    ibv_dealloc_pd(*mut IbvPd) -> c_int;
    ibv_reg_mr(*mut IbvPd, *mut c_void, usize, c_int) -> *mut IbvMr;
    ibv_dereg_mr(*mut IbvMr) -> c_int;
    ibv_create_comp_channel(*mut IbvContext) -> *mut IbvCompChannel;
    ibv_destroy_comp_channel(*mut IbvCompChannel) -> c_int;
    ibv_create_cq(*mut IbvContext, c_int, *mut c_void, *mut IbvCompChannel, c_int) -> *mut IbvCq;
    ibv_destroy_cq(*mut IbvCq) -> c_int;
    ibv_get_cq_event(*mut IbvCompChannel, *mut *mut IbvCq, *mut *mut c_void) -> c_int;
    ibv_ack_cq_events(*mut IbvCq, c_uint) -> ();
    ibv_create_qp(*mut IbvPd, *mut IbvQpInitAttr) -> *mut IbvQp;
    ibv_modify_qp(*mut IbvQp, *mut IbvQpAttr, c_int) -> c_int;
    ibv_query_qp(*mut IbvQp, *mut IbvQpAttr, c_int, *mut IbvQpInitAttr) -> c_int;
    ibv_destroy_qp(*mut IbvQp) -> c_int;
}

/// The default loader name.
pub const DEFAULT_LIBRARY: &str = "libibverbs.so.1";

/// The path to try: `explicit`, else `$TE_VERBS_LIBRARY`, else [`DEFAULT_LIBRARY`].
fn candidate(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os("TE_VERBS_LIBRARY").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(DEFAULT_LIBRARY),
    }
}

/// Libraries loaded so far, by the path they were asked for.
static LOADED: Mutex<Vec<&'static Verbs>> = Mutex::new(Vec::new());

/// The verbs functions of the library the [module docs](self) describe; `explicit` is the
/// caller's path, if any. Failures are not remembered: a later call may succeed.
pub fn load(explicit: Option<&Path>) -> Result<&'static Verbs, LoadError> {
    let path = candidate(explicit);
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(v) = loaded.iter().find(|v| v.path == path) {
        return Ok(v);
    }
    let shown = path.display().to_string();
    let flags = libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_NODELETE;
    // SAFETY: opening a library runs its initialisers; libibverbs' (and the fake's) only set
    // up their own state.
    let lib: libloading::Library = match unsafe { libloading::os::unix::Library::open(Some(&path), flags) } {
        Ok(lib) => lib.into(),
        Err(e) => {
            return Err(LoadError {
                path: shown,
                reason: Some(e.to_string()),
                missing_symbol: None,
            })
        }
    };
    let verbs = Verbs::resolve(&lib, path).map_err(|sym| LoadError {
        path: shown,
        reason: None,
        missing_symbol: Some(sym),
    })?;
    // Never unloaded: the function pointers in `verbs` point into it.
    std::mem::forget(lib);
    let verbs: &'static Verbs = Box::leak(Box::new(verbs));
    loaded.push(verbs);
    Ok(verbs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_names_the_path() {
        let e = match load(Some(Path::new("/nonexistent/libibverbs.so.1"))) {
            Err(e) => e,
            Ok(v) => panic!("loaded {}", v.path.display()),
        };
        assert_eq!(e.path, "/nonexistent/libibverbs.so.1");
        let shown = e.to_string();
        assert!(
            shown.contains("/nonexistent/libibverbs.so.1") && shown.contains("No such file"),
            "{shown}"
        );
    }

    #[test]
    fn a_library_without_verbs_names_the_missing_symbol() {
        // libc is on every Linux machine and has no verbs symbols.
        let e = match load(Some(Path::new("libc.so.6"))) {
            Err(e) => e,
            Ok(v) => panic!("loaded {}", v.path.display()),
        };
        assert_eq!(e.missing_symbol, Some("ibv_get_device_list"));
        assert_eq!(
            e.to_string(),
            "libc.so.6 lacks the verbs symbol ibv_get_device_list"
        );
    }
}
