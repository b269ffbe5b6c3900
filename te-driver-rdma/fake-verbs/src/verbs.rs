//! The exported `ibv_*` functions and the objects behind the structures they hand out.
//!
//! Every object is a `#[repr(C)]` wrapper whose first field is the verbs.h structure, so the
//! pointer the caller holds is the wrapper's. Functions that return a pointer return NULL and
//! set `errno` on failure; the others return the errno (`ibv_query_gid`: -1 with `errno`, as
//! rdma-core does). Every call is counted and may carry an armed fault ([`crate::fault`]).

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::abi::*;
use crate::cq::{ChannelState, CqState};
use crate::device;
use crate::fault;
use crate::nic::{MrEntry, Nic};
use crate::qp::{QpShared, Work};

/// Objects alive (contexts, PDs, MRs, channels, CQs, QPs, device lists).
pub static LIVE: AtomicU64 = AtomicU64::new(0);

static NEXT_HANDLE: AtomicU32 = AtomicU32::new(1);

fn set_errno(e: i32) {
    // SAFETY: the calling thread's errno slot is always valid.
    unsafe { *libc::__errno_location() = e };
}

fn enter(name: &str) -> Result<(), i32> {
    match fault::enter(name) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn null_with<T>(e: i32) -> *mut T {
    set_errno(e);
    std::ptr::null_mut()
}

fn leak<T>(v: T) -> *mut T {
    LIVE.fetch_add(1, Ordering::Relaxed);
    Box::into_raw(Box::new(v))
}

/// # Safety
/// `p` came from [`leak`] and is not used afterwards.
unsafe fn free<T>(p: *mut T) {
    LIVE.fetch_sub(1, Ordering::Relaxed);
    // SAFETY: the caller's contract.
    drop(unsafe { Box::from_raw(p) });
}

fn zeroed_mutex() -> libc::pthread_mutex_t {
    libc::PTHREAD_MUTEX_INITIALIZER
}

/// What sits behind a `struct ibv_context *`.
#[repr(C)]
pub struct Context {
    raw: IbvContext,
    nic: Arc<Nic>,
    children: AtomicUsize,
}

#[repr(C)]
struct Pd {
    raw: IbvPd,
    ctx: *mut Context,
    users: AtomicUsize,
}

#[repr(C)]
struct Mr {
    raw: IbvMr,
    pd: *mut Pd,
}

#[repr(C)]
struct Channel {
    raw: IbvCompChannel,
    state: Arc<ChannelState>,
    ctx: *mut Context,
    cqs: AtomicUsize,
}

#[repr(C)]
struct Cq {
    raw: IbvCq,
    state: Arc<CqState>,
    channel: *mut Channel,
}

#[repr(C)]
struct Qp {
    raw: IbvQp,
    shared: Arc<QpShared>,
    pd: *mut Pd,
}

/// `struct ibv_device **ibv_get_device_list(int *num_devices)`.
///
/// # Safety
/// `num_devices` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ibv_get_device_list(num_devices: *mut c_int) -> *mut *mut IbvDevice {
    if let Err(e) = enter("ibv_get_device_list") {
        return null_with(e);
    }
    let n = device::count();
    let mut list: Vec<*mut IbvDevice> = (0..n).map(device::device).collect();
    list.push(std::ptr::null_mut());
    if !num_devices.is_null() {
        // SAFETY: the caller passes a writable int (or NULL, checked).
        unsafe { *num_devices = n as c_int };
    }
    LIVE.fetch_add(1, Ordering::Relaxed);
    Box::into_raw(list.into_boxed_slice()).cast()
}

/// `void ibv_free_device_list(struct ibv_device **list)`.
///
/// # Safety
/// `list` came from [`ibv_get_device_list`] and is freed once.
#[no_mangle]
pub unsafe extern "C" fn ibv_free_device_list(list: *mut *mut IbvDevice) {
    let _ = enter("ibv_free_device_list");
    if list.is_null() {
        return;
    }
    let mut n = 0;
    // SAFETY: the list is NULL-terminated (built by ibv_get_device_list).
    while !unsafe { *list.add(n) }.is_null() {
        n += 1;
    }
    LIVE.fetch_sub(1, Ordering::Relaxed);
    // SAFETY: the list is a boxed slice of n + 1 pointers.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(list, n + 1)) });
}

/// `const char *ibv_get_device_name(struct ibv_device *device)`.
///
/// # Safety
/// `device` is one of the fake's devices.
#[no_mangle]
pub unsafe extern "C" fn ibv_get_device_name(device: *mut IbvDevice) -> *const c_char {
    if let Err(e) = enter("ibv_get_device_name") {
        return null_with::<c_char>(e);
    }
    if device::index_of(device).is_none() {
        return null_with::<c_char>(libc::EINVAL);
    }
    // SAFETY: a device struct of the fake, never freed.
    unsafe { (*device).name.as_ptr() }
}

/// `struct ibv_context *ibv_open_device(struct ibv_device *device)`.
///
/// # Safety
/// `device` came from [`ibv_get_device_list`].
#[no_mangle]
pub unsafe extern "C" fn ibv_open_device(device: *mut IbvDevice) -> *mut IbvContext {
    if let Err(e) = enter("ibv_open_device") {
        return null_with(e);
    }
    let Some(i) = device::index_of(device) else {
        return null_with(libc::ENODEV);
    };
    let nic = match device::nic(i) {
        Ok(n) => n,
        Err(e) => return null_with(e.raw_os_error().unwrap_or(libc::EIO)),
    };
    let ops = IbvContextOps {
        before_poll_cq: [std::ptr::null_mut(); 11],
        poll_cq: Some(poll_cq),
        req_notify_cq: Some(req_notify_cq),
        before_post_srq_recv: [std::ptr::null_mut(); 7],
        post_srq_recv: Some(post_recv),
        before_post_send: [std::ptr::null_mut(); 4],
        post_send: Some(post_send),
        post_recv: Some(post_recv),
        after_post_recv: [std::ptr::null_mut(); 5],
    };
    let ctx = leak(Context {
        raw: IbvContext {
            device: device.cast(),
            ops,
            cmd_fd: -1,
            async_fd: -1,
            num_comp_vectors: 1,
            mutex: zeroed_mutex(),
            abi_compat: std::ptr::null_mut(),
        },
        nic,
        children: AtomicUsize::new(0),
    });
    ctx.cast()
}

/// `int ibv_close_device(struct ibv_context *context)`: `EBUSY` while PDs, CQs or channels
/// of the context are alive.
///
/// # Safety
/// `context` came from [`ibv_open_device`].
#[no_mangle]
pub unsafe extern "C" fn ibv_close_device(context: *mut IbvContext) -> c_int {
    if let Err(e) = enter("ibv_close_device") {
        return e;
    }
    let ctx = context.cast::<Context>();
    // SAFETY: a live context of the fake.
    if unsafe { &*ctx }.children.load(Ordering::Relaxed) != 0 {
        return libc::EBUSY;
    }
    // SAFETY: as above; freed once.
    unsafe { free(ctx) };
    0
}

/// `int ibv_query_device(struct ibv_context *, struct ibv_device_attr *)`.
///
/// # Safety
/// `context` is live, `attr` writable.
#[no_mangle]
pub unsafe extern "C" fn ibv_query_device(context: *mut IbvContext, attr: *mut IbvDeviceAttr) -> c_int {
    if let Err(e) = enter("ibv_query_device") {
        return e;
    }
    // SAFETY: a live context; its device is one of the fake's.
    let Some(i) = device::index_of(unsafe { (*context).device }.cast()) else {
        return libc::EINVAL;
    };
    // SAFETY: the caller's attribute struct, fully written.
    device::attributes(i, unsafe { &mut *attr });
    0
}

/// `int ibv_query_port(struct ibv_context *, uint8_t, struct _compat_ibv_port_attr *)`.
///
/// # Safety
/// `context` is live, `attr` has room for the 48-byte compat struct.
#[no_mangle]
pub unsafe extern "C" fn ibv_query_port(
    _context: *mut IbvContext,
    port_num: u8,
    attr: *mut IbvPortAttr,
) -> c_int {
    if let Err(e) = enter("ibv_query_port") {
        return e;
    }
    if port_num != 1 {
        return libc::EINVAL;
    }
    // SAFETY: the caller's attribute struct.
    device::port(unsafe { &mut *attr });
    0
}

/// `int ibv_query_gid(struct ibv_context *, uint8_t port_num, int index, union ibv_gid *)`.
///
/// # Safety
/// `context` is live, `gid` writable.
#[no_mangle]
pub unsafe extern "C" fn ibv_query_gid(
    context: *mut IbvContext,
    port_num: u8,
    index: c_int,
    gid: *mut IbvGid,
) -> c_int {
    if let Err(e) = enter("ibv_query_gid") {
        set_errno(e);
        return -1;
    }
    if port_num != 1 || index != 0 {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: a live context of the fake; the caller's gid.
    unsafe { (*gid).raw = (&*context.cast::<Context>()).nic.gid };
    0
}

/// `struct ibv_pd *ibv_alloc_pd(struct ibv_context *)`.
///
/// # Safety
/// `context` is live.
#[no_mangle]
pub unsafe extern "C" fn ibv_alloc_pd(context: *mut IbvContext) -> *mut IbvPd {
    if let Err(e) = enter("ibv_alloc_pd") {
        return null_with(e);
    }
    let ctx = context.cast::<Context>();
    // SAFETY: a live context.
    unsafe { &*ctx }.children.fetch_add(1, Ordering::Relaxed);
    leak(Pd {
        raw: IbvPd {
            context,
            handle: NEXT_HANDLE.fetch_add(1, Ordering::Relaxed),
        },
        ctx,
        users: AtomicUsize::new(0),
    })
    .cast()
}

/// `int ibv_dealloc_pd(struct ibv_pd *)`: `EBUSY` while MRs or QPs use it.
///
/// # Safety
/// `pd` is live.
#[no_mangle]
pub unsafe extern "C" fn ibv_dealloc_pd(pd: *mut IbvPd) -> c_int {
    if let Err(e) = enter("ibv_dealloc_pd") {
        return e;
    }
    let p = pd.cast::<Pd>();
    // SAFETY: a live PD.
    let r = unsafe { &*p };
    if r.users.load(Ordering::Relaxed) != 0 {
        return libc::EBUSY;
    }
    // SAFETY: the PD's context outlives it (close refuses while children live).
    unsafe { &*r.ctx }.children.fetch_sub(1, Ordering::Relaxed);
    // SAFETY: freed once.
    unsafe { free(p) };
    0
}

/// `struct ibv_mr *ibv_reg_mr(struct ibv_pd *, void *addr, size_t length, int access)`.
/// Remote write or atomic access without local write is `EINVAL`, as in the kernel.
///
/// # Safety
/// `pd` is live; the memory stays valid while registered.
#[no_mangle]
pub unsafe extern "C" fn ibv_reg_mr(
    pd: *mut IbvPd,
    addr: *mut c_void,
    length: usize,
    access: c_int,
) -> *mut IbvMr {
    if let Err(e) = enter("ibv_reg_mr") {
        return null_with(e);
    }
    let known =
        IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;
    if access & !known != 0
        || (access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC) != 0
            && access & IBV_ACCESS_LOCAL_WRITE == 0)
        || length == 0
        || (addr as u64).checked_add(length as u64).is_none()
    {
        return null_with(libc::EINVAL);
    }
    let p = pd.cast::<Pd>();
    // SAFETY: a live PD and its live context.
    let (r, ctx) = unsafe { (&*p, &*(*p).ctx) };
    let key = ctx.nic.register(MrEntry {
        addr: addr as u64,
        len: length as u64,
        access,
        pd: r.raw.handle,
    });
    r.users.fetch_add(1, Ordering::Relaxed);
    leak(Mr {
        raw: IbvMr {
            context: r.raw.context,
            pd,
            addr,
            length,
            handle: key,
            lkey: key,
            rkey: key,
        },
        pd: p,
    })
    .cast()
}

/// `int ibv_dereg_mr(struct ibv_mr *)`: from its return on, the NIC refuses the keys.
///
/// # Safety
/// `mr` is live.
#[no_mangle]
pub unsafe extern "C" fn ibv_dereg_mr(mr: *mut IbvMr) -> c_int {
    if let Err(e) = enter("ibv_dereg_mr") {
        return e;
    }
    let m = mr.cast::<Mr>();
    // SAFETY: a live MR, its PD and context.
    let (r, pd) = unsafe { (&*m, &*(*m).pd) };
    // SAFETY: as above.
    let ctx = unsafe { &*pd.ctx };
    ctx.nic.deregister(r.raw.lkey);
    pd.users.fetch_sub(1, Ordering::Relaxed);
    // SAFETY: freed once.
    unsafe { free(m) };
    0
}

/// `struct ibv_comp_channel *ibv_create_comp_channel(struct ibv_context *)`.
///
/// # Safety
/// `context` is live.
#[no_mangle]
pub unsafe extern "C" fn ibv_create_comp_channel(context: *mut IbvContext) -> *mut IbvCompChannel {
    if let Err(e) = enter("ibv_create_comp_channel") {
        return null_with(e);
    }
    let state = match ChannelState::new() {
        Ok(s) => Arc::new(s),
        Err(e) => return null_with(e),
    };
    let ctx = context.cast::<Context>();
    // SAFETY: a live context.
    unsafe { &*ctx }.children.fetch_add(1, Ordering::Relaxed);
    leak(Channel {
        raw: IbvCompChannel {
            context,
            fd: state.read_fd,
            refcnt: 0,
        },
        state,
        ctx,
        cqs: AtomicUsize::new(0),
    })
    .cast()
}

/// `int ibv_destroy_comp_channel(struct ibv_comp_channel *)`: `EBUSY` while CQs use it.
///
/// # Safety
/// `channel` is live.
#[no_mangle]
pub unsafe extern "C" fn ibv_destroy_comp_channel(channel: *mut IbvCompChannel) -> c_int {
    if let Err(e) = enter("ibv_destroy_comp_channel") {
        return e;
    }
    let c = channel.cast::<Channel>();
    // SAFETY: a live channel.
    let r = unsafe { &*c };
    if r.cqs.load(Ordering::Relaxed) != 0 {
        return libc::EBUSY;
    }
    // SAFETY: its context outlives it.
    unsafe { &*r.ctx }.children.fetch_sub(1, Ordering::Relaxed);
    // SAFETY: freed once.
    unsafe { free(c) };
    0
}

/// `struct ibv_cq *ibv_create_cq(struct ibv_context *, int cqe, void *cq_context,
/// struct ibv_comp_channel *, int comp_vector)`: exactly `cqe` entries (1..=65535).
///
/// # Safety
/// `context` and `channel` (or NULL) are live.
#[no_mangle]
pub unsafe extern "C" fn ibv_create_cq(
    context: *mut IbvContext,
    cqe: c_int,
    cq_context: *mut c_void,
    channel: *mut IbvCompChannel,
    comp_vector: c_int,
) -> *mut IbvCq {
    if let Err(e) = enter("ibv_create_cq") {
        return null_with(e);
    }
    if !(1..=device::MAX_CQE).contains(&cqe) || comp_vector != 0 {
        return null_with(libc::EINVAL);
    }
    let ch = channel.cast::<Channel>();
    let ch_state = if ch.is_null() {
        None
    } else {
        // SAFETY: a live channel.
        let r = unsafe { &*ch };
        r.cqs.fetch_add(1, Ordering::Relaxed);
        Some(Arc::clone(&r.state))
    };
    let ctx = context.cast::<Context>();
    // SAFETY: a live context.
    unsafe { &*ctx }.children.fetch_add(1, Ordering::Relaxed);
    let state = Arc::new(CqState::new(cqe as usize, ch_state));
    let p = leak(Cq {
        raw: IbvCq {
            context,
            channel,
            cq_context,
            handle: NEXT_HANDLE.fetch_add(1, Ordering::Relaxed),
            cqe,
            mutex: zeroed_mutex(),
            cond: libc::PTHREAD_COND_INITIALIZER,
            comp_events_completed: 0,
            async_events_completed: 0,
        },
        state: Arc::clone(&state),
        channel: ch,
    });
    state.set_raw(p as u64);
    p.cast()
}

/// `int ibv_destroy_cq(struct ibv_cq *)`: `EBUSY` while QPs use it or events taken by
/// `ibv_get_cq_event` are unacknowledged (rdma-core would block there).
///
/// # Safety
/// `cq` is live.
#[no_mangle]
pub unsafe extern "C" fn ibv_destroy_cq(cq: *mut IbvCq) -> c_int {
    if let Err(e) = enter("ibv_destroy_cq") {
        return e;
    }
    let c = cq.cast::<Cq>();
    // SAFETY: a live CQ.
    let r = unsafe { &*c };
    if r.state.busy() {
        return libc::EBUSY;
    }
    if !r.channel.is_null() {
        // SAFETY: the channel outlives its CQs (destroying it is refused meanwhile).
        unsafe { &*r.channel }.cqs.fetch_sub(1, Ordering::Relaxed);
    }
    // SAFETY: the context outlives the CQ.
    unsafe { &*r.raw.context.cast::<Context>() }
        .children
        .fetch_sub(1, Ordering::Relaxed);
    // SAFETY: freed once.
    unsafe { free(c) };
    0
}

/// `int ibv_get_cq_event(struct ibv_comp_channel *, struct ibv_cq **, void **)`: reads one
/// event from the channel's fd (blocking or not, as the caller set the fd); -1 with `errno`
/// when none could be read.
///
/// # Safety
/// `channel` is live; `cq` and `cq_context` writable.
#[no_mangle]
pub unsafe extern "C" fn ibv_get_cq_event(
    channel: *mut IbvCompChannel,
    cq: *mut *mut IbvCq,
    cq_context: *mut *mut c_void,
) -> c_int {
    if let Err(e) = enter("ibv_get_cq_event") {
        set_errno(e);
        return -1;
    }
    let mut b = [0u8; 8];
    // SAFETY: reads into a live 8-byte buffer from the channel's own fd.
    let n = unsafe { libc::read((*channel).fd, b.as_mut_ptr().cast(), 8) };
    if n != 8 {
        if n >= 0 {
            set_errno(libc::EIO);
        }
        return -1;
    }
    let p = u64::from_ne_bytes(b) as usize as *mut Cq;
    // SAFETY: the event names a CQ of this channel; it is alive, since destroying a CQ with
    // events in flight would leave them unacknowledged (the caller acks before destroying).
    unsafe {
        (*p).state.event_taken();
        *cq = p.cast();
        *cq_context = (*p).raw.cq_context;
    }
    0
}

/// `void ibv_ack_cq_events(struct ibv_cq *, unsigned int nevents)`.
///
/// # Safety
/// `cq` is live.
#[no_mangle]
pub unsafe extern "C" fn ibv_ack_cq_events(cq: *mut IbvCq, nevents: c_uint) {
    let _ = enter("ibv_ack_cq_events");
    let c = cq.cast::<Cq>();
    // SAFETY: a live CQ; the field is only written here.
    unsafe {
        (*c).raw.comp_events_completed = (*c).raw.comp_events_completed.wrapping_add(nevents);
        (*c).state.ack(nevents);
    }
}

/// `struct ibv_qp *ibv_create_qp(struct ibv_pd *, struct ibv_qp_init_attr *)`: RC only, with
/// `1..=4096` send WRs, at most 4 send SGEs, no inline data, no SRQ; the granted capacities
/// are written back into `init_attr->cap`.
///
/// # Safety
/// `pd` is live, `init_attr` readable and writable, its CQs live.
#[no_mangle]
pub unsafe extern "C" fn ibv_create_qp(pd: *mut IbvPd, init_attr: *mut IbvQpInitAttr) -> *mut IbvQp {
    if let Err(e) = enter("ibv_create_qp") {
        return null_with(e);
    }
    // SAFETY: the caller's attributes.
    let a = unsafe { &mut *init_attr };
    let cap = a.cap;
    if a.qp_type != IBV_QPT_RC
        || a.send_cq.is_null()
        || a.recv_cq.is_null()
        || !a.srq.is_null()
        || cap.max_send_wr == 0
        || cap.max_send_wr > device::MAX_QP_WR as u32
        || cap.max_recv_wr > device::MAX_QP_WR as u32
        || cap.max_send_sge > device::MAX_SGE as u32
        || cap.max_recv_sge > device::MAX_SGE as u32
        || cap.max_inline_data > 0
    {
        return null_with(libc::EINVAL);
    }
    let p = pd.cast::<Pd>();
    // SAFETY: a live PD, its context, and the live send and receive CQs.
    let (r, ctx, scq, rcq) = unsafe {
        (
            &*p,
            &*(*p).ctx,
            &*a.send_cq.cast::<Cq>(),
            &*a.recv_cq.cast::<Cq>(),
        )
    };
    let granted = IbvQpCap {
        max_send_sge: cap.max_send_sge.max(1),
        ..cap
    };
    a.cap = granted;
    let shared = Arc::new(QpShared::new(
        Arc::clone(&ctx.nic),
        r.raw.handle,
        Arc::clone(&scq.state),
        granted,
        a.sq_sig_all != 0,
    ));
    scq.state.attach(1);
    rcq.state.attach(1);
    r.users.fetch_add(1, Ordering::Relaxed);
    ctx.nic.add_qp(Arc::clone(&shared));
    let qpn = shared.qpn;
    leak(Qp {
        raw: IbvQp {
            context: r.raw.context,
            qp_context: a.qp_context,
            pd,
            send_cq: a.send_cq,
            recv_cq: a.recv_cq,
            srq: std::ptr::null_mut(),
            handle: NEXT_HANDLE.fetch_add(1, Ordering::Relaxed),
            qp_num: qpn,
            state: IBV_QPS_RESET,
            qp_type: IBV_QPT_RC,
            mutex: zeroed_mutex(),
            cond: libc::PTHREAD_COND_INITIALIZER,
            events_completed: 0,
        },
        shared,
        pd: p,
    })
    .cast()
}

/// `int ibv_modify_qp(struct ibv_qp *, struct ibv_qp_attr *, int attr_mask)` (see
/// [`crate::qp`] for the state machine).
///
/// # Safety
/// `qp` is live, `attr` readable.
#[no_mangle]
pub unsafe extern "C" fn ibv_modify_qp(qp: *mut IbvQp, attr: *mut IbvQpAttr, attr_mask: c_int) -> c_int {
    if let Err(e) = enter("ibv_modify_qp") {
        return e;
    }
    let q = qp.cast::<Qp>();
    // SAFETY: a live QP and the caller's attributes.
    let (r, a) = unsafe { (&mut *q, &*attr) };
    let rc = r.shared.modify(a, attr_mask, device::ACTIVE_MTU);
    if rc == 0 {
        r.raw.state = a.qp_state;
    }
    rc
}

/// `int ibv_query_qp(struct ibv_qp *, struct ibv_qp_attr *, int attr_mask,
/// struct ibv_qp_init_attr *)`: fills every attribute it knows whatever the mask.
///
/// # Safety
/// `qp` is live, `attr` and `init_attr` writable.
#[no_mangle]
pub unsafe extern "C" fn ibv_query_qp(
    qp: *mut IbvQp,
    attr: *mut IbvQpAttr,
    _attr_mask: c_int,
    init_attr: *mut IbvQpInitAttr,
) -> c_int {
    if let Err(e) = enter("ibv_query_qp") {
        return e;
    }
    // SAFETY: a live QP and the caller's structs.
    let (r, a, ia) = unsafe { (&*qp.cast::<Qp>(), &mut *attr, &mut *init_attr) };
    *a = IbvQpAttr::default();
    r.shared.query(a);
    ia.qp_context = r.raw.qp_context;
    ia.send_cq = r.raw.send_cq;
    ia.recv_cq = r.raw.recv_cq;
    ia.srq = std::ptr::null_mut();
    ia.cap = r.shared.cap;
    ia.qp_type = IBV_QPT_RC;
    ia.sq_sig_all = c_int::from(r.shared.sig_all);
    0
}

/// `int ibv_destroy_qp(struct ibv_qp *)`: its work stops; completions already queued stay.
///
/// # Safety
/// `qp` is live.
#[no_mangle]
pub unsafe extern "C" fn ibv_destroy_qp(qp: *mut IbvQp) -> c_int {
    if let Err(e) = enter("ibv_destroy_qp") {
        return e;
    }
    let q = qp.cast::<Qp>();
    // SAFETY: a live QP, its PD and CQs (they outlive it: destroying them is refused).
    let r = unsafe { &*q };
    r.shared.shut();
    r.shared.nic.remove_qp(r.shared.qpn);
    // SAFETY: as above.
    unsafe {
        (*r.raw.send_cq.cast::<Cq>()).state.attach(-1);
        (*r.raw.recv_cq.cast::<Cq>()).state.attach(-1);
        (*r.pd).users.fetch_sub(1, Ordering::Relaxed);
        free(q);
    }
    0
}

/// `ops.poll_cq`.
///
/// # Safety
/// `cq` is live, `wc` has room for `num_entries` entries.
unsafe extern "C" fn poll_cq(cq: *mut IbvCq, num_entries: c_int, wc: *mut IbvWc) -> c_int {
    if let Err(e) = enter("ibv_poll_cq") {
        return -e;
    }
    if num_entries < 0 || (num_entries > 0 && wc.is_null()) {
        return -libc::EINVAL;
    }
    // SAFETY: the caller's array of num_entries entries; a live CQ.
    let out = unsafe { std::slice::from_raw_parts_mut(wc, num_entries as usize) };
    // SAFETY: a live CQ.
    unsafe { &*cq.cast::<Cq>() }.state.poll(out)
}

/// `ops.req_notify_cq`.
///
/// # Safety
/// `cq` is live.
unsafe extern "C" fn req_notify_cq(cq: *mut IbvCq, _solicited_only: c_int) -> c_int {
    if let Err(e) = enter("ibv_req_notify_cq") {
        return e;
    }
    // SAFETY: a live CQ.
    unsafe { &*cq.cast::<Cq>() }.state.arm();
    0
}

/// `ops.post_send`: RDMA_WRITE and RDMA_READ on an RC QP in RTS (or ERR, where they flush).
///
/// # Safety
/// `qp` is live; `wr` is a valid list; `bad_wr` writable.
unsafe extern "C" fn post_send(qp: *mut IbvQp, wr: *mut IbvSendWr, bad_wr: *mut *mut IbvSendWr) -> c_int {
    // SAFETY: a live QP.
    let r = unsafe { &*qp.cast::<Qp>() };
    let mut cur = wr;
    while !cur.is_null() {
        // SAFETY: an element of the caller's list.
        let w = unsafe { &*cur };
        let rc = match enter("ibv_post_send") {
            Err(e) => e,
            Ok(()) => {
                if (w.opcode != IBV_WR_RDMA_WRITE && w.opcode != IBV_WR_RDMA_READ)
                    || w.num_sge < 0
                    || w.num_sge as u32 > r.shared.cap.max_send_sge
                    || (w.num_sge > 0 && w.sg_list.is_null())
                    || w.send_flags & IBV_SEND_INLINE != 0
                {
                    libc::EINVAL
                } else {
                    // SAFETY: the WR's scatter/gather list of num_sge entries.
                    let sges = unsafe { std::slice::from_raw_parts(w.sg_list, w.num_sge as usize) }.to_vec();
                    r.shared.post(Work {
                        wr_id: w.wr_id,
                        opcode: w.opcode,
                        signaled: w.send_flags & IBV_SEND_SIGNALED != 0,
                        sges,
                        remote_addr: w.remote_addr,
                        rkey: w.rkey,
                        generation: 0,
                    })
                }
            }
        };
        if rc != 0 {
            if !bad_wr.is_null() {
                // SAFETY: the caller's out pointer.
                unsafe { *bad_wr = cur };
            }
            return rc;
        }
        cur = w.next;
    }
    0
}

/// `ops.post_recv` and `ops.post_srq_recv`: the fake has no receive side.
///
/// # Safety
/// `bad_wr` writable.
unsafe extern "C" fn post_recv(_qp: *mut c_void, wr: *mut c_void, bad_wr: *mut *mut c_void) -> c_int {
    if !bad_wr.is_null() {
        // SAFETY: the caller's out pointer.
        unsafe { *bad_wr = wr };
    }
    libc::EOPNOTSUPP
}
