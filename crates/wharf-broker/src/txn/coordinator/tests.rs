use super::*;

const MAX: i32 = 900_000;

fn init(state: &mut TxnCoordinatorState, id: &str, now: i64, next_id: i64) -> (i64, i16) {
    match state.init_producer_id(id, 60_000, now, || next_id).unwrap() {
        InitOutcome::Ready {
            producer_id,
            producer_epoch,
            ..
        } => (producer_id, producer_epoch),
        other @ InitOutcome::AbortFirst { .. } => panic!("expected Ready, got {other:?}"),
    }
}

fn offset(offset: i64) -> TxnOffset {
    TxnOffset {
        offset,
        leader_epoch: -1,
        metadata: None,
    }
}

#[test]
fn an_abort_drops_the_offsets_of_the_transaction() {
    let mut state = TxnCoordinatorState::new(MAX);
    let (pid, epoch) = init(&mut state, "tx", 0, 5);
    state.add_offsets("tx", pid, epoch, "app", 1).unwrap();
    state
        .offset_commit(
            "tx",
            pid,
            epoch,
            "app",
            vec![("in".into(), 0, offset(3))],
            2,
        )
        .unwrap();
    let (_, completion) = state.end_txn("tx", pid, epoch, false, 3).unwrap().unwrap();
    assert!(completion.offsets.is_empty());
    assert!(state.complete(&completion, 4).unwrap().offsets.is_empty());
}

fn parts(list: &[(&str, i32)]) -> Vec<TxnPartition> {
    list.iter()
        .map(|(t, p)| TxnPartition::new(*t, *p))
        .collect()
}

#[test]
fn a_new_transactional_id_gets_a_fresh_producer_and_epoch_0_then_each_init_bumps_it() {
    let mut state = TxnCoordinatorState::new(MAX);
    assert_eq!(init(&mut state, "tx", 0, 100), (100, 0));
    assert_eq!(init(&mut state, "tx", 1, 999), (100, 1));
    assert_eq!(state.get("tx").unwrap().state, TxnState::Empty);
}

#[test]
fn a_timeout_above_the_maximum_is_refused() {
    let mut state = TxnCoordinatorState::new(1_000);
    assert!(matches!(
        state.init_producer_id("tx", 1_001, 0, || 1),
        Err(TxnError::InvalidTimeout { .. })
    ));
}

#[test]
fn commit_writes_a_marker_to_every_partition_then_completes() {
    let mut state = TxnCoordinatorState::new(MAX);
    let (pid, epoch) = init(&mut state, "tx", 0, 5);
    let added = state
        .add_partitions("tx", pid, epoch, &parts(&[("a", 0), ("b", 1)]), 10)
        .unwrap();
    assert_eq!(added.unwrap().state, TxnState::Ongoing);
    assert_eq!(
        state
            .add_partitions("tx", pid, epoch, &parts(&[("a", 0)]), 11)
            .unwrap(),
        None,
        "nothing new to persist"
    );
    state.add_offsets("tx", pid, epoch, "app", 12).unwrap();
    let held = state
        .offset_commit(
            "tx",
            pid,
            epoch,
            "app",
            vec![("in".into(), 0, offset(7))],
            13,
        )
        .unwrap();
    assert_eq!(held.offsets.len(), 1);
    let (meta, completion) = state.end_txn("tx", pid, epoch, true, 20).unwrap().unwrap();
    assert_eq!(meta.state, TxnState::PrepareCommit);
    assert!(completion.commit);
    assert_eq!(completion.markers.len(), 2);
    assert!(completion
        .markers
        .iter()
        .all(|m| m.commit && m.producer_id == pid));
    assert_eq!(completion.groups, vec!["app".to_string()]);
    assert_eq!(
        completion.offsets,
        vec![("app".to_string(), "in".to_string(), 0, offset(7))]
    );
    // While markers are written, the producer must wait.
    assert!(matches!(
        state.add_partitions("tx", pid, epoch, &parts(&[("a", 0)]), 21),
        Err(TxnError::ConcurrentTransactions { .. })
    ));
    let done = state.complete(&completion, 30).unwrap();
    assert_eq!(done.state, TxnState::CompleteCommit);
    assert!(done.partitions.is_empty() && done.groups.is_empty());
    // A retried EndTxn(commit) succeeds without doing anything.
    assert_eq!(state.end_txn("tx", pid, epoch, true, 31).unwrap(), None);
    // A commit after completion for an abort is invalid.
    assert!(matches!(
        state.end_txn("tx", pid, epoch, false, 32),
        Err(TxnError::InvalidTxnState { .. })
    ));
}

#[test]
fn a_second_init_fences_the_first_producer_and_aborts_its_open_transaction() {
    let mut state = TxnCoordinatorState::new(MAX);
    let (pid, epoch) = init(&mut state, "tx", 0, 5);
    state
        .add_partitions("tx", pid, epoch, &parts(&[("a", 0)]), 1)
        .unwrap();
    let InitOutcome::AbortFirst {
        persist,
        completion,
    } = state.init_producer_id("tx", 60_000, 2, || 99).unwrap()
    else {
        panic!("an open transaction is aborted first");
    };
    assert_eq!(persist.state, TxnState::PrepareAbort);
    assert_eq!(persist.producer_epoch, epoch + 1);
    assert!(!completion.commit);
    assert_eq!(completion.markers[0].producer_epoch, epoch + 1);
    // The zombie is fenced at once.
    assert!(matches!(
        state.end_txn("tx", pid, epoch, true, 3),
        Err(TxnError::ProducerFenced { .. })
    ));
    // The new producer retries until the abort completes.
    assert!(matches!(
        state.init_producer_id("tx", 60_000, 3, || 99),
        Err(TxnError::ConcurrentTransactions { .. })
    ));
    state.complete(&completion, 4).unwrap();
    assert_eq!(init(&mut state, "tx", 5, 99), (pid, epoch + 2));
    assert!(matches!(
        state.add_partitions("tx", pid, epoch + 1, &parts(&[("a", 0)]), 6),
        Err(TxnError::ProducerFenced { .. })
    ));
}

#[test]
fn a_transaction_open_past_its_timeout_is_fenced_and_aborted() {
    let mut state = TxnCoordinatorState::new(MAX);
    let (pid, epoch) = state
        .init_producer_id("tx", 1_000, 0, || 5)
        .map(|o| match o {
            InitOutcome::Ready {
                producer_id,
                producer_epoch,
                ..
            } => (producer_id, producer_epoch),
            InitOutcome::AbortFirst { .. } => unreachable!(),
        })
        .unwrap();
    state
        .add_partitions("tx", pid, epoch, &parts(&[("a", 0)]), 100)
        .unwrap();
    assert!(state.expire(1_099).is_empty());
    let expired = state.expire(1_100);
    assert_eq!(expired.len(), 1);
    let (meta, completion) = &expired[0];
    assert_eq!(meta.state, TxnState::PrepareAbort);
    assert!(!completion.commit);
    assert!(matches!(
        state.end_txn("tx", pid, epoch, true, 1_101),
        Err(TxnError::ProducerFenced { .. })
    ));
    assert_eq!(
        state.complete(completion, 1_102).unwrap().state,
        TxnState::CompleteAbort
    );
    assert!(state.expire(10_000).is_empty());
}

#[test]
fn unknown_producers_and_offset_commits_outside_a_transaction_are_refused() {
    let mut state = TxnCoordinatorState::new(MAX);
    assert!(matches!(
        state.add_partitions("nope", 1, 0, &parts(&[("a", 0)]), 0),
        Err(TxnError::InvalidProducerIdMapping { .. })
    ));
    let (pid, epoch) = init(&mut state, "tx", 0, 5);
    assert!(matches!(
        state.add_partitions("tx", pid + 1, epoch, &parts(&[("a", 0)]), 0),
        Err(TxnError::InvalidProducerIdMapping { .. })
    ));
    assert!(matches!(
        state.offset_commit("tx", pid, epoch, "app", Vec::new(), 0),
        Err(TxnError::InvalidTxnState { .. })
    ));
    assert!(matches!(
        state.end_txn("tx", pid, epoch, true, 0),
        Err(TxnError::InvalidTxnState { .. })
    ));
    assert_eq!(state.end_txn("tx", pid, epoch, false, 0).unwrap(), None);
}

#[test]
fn replay_restores_state_and_unfinished_transactions_are_completed_again() {
    let mut live = TxnCoordinatorState::new(MAX);
    let mut log: Vec<TxnMetadata> = Vec::new();
    let InitOutcome::Ready { persist, .. } = live.init_producer_id("tx", 60_000, 0, || 5).unwrap()
    else {
        unreachable!()
    };
    log.push(persist);
    log.push(
        live.add_partitions("tx", 5, 0, &parts(&[("a", 0)]), 1)
            .unwrap()
            .unwrap(),
    );
    let (prepared, completion) = live.end_txn("tx", 5, 0, false, 2).unwrap().unwrap();
    log.push(prepared);
    // The broker stops here, before the markers are written.
    let mut replayed = TxnCoordinatorState::new(MAX);
    for meta in log {
        replayed.replay(&meta.transactional_id.clone(), Some(meta));
    }
    assert_eq!(replayed.unfinished(), vec![completion.clone()]);
    assert_eq!(
        replayed.complete(&completion, 3).unwrap().state,
        TxnState::CompleteAbort
    );
    assert!(replayed.unfinished().is_empty());
    replayed.replay("tx", None);
    assert!(replayed.get("tx").is_none());
}

#[test]
fn idle_transactional_ids_expire_but_open_transactions_do_not() {
    let mut state = TxnCoordinatorState::new(MAX);
    init(&mut state, "idle", 0, 1);
    let (pid, epoch) = init(&mut state, "busy", 0, 2);
    state
        .add_partitions("busy", pid, epoch, &parts(&[("a", 0)]), 0)
        .unwrap();
    assert_eq!(state.expire_ids(1_000, 1_000), vec!["idle".to_string()]);
    assert!(state.get("busy").is_some());
}
