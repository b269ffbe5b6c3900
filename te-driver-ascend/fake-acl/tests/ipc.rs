//! IPC between two processes: the test binary runs itself as the importer (test `ipc_child`,
//! selected by `TE_FAKE_ACL_IPC_ROLE=child`), driven line by line over its stdin/stdout.

mod common;

use common::*;
use std::ffi::{c_char, CStr, CString};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::ptr::null_mut;

const SIZE: usize = 8192;

fn export(a: &Acl, p: H, size: usize, flags: u64) -> Result<CString, E> {
    let mut key = [0 as c_char; 65];
    // SAFETY: `key` is valid for 65 bytes.
    match unsafe { (a.ipc_export)(p, size, key.as_mut_ptr(), key.len(), flags) } {
        // SAFETY: the fake wrote a NUL-terminated key.
        OK => Ok(unsafe { CStr::from_ptr(key.as_ptr()) }.to_owned()),
        e => Err(e),
    }
}

fn import(a: &Acl, key: &CStr) -> Result<H, E> {
    let mut p: H = null_mut();
    // SAFETY: valid out pointer, NUL-terminated key.
    match unsafe { (a.ipc_import)(&mut p, key.as_ptr(), 0) } {
        OK => Ok(p),
        e => Err(e),
    }
}

/// The importer. Does nothing unless started by `ipc_between_processes`.
#[test]
fn ipc_child() {
    if std::env::var("TE_FAKE_ACL_IPC_ROLE").as_deref() != Ok("child") {
        return;
    }
    let a = acl();
    let mut lines = std::io::stdin().lock().lines().map(|l| l.unwrap());
    // Straight to the stdout handle: the test harness's capture only takes `print!` output.
    let say = |m: String| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "CHILD {m}").unwrap();
        out.flush().unwrap();
    };
    a.init_ok();
    a.set_device_ok(1);
    let key = CString::new(lines.next().unwrap()).unwrap();
    let open_key = CString::new(lines.next().unwrap()).unwrap();
    say(format!("before {}", import(a, &key).unwrap_err()));
    assert_eq!(lines.next().unwrap(), "whitelisted");
    let m = import(a, &key).expect("import after whitelist");
    assert_eq!(m as usize >> 55, 0x7E << 1 | 1, "imported range address");
    let got = a.d2h(m, SIZE).unwrap();
    let mine = a.dmalloc(SIZE);
    // SAFETY: device pointers, never dereferenced.
    let d2d = unsafe { (a.memcpy)(mine, SIZE, m, SIZE, D2D) };
    let via_d2d = a.d2h(mine, SIZE).unwrap();
    let mut base: H = null_mut();
    let mut size = 0usize;
    // SAFETY: valid out pointers.
    let range = unsafe { (a.get_address_range)(m.cast::<u8>().add(5).cast(), &mut base, &mut size) };
    assert_eq!((range, base, size), (OK, m, SIZE));
    // SAFETY: device pointer past the imported range, never dereferenced.
    let past = a.h2d(unsafe { m.cast::<u8>().add(SIZE - 4).cast() }, &[0u8; 8]);
    // Write into the exporter's memory: H2D and async H2D into the imported range.
    let w = pattern(512, 77);
    let wrote = a.h2d(m, &w);
    let s = a.stream();
    // SAFETY: `w` outlives the copy (synchronised right after); device pointer inside the range.
    let wrote_async = unsafe {
        (a.memcpy_async)(
            m.cast::<u8>().add(4096).cast(),
            512,
            w.as_ptr().cast(),
            512,
            H2D,
            s,
        );
        (a.sync_stream)(s)
    };
    let ok = got == pattern(SIZE, 42) && via_d2d == got;
    say(format!("imported {ok} {d2d} {past} {wrote} {wrote_async}"));
    let open = import(a, &open_key).map(|p| a.d2h(p, 512).unwrap() == pattern(512, 77));
    say(format!("open {open:?}"));
    assert_eq!(lines.next().unwrap(), "revoked");
    let after = a.d2h(m, 16).unwrap_err();
    // SAFETY: `w` outlives the copy (synchronised right after); device pointer inside the range.
    let after_async = unsafe {
        (a.memcpy_async)(m, 512, w.as_ptr().cast(), 512, H2D, s);
        (a.sync_stream)(s)
    };
    let reimport = import(a, &key).unwrap_err();
    // SAFETY: NUL-terminated keys.
    let (close, close_open) = unsafe { ((a.ipc_close)(key.as_ptr()), (a.ipc_close)(open_key.as_ptr())) };
    // SAFETY: live handle.
    assert_eq!(unsafe { (a.destroy_stream)(s) }, OK);
    a.dfree(mine);
    say(format!(
        "revoked {after} {after_async} {reimport} {close} {close_open} {:?}",
        a.live()
    ));
    a.finalize_ok();
}

#[test]
fn ipc_between_processes() {
    if std::env::var_os("TE_FAKE_ACL_IPC_ROLE").is_some() {
        return;
    }
    let a = acl();
    a.init_ok();
    a.set_device_ok(0);
    let x = a.dmalloc(SIZE + 512);
    let data = pattern(SIZE, 42);
    assert_eq!(a.h2d(x, &data), OK);

    // Argument checks in the exporter.
    let mut short = [0 as c_char; 64];
    // SAFETY: `short` is valid for its length.
    assert_eq!(
        unsafe { (a.ipc_export)(x, SIZE, short.as_mut_ptr(), short.len(), 0) },
        INVALID_PARAM
    );
    assert_eq!(
        export(a, x, SIZE + 1024, 0).unwrap_err(),
        RT_PARAM_INVALID,
        "beyond the allocation"
    );
    assert_eq!(
        export(a, 0x1000 as H, 16, 0).unwrap_err(),
        RT_PARAM_INVALID,
        "host address"
    );
    assert_eq!(
        import(a, c"tefakeacl-1-0-0-200-99").unwrap_err(),
        RT_IPC_ERROR,
        "unknown key"
    );
    assert_eq!(import(a, c"../../etc/passwd").unwrap_err(), RT_IPC_ERROR);
    let mut pid = 1;
    // SAFETY: NUL-terminated key, one pid.
    assert_eq!(
        unsafe { (a.ipc_set_pid)(c"tefakeacl-1-0-0-200-99".as_ptr(), &mut pid, 1) },
        RT_IPC_ERROR
    );

    let key = export(a, x, SIZE, 0).unwrap();
    assert!(key.as_bytes().len() <= 64);
    let open_key = export(a, x, 512, 1).unwrap();
    assert_eq!(a.live().2, 2);

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "ipc_child", "--nocapture", "--test-threads=1"])
        .env("TE_FAKE_ACL_IPC_ROLE", "child")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = child.stdin.take().unwrap();
    let from = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in from.lines().map_while(Result::ok) {
            // The harness's "test ipc_child ... " may precede the first message on its line.
            if let Some(i) = l.find("CHILD ") {
                let _ = tx.send(l[i + 6..].to_owned());
            }
        }
    });
    // A child that hangs fails the test instead of hanging it (and then sees EOF on its stdin).
    let hear = || {
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("child answered")
    };
    writeln!(to, "{}\n{}", key.to_str().unwrap(), open_key.to_str().unwrap()).unwrap();
    assert_eq!(
        hear(),
        format!("before {RT_IPC_ERROR}"),
        "import before the pid is whitelisted"
    );
    let mut pid = child.id() as i32;
    // SAFETY: NUL-terminated key, one pid.
    assert_eq!(unsafe { (a.ipc_set_pid)(key.as_ptr(), &mut pid, 1) }, OK);
    writeln!(to, "whitelisted").unwrap();
    assert_eq!(hear(), format!("imported true 0 {RT_PARAM_INVALID} 0 0"));
    assert_eq!(hear(), "open Ok(true)", "flags 1 needs no whitelist");
    let mut expect = data.clone();
    expect[..512].copy_from_slice(&pattern(512, 77));
    expect[4096..4608].copy_from_slice(&pattern(512, 77));
    assert_eq!(
        a.d2h(x, SIZE).unwrap(),
        expect,
        "the importer's writes landed in the exporter"
    );

    // SAFETY: no arguments.
    assert_eq!(unsafe { (a.ipc_misuse)() }, 0);
    // SAFETY: NUL-terminated keys.
    unsafe {
        assert_eq!((a.ipc_close)(key.as_ptr()), OK, "revoke");
        assert_eq!(
            (a.ipc_misuse)(),
            1,
            "CANN wants importers to close first: counted"
        );
        assert_eq!((a.ipc_close)(key.as_ptr()), RT_IPC_ERROR, "already revoked");
    }
    writeln!(to, "revoked").unwrap();
    assert_eq!(
        hear(),
        format!("revoked {RT_IPC_ERROR} {RT_IPC_ERROR} {RT_IPC_ERROR} 0 0 (0, 0, 0)"),
        "copies through a revoked mapping and new imports fail; closing unmaps"
    );
    assert!(child.wait().unwrap().success());
    // SAFETY: NUL-terminated key; no arguments.
    unsafe {
        assert_eq!((a.ipc_close)(open_key.as_ptr()), OK);
        assert_eq!((a.ipc_misuse)(), 1, "the importer closed first: fine");
    }
    assert_eq!(a.live().2, 0);
    // Freeing memory whose export is still open is counted too.
    let y = a.dmalloc(512);
    let ykey = export(a, y, 512, 0).unwrap();
    a.dfree(y);
    // SAFETY: NUL-terminated key; no arguments.
    unsafe {
        assert_eq!((a.ipc_misuse)(), 2, "aclrtFree before aclrtIpcMemClose");
        assert_eq!((a.ipc_close)(ykey.as_ptr()), OK);
    }
    a.dfree(x);
    // SAFETY: no arguments.
    assert_eq!(unsafe { (a.ipc_misuse)() }, 2, "freeing after closing is fine");
    assert_eq!(a.live(), (0, 0, 0));
    a.finalize_ok();
    let leftovers: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("te-fake-acl-{}-", std::process::id()))
        })
        .collect();
    assert!(leftovers.is_empty(), "files left: {leftovers:?}");
}

/// Inits, allocates and leaves a copy queued, then lets the process exit without aclFinalize.
#[test]
fn exit_child() {
    if std::env::var("TE_FAKE_ACL_IPC_ROLE").as_deref() != Ok("exit") {
        return;
    }
    let a = acl();
    a.init_ok();
    a.set_device_ok(0);
    let x = a.dmalloc(4096);
    let _key = export(a, x, 4096, 0).unwrap();
    let s = a.stream();
    let data: &'static [u8] = Box::leak(vec![1u8; 4096].into_boxed_slice());
    // SAFETY: `data` is leaked, so it outlives the queued copy.
    unsafe {
        (a.stall)(50);
        assert_eq!((a.memcpy_async)(x, 4096, data.as_ptr().cast(), 4096, H2D, s), OK);
    }
}

#[test]
fn files_are_removed_at_exit() {
    if std::env::var_os("TE_FAKE_ACL_IPC_ROLE").is_some() {
        return;
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "exit_child", "--test-threads=1"])
        .env("TE_FAKE_ACL_IPC_ROLE", "exit")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let prefix = format!("te-fake-acl-{pid}-");
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(
        left.is_empty(),
        "device files and export records of an exited process: {left:?}"
    );
}
