//! Call counting and one-shot faults: per exported function (the call returns an errno) and
//! per work request (its completion carries a status instead of the work being done).
//!
//! `TE_FAKE_VERBS_FAIL` is read when the state is first touched: a comma-separated list of
//! `ibv_name:nth:errno` (the nth call of `ibv_name`, 1-based) and `wc:nth:status` (the nth work
//! request any queue pair of this process executes).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};

/// The pseudo-name that [`arm`] takes for work-request faults.
pub const WC: &str = "wc";

struct Rule {
    name: String,
    /// Absolute count (1-based, since the library was loaded) at which the rule fires.
    at: u64,
    value: i32,
}

struct Faults {
    calls: HashMap<String, u64>,
    rules: Vec<Rule>,
}

static FAULTS: LazyLock<Mutex<Faults>> = LazyLock::new(|| {
    let mut f = Faults {
        calls: HashMap::new(),
        rules: Vec::new(),
    };
    if let Ok(spec) = std::env::var("TE_FAKE_VERBS_FAIL") {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split(':').collect::<Vec<_>>().as_slice() {
                [name, nth, value] => match (nth.parse::<u64>(), value.parse::<i32>()) {
                    (Ok(nth), Ok(value)) if nth > 0 => f.rules.push(Rule {
                        name: (*name).to_owned(),
                        at: nth,
                        value,
                    }),
                    _ => eprintln!("te-fake-verbs: ignoring TE_FAKE_VERBS_FAIL entry {item:?}"),
                },
                _ => eprintln!("te-fake-verbs: ignoring TE_FAKE_VERBS_FAIL entry {item:?}"),
            }
        }
    }
    Mutex::new(f)
});

fn faults() -> MutexGuard<'static, Faults> {
    FAULTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts one call of `name` (or one executed work request for [`WC`]) and returns the value
/// of the fault armed for exactly this one, if any.
pub fn enter(name: &str) -> Option<i32> {
    let mut f = faults();
    let n = {
        let c = f.calls.entry(name.to_owned()).or_insert(0);
        *c += 1;
        *c
    };
    let i = f.rules.iter().position(|r| r.name == name && r.at == n)?;
    Some(f.rules.swap_remove(i).value)
}

/// Arms a fault on the `nth` call of `name` from now (1 = the next one).
pub fn arm(name: &str, nth: u64, value: i32) {
    let mut f = faults();
    let now = f.calls.get(name).copied().unwrap_or(0);
    f.rules.push(Rule {
        name: name.to_owned(),
        at: now + nth,
        value,
    });
}

/// Disarms every fault.
pub fn reset() {
    faults().rules.clear();
}

/// How many times `name` was called (or, for [`WC`], work requests executed).
pub fn calls(name: &str) -> u64 {
    faults().calls.get(name).copied().unwrap_or(0)
}
