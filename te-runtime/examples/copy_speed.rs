//! The copy primitives behind the same-host path, measured alone: user
//! space `memcpy` against the kernel's `process_vm_readv`, on one thread
//! and split over two, cycling through two prefaulted 512 MiB buffers
//! with transparent huge pages requested (docs/PERFORMANCE.md).
//!
//! `cargo run --release -p te-runtime --example copy_speed`

use std::time::Instant;

const TOTAL: usize = 512 << 20;
const ROUNDS: usize = 4;

/// A prefaulted anonymous mapping of `len` bytes, THP requested.
fn buffer(len: usize) -> usize {
    // SAFETY: a fresh private anonymous mapping; checked for failure.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap of {len} bytes failed");
    // SAFETY: `p` is our mapping of `len` bytes; advice and a full write.
    unsafe {
        libc::madvise(p, len, libc::MADV_HUGEPAGE);
        std::ptr::write_bytes(p.cast::<u8>(), 1, len);
    }
    p as usize
}

/// Copies `len` bytes from `src` to `dst` (both in this process) one way.
fn copy(kernel: bool, dst: usize, src: usize, len: usize) {
    if kernel {
        let local = libc::iovec {
            iov_base: dst as *mut libc::c_void,
            iov_len: len,
        };
        let remote = libc::iovec {
            iov_base: src as *mut libc::c_void,
            iov_len: len,
        };
        // SAFETY: both ranges lie inside our own mappings (`buffer`).
        let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        assert_eq!(
            n,
            len as isize,
            "process_vm_readv: {}",
            std::io::Error::last_os_error()
        );
    } else {
        // SAFETY: two distinct mappings of at least `len` bytes past these offsets.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len) };
    }
}

fn main() {
    let (src, dst) = (buffer(TOTAL), buffer(TOTAL));
    for chunk in [1usize << 20, 16 << 20] {
        for (name, kernel, split) in [
            ("memcpy", false, false),
            ("process_vm_readv", true, false),
            ("memcpy, 2 threads", false, true),
            ("process_vm_readv, 2 threads", true, true),
        ] {
            let t = Instant::now();
            for _ in 0..ROUNDS {
                for off in (0..TOTAL).step_by(chunk) {
                    let (s, d) = (src + off, dst + off);
                    if split {
                        let h = chunk / 2;
                        std::thread::scope(|sc| {
                            sc.spawn(move || copy(kernel, d + h, s + h, h));
                            copy(kernel, d, s, h);
                        });
                    } else {
                        copy(kernel, d, s, chunk);
                    }
                }
            }
            let gbps = (TOTAL * ROUNDS) as f64 / t.elapsed().as_secs_f64() / 1e9;
            println!("{:>2} MiB chunks  {name:<28} {gbps:6.2} GB/s", chunk >> 20);
        }
    }
}
