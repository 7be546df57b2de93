use super::*;

const PID: i64 = 7;

fn batch(epoch: i16, first_seq: i32, records: i32) -> BatchIdentity {
    BatchIdentity::new(PID, epoch, first_seq, records - 1)
}

/// Appends and completes `b` at `base`, as the driver does for a write that succeeded.
fn write(state: &mut PartitionProducers, b: &BatchIdentity, base: i64, now_ms: i64) {
    assert_eq!(state.check(b), Ok(Check::Append), "{b:?}");
    let ticket = state.begin(b, now_ms);
    let last = base + i64::from(b.last_seq.wrapping_sub(b.first_seq));
    state.complete(b.producer_id, ticket, base, last);
}

#[test]
fn a_retried_batch_is_a_duplicate_with_its_original_offsets() {
    let mut s = PartitionProducers::default();
    write(&mut s, &batch(0, 0, 10), 100, 0);
    write(&mut s, &batch(0, 10, 5), 110, 0);
    assert_eq!(
        s.check(&batch(0, 0, 10)),
        Ok(Check::Duplicate(Placement::Written {
            base_offset: 100,
            last_offset: 109
        }))
    );
    assert_eq!(
        s.check(&batch(0, 10, 5)),
        Ok(Check::Duplicate(Placement::Written {
            base_offset: 110,
            last_offset: 114
        }))
    );
}

#[test]
fn a_retry_of_a_pending_batch_names_the_original() {
    let mut s = PartitionProducers::default();
    let b = batch(0, 0, 3);
    let ticket = s.begin(&b, 0);
    assert_eq!(
        s.check(&b),
        Ok(Check::Duplicate(Placement::Pending(ticket)))
    );
    assert!(s.has_pending());
    // The next batch may follow a pending one (pipelining).
    assert_eq!(s.check(&batch(0, 3, 1)), Ok(Check::Append));
    s.complete(PID, ticket, 40, 42);
    assert!(!s.has_pending());
}

#[test]
fn an_aborted_write_is_appended_again_on_retry() {
    let mut s = PartitionProducers::default();
    write(&mut s, &batch(0, 0, 1), 0, 0);
    let b = batch(0, 1, 1);
    let ticket = s.begin(&b, 0);
    s.abort(PID, ticket);
    assert_eq!(s.check(&b), Ok(Check::Append));
}

#[test]
fn a_sequence_gap_is_out_of_order() {
    let mut s = PartitionProducers::default();
    write(&mut s, &batch(0, 0, 5), 0, 0);
    assert_eq!(
        s.check(&batch(0, 6, 1)),
        Err(ProducerError::OutOfOrder {
            producer_id: PID,
            first_seq: 6,
            expected: 5
        })
    );
    // A batch overlapping a remembered one without matching it is out of order too.
    assert!(matches!(
        s.check(&batch(0, 2, 3)),
        Err(ProducerError::OutOfOrder { .. })
    ));
}

#[test]
fn only_the_last_five_batches_are_remembered() {
    let mut s = PartitionProducers::default();
    for i in 0..6 {
        write(&mut s, &batch(0, i, 1), i64::from(i), 0);
    }
    assert!(matches!(
        s.check(&batch(0, 0, 1)),
        Err(ProducerError::OutOfOrder { .. })
    ));
    assert!(matches!(s.check(&batch(0, 1, 1)), Ok(Check::Duplicate(_))));
}

#[test]
fn an_older_epoch_is_fenced_and_a_newer_one_starts_at_zero() {
    let mut s = PartitionProducers::default();
    write(&mut s, &batch(3, 0, 2), 0, 0);
    assert_eq!(
        s.check(&batch(2, 2, 1)),
        Err(ProducerError::InvalidEpoch {
            producer_id: PID,
            epoch: 2,
            current: 3
        })
    );
    assert!(matches!(
        s.check(&batch(4, 5, 1)),
        Err(ProducerError::OutOfOrder { expected: 0, .. })
    ));
    write(&mut s, &batch(4, 0, 1), 2, 0);
    // The new epoch replaced the old one: its batches are no longer duplicates.
    assert!(matches!(
        s.check(&batch(3, 0, 2)),
        Err(ProducerError::InvalidEpoch { current: 4, .. })
    ));
    assert_eq!(s.check(&batch(4, 1, 1)), Ok(Check::Append));
}

#[test]
fn an_unknown_producer_may_start_at_any_sequence() {
    let s = PartitionProducers::default();
    assert_eq!(s.check(&batch(0, 1234, 1)), Ok(Check::Append));
}

#[test]
fn sequences_wrap_at_i32_max() {
    assert_eq!(increment_sequence(i32::MAX, 1), 0);
    assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
    let mut s = PartitionProducers::default();
    let near_end = batch(0, i32::MAX - 2, 3);
    assert_eq!(near_end.last_seq, i32::MAX);
    write(&mut s, &near_end, 0, 0);
    let across = batch(0, 0, 4);
    write(&mut s, &across, 3, 0);
    let straddling = batch(0, 4, 2);
    write(&mut s, &straddling, 7, 0);
    assert!(matches!(s.check(&across), Ok(Check::Duplicate(_))));
    let wraps_inside = BatchIdentity::new(PID, 0, i32::MAX - 1, 3);
    assert_eq!(wraps_inside.last_seq, 1);
}

#[test]
fn idle_producers_expire_but_not_with_a_pending_batch() {
    let mut s = PartitionProducers::default();
    write(&mut s, &batch(0, 0, 1), 0, 1_000);
    let busy = BatchIdentity::new(8, 0, 0, 0);
    s.begin(&busy, 1_000);
    assert_eq!(s.expire(5_000, 10_000), 0);
    assert_eq!(s.expire(11_000, 10_000), 1);
    assert_eq!(s.len(), 1);
    // Forgotten: any sequence is accepted again, as for a new producer.
    assert_eq!(s.check(&batch(0, 77, 1)), Ok(Check::Append));
}

#[test]
fn a_snapshot_restores_written_batches_only() {
    let mut s = PartitionProducers::default();
    write(&mut s, &batch(1, 0, 2), 10, 5);
    s.begin(&batch(1, 2, 1), 6);
    let snap = s.snapshot();
    assert_eq!(
        snap,
        vec![ProducerSnapshot {
            producer_id: PID,
            epoch: 1,
            last_append_ms: 6,
            batches: vec![(0, 1, 10, 11)],
        }]
    );
    let restored = PartitionProducers::restore(&snap);
    assert!(matches!(
        restored.check(&batch(1, 0, 2)),
        Ok(Check::Duplicate(Placement::Written {
            base_offset: 10,
            ..
        }))
    ));
    assert_eq!(restored.check(&batch(1, 2, 1)), Ok(Check::Append));
}

#[test]
fn replay_rebuilds_without_checks() {
    let mut s = PartitionProducers::default();
    s.replay(&batch(0, 0, 1), 0, 0, 1);
    s.replay(&batch(0, 1, 1), 1, 1, 2);
    assert!(matches!(s.check(&batch(0, 1, 1)), Ok(Check::Duplicate(_))));
    assert_eq!(s.check(&batch(0, 2, 1)), Ok(Check::Append));
}
