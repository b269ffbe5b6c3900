//! Micro-benchmarks of te-proto alone: frame encode/decode, registry
//! lookups among 100k regions, and two links moving 1 MiB transfers in
//! memory (the state machine's own throughput, payload copies excluded).
//!
//! `cargo bench -p te-proto --bench proto`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use te_proto::batch::{BatchId, Op, TaskId, TransferRequest};
use te_proto::link::{Event, Link, LinkConfig, PayloadDest};
use te_proto::wire::{Decoder, Frame, MAX_CONTROL_LEN};
use te_proto::{Entry, Instant, Location, Perm, Region, Registry, Span};

fn frames(c: &mut Criterion) {
    let mut buf = [0u8; 64];
    let req = Frame::ReadReq {
        req_id: 0x1234_5600,
        addr: 0x7f00_0000_1000,
        location: None,
        len: 1 << 20,
    };
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode ReadReq", |b| {
        b.iter(|| black_box(&req).encode(&mut buf).unwrap())
    });
    let n = req.encode(&mut buf).unwrap();
    let bytes = buf[..n].to_vec();
    g.bench_function("decode ReadReq", |b| {
        let mut d = Decoder::new(1 << 20);
        b.iter(|| {
            d.feed(black_box(&bytes)).unwrap();
            let op = d.frame().unwrap().unwrap().opcode();
            d.next();
            op
        })
    });
    g.finish();
}

fn registry(c: &mut Criterion) {
    let n = 100_000u64;
    let mut reg = Registry::new(vec![Entry::EMPTY; n as usize].into_boxed_slice());
    for i in 0..n {
        reg.register(Region::new(
            0x1000_0000 + i * 0x2000,
            0x1000,
            Location::Cpu,
            Perm::REMOTE_READ_WRITE,
        ))
        .unwrap();
    }
    let mut g = c.benchmark_group("registry 100k regions");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("check_remote", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            reg.check_remote(
                black_box(0x1000_0000 + i * 0x2000 + 8),
                64,
                None,
                Perm::REMOTE_READ,
            )
            .unwrap()
        })
    });
    g.bench_function("pin_remote + unpin", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            let k = reg
                .pin_remote(
                    0x1000_0000 + i * 0x2000,
                    4096,
                    Some(Location::Cpu),
                    Perm::REMOTE_WRITE,
                )
                .unwrap();
            reg.unpin(k)
        })
    });
    g.finish();
}

/// Two links back to back: `a` reads `len` bytes from `b`. Payload bytes
/// are not copied; only the protocol runs.
fn links(c: &mut Criterion) {
    let len = 1u64 << 20;
    let now = Instant::ZERO;
    let mut ca = LinkConfig::new("a").unwrap();
    ca.max_payload = 256 << 10;
    let mut cb = LinkConfig::new("b").unwrap();
    cb.max_payload = 256 << 10;
    let mut a = Link::connect(ca, now, [1; 32]).unwrap();
    let mut b = Link::accept(cb, now, [2; 32]).unwrap();
    let mut ra = Registry::new([Entry::EMPTY; 4]);
    let mut rb = Registry::new([Entry::EMPTY; 4]);
    ra.register(Region::new(0x1000, len, Location::Cpu, Perm::LOCAL_ONLY))
        .unwrap();
    rb.register(Region::new(0x1000, len, Location::Cpu, Perm::REMOTE_READ))
        .unwrap();
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let mut pump =
        |a: &mut Link, b: &mut Link, ra: &mut Registry<[Entry; 4]>, rb: &mut Registry<[Entry; 4]>| {
            let mut done = false;
            while !done {
                while let Some(t) = a.poll_transmit(now, &mut buf, ra) {
                    b.handle_input(now, &buf[..t.len], rb);
                }
                while let Some(t) = b.poll_transmit(now, &mut buf, rb) {
                    // A transmit ends where its payload starts: the link takes it all.
                    assert_eq!(a.handle_input(now, &buf[..t.len], ra), t.len);
                    if let Some(p) = t.payload {
                        assert!(matches!(a.poll_payload(), Some(PayloadDest::Memory(_))));
                        a.payload_landed(now, p.len, ra);
                        b.payload_sent(rb);
                    }
                }
                while let Some(e) = a.poll_event() {
                    done |= matches!(e, Event::TaskDone { .. });
                }
                while b.poll_event().is_some() {}
            }
        };
    let mut g = c.benchmark_group("links in memory");
    g.throughput(Throughput::Bytes(len));
    let mut k = 0u32;
    g.bench_function("1 MiB read", |bch| {
        bch.iter(|| {
            k += 1;
            let task = TaskId {
                batch: BatchId::from_u64(1),
                index: k,
            };
            let req = TransferRequest {
                op: Op::Read,
                local: Span::cpu(0x1000, len),
                segment: 0,
                remote_addr: 0x1000,
                remote_location: None,
            };
            a.submit(task, &req, None).unwrap();
            pump(&mut a, &mut b, &mut ra, &mut rb);
        })
    });
    g.finish();
}

criterion_group!(benches, frames, registry, links);
criterion_main!(benches);
