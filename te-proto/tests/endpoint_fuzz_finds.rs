//! What the endpoint fuzz target found: the notification room of a segment
//! comes back when a batch whose notification was due is freed before its
//! end was polled; a batch submitted to again before its end was polled is
//! not reported ended while its new tasks are pending.

use core::time::Duration;

use te_proto::batch::{BatchSlot, Task};
use te_proto::batch::{Op, TaskId};
use te_proto::endpoint::{BatchEntry, Borrowed, EndpointConfig, Parts, Request, SegmentEntry, TaskEntry};
use te_proto::link::Event;
use te_proto::{Endpoint, Entry, Instant, Location, Perm, Region};

fn endpoint(parts: Parts<Borrowed<'_>>) -> Endpoint<Borrowed<'_>> {
    let cfg = EndpointConfig {
        transfer_timeout: Duration::from_secs(1),
        max_notifications: 1,
        ..EndpointConfig::default()
    };
    Endpoint::new(cfg, parts).unwrap()
}

#[test]
fn a_batch_submitted_to_again_before_its_end_was_polled_is_not_reported_pending() {
    let (mut regions, mut batches, mut tasks) = ([Entry::EMPTY; 2], [BatchSlot::EMPTY; 2], [Task::EMPTY; 4]);
    let mut task_entries = [TaskEntry::EMPTY; 4];
    let mut batch_entries = [BatchEntry::EMPTY, BatchEntry::EMPTY];
    let mut segments = [SegmentEntry::EMPTY];
    let mut ep = endpoint(Parts::<Borrowed> {
        regions: &mut regions,
        batches: &mut batches,
        tasks: &mut tasks,
        task_entries: &mut task_entries,
        batch_entries: &mut batch_entries,
        segments: &mut segments,
    });
    ep.register_batch(&[Region::new(0x1000, 4096, Location::Cpu, Perm::LOCAL_ONLY)])
        .unwrap();
    let peer = ep.open_segment("peer:1").unwrap();
    let batch = ep.alloc_batch(2).unwrap();
    let read = Request {
        op: Op::Read,
        local: 0x1000,
        segment: peer,
        remote: 0,
        len: 64,
    };
    ep.submit(Instant::ZERO, batch, &[read], None).unwrap();
    let done = Event::TaskDone {
        task: TaskId { batch, index: 0 },
        result: Ok(()),
    };
    assert_eq!(ep.handle_link_event(Some(peer), done), None);
    // Ended, not polled, and submitted to again.
    ep.submit(Instant::ZERO, batch, &[read], None).unwrap();
    while let Some(e) = ep.poll_event() {
        if let te_proto::endpoint::Event::BatchEnded { state, .. } = e {
            panic!("batch reported ended {state:?} while a task is pending");
        }
    }
    let done = Event::TaskDone {
        task: TaskId { batch, index: 1 },
        result: Ok(()),
    };
    assert_eq!(ep.handle_link_event(Some(peer), done), None);
    let mut ends = 0;
    while let Some(e) = ep.poll_event() {
        if let te_proto::endpoint::Event::BatchEnded { state, .. } = e {
            assert_eq!(state, te_proto::TaskState::Completed);
            ends += 1;
        }
    }
    assert_eq!(ends, 1);
}

#[test]
fn freeing_a_batch_whose_notification_was_due_gives_its_room_back() {
    let cfg = EndpointConfig {
        transfer_timeout: Duration::from_secs(1),
        max_notifications: 1,
        ..EndpointConfig::default()
    };
    let (mut regions, mut batches, mut tasks) = ([Entry::EMPTY; 2], [BatchSlot::EMPTY; 2], [Task::EMPTY; 4]);
    let mut task_entries = [TaskEntry::EMPTY; 4];
    let mut batch_entries = [BatchEntry::EMPTY, BatchEntry::EMPTY];
    let mut segments = [SegmentEntry::EMPTY];
    let parts = Parts::<Borrowed> {
        regions: &mut regions,
        batches: &mut batches,
        tasks: &mut tasks,
        task_entries: &mut task_entries,
        batch_entries: &mut batch_entries,
        segments: &mut segments,
    };
    let mut ep = Endpoint::new(cfg, parts).unwrap();
    ep.register_batch(&[Region::new(0x1000, 4096, Location::Cpu, Perm::LOCAL_ONLY)])
        .unwrap();
    let peer = ep.open_segment("peer:1").unwrap();
    let batch = ep.alloc_batch(1).unwrap();
    let read = Request {
        op: Op::Read,
        local: 0x1000,
        segment: peer,
        remote: 0,
        len: 64,
    };
    ep.submit_with_notify(Instant::ZERO, batch, &[read], None)
        .unwrap();
    // The one notification this segment may hold waits for the batch.
    assert!(ep.reserve_note(peer).is_err());
    let task = TaskId { batch, index: 0 };
    let done = Event::TaskDone { task, result: Ok(()) };
    assert_eq!(ep.handle_link_event(Some(peer), done), None);
    // Freed before its end was polled: no event, and the notification
    // that will never be sent no longer holds the segment's room.
    ep.free_batch(batch).unwrap();
    while let Some(e) = ep.poll_event() {
        assert!(
            !matches!(e, te_proto::endpoint::Event::BatchEnded { .. }),
            "an event for a freed batch: {e:?}"
        );
    }
    ep.reserve_note(peer)
        .expect("the freed batch's notification still holds the room");
}

#[test]
fn a_batch_with_a_notification_takes_no_submission_after_its_end_was_polled() {
    let (mut regions, mut batches, mut tasks) = ([Entry::EMPTY; 2], [BatchSlot::EMPTY; 2], [Task::EMPTY; 4]);
    let mut task_entries = [TaskEntry::EMPTY; 4];
    let mut batch_entries = [BatchEntry::EMPTY, BatchEntry::EMPTY];
    let mut segments = [SegmentEntry::EMPTY];
    let mut ep = endpoint(Parts::<Borrowed> {
        regions: &mut regions,
        batches: &mut batches,
        tasks: &mut tasks,
        task_entries: &mut task_entries,
        batch_entries: &mut batch_entries,
        segments: &mut segments,
    });
    ep.register_batch(&[Region::new(0x1000, 4096, Location::Cpu, Perm::LOCAL_ONLY)])
        .unwrap();
    let peer = ep.open_segment("peer:1").unwrap();
    let batch = ep.alloc_batch(2).unwrap();
    let read = Request {
        op: Op::Read,
        local: 0x1000,
        segment: peer,
        remote: 0,
        len: 64,
    };
    ep.submit_with_notify(Instant::ZERO, batch, &[read], None)
        .unwrap();
    ep.cancel_task(TaskId { batch, index: 0 }).unwrap();
    while ep.poll_event().is_some() {}
    let again = ep.submit(Instant::ZERO, batch, &[read], None);
    assert_eq!(
        again.map_err(|e| e.code()),
        Err(te_proto::ErrorCode::Invalid),
        "the notification's submission must be the batch's last"
    );
}
