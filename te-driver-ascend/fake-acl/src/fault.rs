//! Call counting, armed faults and the stream stall.
//!
//! Every ACL entry point calls [`enter`] first: it counts the call and says whether an armed fault
//! fires on it. Counters are never reset (tests take differences); faults are one-shot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex};

/// How an armed fault fires on the call it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fired {
    /// The call returns this code and does nothing.
    Now(i32),
    /// The call returns 0 but its stream task fails with this code (only `aclrtMemcpyAsync`).
    OnStream(i32),
}

struct Rule {
    call: String,
    /// Absolute call number (1-based, counted since the library was loaded) that fires.
    at: u64,
    code: i32,
    on_stream: bool,
    /// Armed from `TE_FAKE_ACL_FAIL` (replaced at the next `aclInit`).
    from_env: bool,
}

#[derive(Default)]
struct Faults {
    calls: HashMap<String, u64>,
    rules: Vec<Rule>,
}

static FAULTS: LazyLock<Mutex<Faults>> = LazyLock::new(|| Mutex::new(Faults::default()));

/// Milliseconds every stream task takes at least.
static STALL_MS: AtomicU32 = AtomicU32::new(0);

fn faults() -> std::sync::MutexGuard<'static, Faults> {
    FAULTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts one call of `call` and returns the fault armed for exactly this call, if any.
pub fn enter(call: &str) -> Option<Fired> {
    let mut f = faults();
    let n = {
        let c = f.calls.entry(call.to_owned()).or_insert(0);
        *c += 1;
        *c
    };
    let i = f.rules.iter().position(|r| r.call == call && r.at == n)?;
    let r = f.rules.swap_remove(i);
    // Only an asynchronous copy has a stream task that can fail later.
    if r.on_stream && call == "aclrtMemcpyAsync" {
        Some(Fired::OnStream(r.code))
    } else {
        Some(Fired::Now(r.code))
    }
}

/// Arms a fault on the `nth` call of `call` from now (1 = the next call).
pub fn arm(call: &str, nth: u64, code: i32, on_stream: bool) {
    arm_rule(call, nth, code, on_stream, false);
}

fn arm_rule(call: &str, nth: u64, code: i32, on_stream: bool, from_env: bool) {
    let mut f = faults();
    let now = f.calls.get(call).copied().unwrap_or(0);
    f.rules.push(Rule {
        call: call.to_owned(),
        at: now + nth,
        code,
        on_stream,
        from_env,
    });
}

/// Removes every armed fault and the stall.
pub fn reset() {
    faults().rules.clear();
    STALL_MS.store(0, Ordering::Relaxed);
}

/// How many times `call` has been called since the library was loaded.
pub fn calls(call: &str) -> u64 {
    faults().calls.get(call).copied().unwrap_or(0)
}

/// Sets the per-task stall of every stream.
pub fn set_stall_ms(ms: u32) {
    STALL_MS.store(ms, Ordering::Relaxed);
}

/// The per-task stall of every stream.
pub fn stall_ms() -> u32 {
    STALL_MS.load(Ordering::Relaxed)
}

/// Parses `TE_FAKE_ACL_FAIL` (`name:nth:code[:async],...`) and arms its rules, counted from now.
/// Rules a previous `aclInit` armed from it and that did not fire are dropped first. Entries that
/// do not parse are reported on stderr and skipped.
pub fn arm_from_env(spec: &str) {
    faults().rules.retain(|r| !r.from_env);
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parts: Vec<&str> = item.split(':').collect();
        let parsed = match parts.as_slice() {
            [name, nth, code] => Some((*name, nth.parse::<u64>(), code.parse::<i32>(), false)),
            [name, nth, code, "async"] => Some((*name, nth.parse::<u64>(), code.parse::<i32>(), true)),
            _ => None,
        };
        match parsed {
            Some((name, Ok(nth), Ok(code), on_stream)) if nth > 0 && !name.is_empty() => {
                arm_rule(name, nth, code, on_stream, true)
            }
            _ => eprintln!("te-fake-acl: ignoring TE_FAKE_ACL_FAIL entry {item:?}"),
        }
    }
}
