use super::*;

fn delayed(id: u64, due_ms: i64) -> Entry {
    Entry {
        id,
        due_ms,
        topic: "t".into(),
        partition: 0,
        timestamp: 1,
        key: Some(id.to_be_bytes().to_vec()),
        value: None,
        headers: Vec::new(),
        origin: None,
        half: None,
    }
}

fn half(id: u64, txn_id: &str, due_ms: i64) -> Entry {
    Entry {
        half: Some(Half {
            txn_id: txn_id.into(),
            group: "g".into(),
            checks: 0,
        }),
        ..delayed(id, due_ms)
    }
}

fn ids(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.id).collect()
}

#[test]
fn entries_come_due_in_due_order_not_arrival_order() {
    let mut s = Schedule::default();
    for (id, due) in [(0, 300), (1, 100), (2, 200), (3, 100)] {
        s.apply(id, Some(delayed(id, due)));
    }
    assert_eq!(s.next_due(), Some(100));
    assert!(s.take_due(99, 10).is_empty());
    // Due at 100: taken once millisecond 100 is over, never during it.
    assert!(s.take_due(100, 10).is_empty());
    assert_eq!(ids(&s.take_due(101, 10)), vec![1, 3]);
    assert_eq!(ids(&s.take_due(250, 10)), vec![2]);
    assert_eq!(s.next_due(), Some(300));
    // Taken entries stay known until their outcome is applied.
    assert_eq!(s.len(), 4);
    s.apply(1, None);
    s.apply(3, None);
    assert_eq!(s.waiting("t"), (2, Some(200)));
    // A failed delivery goes back.
    s.retry(2, 400);
    assert_eq!(ids(&s.take_due(350, 10)), vec![0]);
    assert_eq!(ids(&s.take_due(401, 1)), vec![2]);
}

#[test]
fn take_due_respects_its_limit() {
    let mut s = Schedule::default();
    for id in 0..5 {
        s.apply(id, Some(delayed(id, 10)));
    }
    assert_eq!(s.take_due(11, 2).len(), 2);
    assert_eq!(s.take_due(11, 10).len(), 3);
}

#[test]
fn replay_is_idempotent_and_ids_are_never_reused() {
    let log = vec![
        (0, Some(delayed(0, 50))),
        (1, Some(delayed(1, 60))),
        (0, None),
        (2, Some(half(2, "x", 70))),
        (1, None),
    ];
    let mut once = Schedule::default();
    for (id, e) in log.clone() {
        once.apply(id, e);
    }
    let mut twice = Schedule::default();
    for (id, e) in log.iter().chain(log.iter()).cloned() {
        twice.apply(id, e);
    }
    for s in [&mut once, &mut twice] {
        assert_eq!(s.len(), 1);
        assert_eq!(s.next_due(), Some(70));
        assert!(s.half("t", "x").is_some());
        // Id 1 was delivered (tombstone) but must not be handed out again: a stale record
        // of it would otherwise shadow the new one at the next replay.
        assert_eq!(s.allocate_id(), 3);
    }
}

#[test]
fn commit_delivers_once_and_rollback_discards() {
    let mut s = Schedule::default();
    s.apply(0, Some(half(0, "a", 1_000)));
    s.apply(1, Some(half(1, "b", 1_000)));
    let (id, change) = s.resolve("t", "a", true, 500).unwrap();
    let committed = change.unwrap();
    assert_eq!(
        (id, committed.half.clone(), committed.due_ms),
        (0, None, 500)
    );
    assert_eq!(ids(&s.take_due(501, 10)), vec![0]);
    // A second commit finds nothing to do.
    assert_eq!(s.resolve("t", "a", true, 600), None);
    assert_eq!(s.resolve("t", "b", false, 600), Some((1, None)));
    assert!(s.get(1).is_none());
    assert_eq!(s.resolve("t", "b", true, 700), None);
    // Another topic's transaction id is another transaction.
    s.apply(2, Some(half(2, "c", 1_000)));
    assert_eq!(s.resolve("other", "c", true, 700), None);
}

#[test]
fn check_back_schedule_then_abandonment() {
    let e = half(7, "x", 6_000);
    let mut now = 6_000;
    let mut current = e;
    for expected in 1..=3 {
        let Some(HalfStep::Check(next)) = half_step(&current, now, 30_000, 3, "abandoned") else {
            panic!("check {expected} expected");
        };
        assert_eq!(next.half.as_ref().unwrap().checks, expected);
        assert_eq!(next.due_ms, now + 30_000);
        now = next.due_ms;
        current = next;
    }
    let Some(HalfStep::Abandon(gone)) = half_step(&current, now, 30_000, 3, "abandoned") else {
        panic!("abandonment expected after 3 checks");
    };
    assert_eq!((gone.topic.as_str(), gone.partition), ("abandoned", 0));
    assert_eq!((gone.half, gone.due_ms), (None, now));
    assert_eq!(gone.key, current.key);
    assert!(gone
        .headers
        .iter()
        .any(|(n, v)| n == b"wharf-txn-topic" && v.as_deref() == Some(&b"t"[..])));
    assert_eq!(half_step(&delayed(1, 0), now, 1, 1, "a"), None);
}
