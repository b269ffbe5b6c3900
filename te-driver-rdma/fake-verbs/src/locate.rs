//! Where the built fake library is, for tests that load it.

use std::path::PathBuf;

/// The built `libte_fake_verbs.so`: `$TE_FAKE_VERBS_LIB` if set, else the first
/// `libte_fake_verbs.so` in the calling executable's directory or one above it (a test binary
/// lives in `<target>/<profile>/deps/`, where cargo puts the cdylib of a dependency).
/// `None` when it is nowhere to be found.
pub fn library_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TE_FAKE_VERBS_LIB") {
        return Some(p.into());
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .map(|d| d.join("libte_fake_verbs.so"))
        .find(|p| p.exists())
}
