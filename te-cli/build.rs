//! Records the git commit te is built from as `TE_COMMIT` for `--json` and
//! `te --version`; without git (a source archive) the `TE_COMMIT`
//! environment variable at build time, else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=TE_COMMIT");
    // Rebuild when HEAD moves: HEAD itself and the branch it points at.
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &branch]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"])
        .or_else(|| std::env::var("TE_COMMIT").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TE_COMMIT={commit}");
}
