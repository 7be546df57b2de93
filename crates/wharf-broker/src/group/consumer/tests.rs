#![allow(clippy::many_single_char_names)]

use super::*;

fn topics(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
    list.iter().map(|(t, n)| ((*t).to_string(), *n)).collect()
}

fn join(member: &str, subscribe: &[&str]) -> ConsumerHeartbeatRequest {
    ConsumerHeartbeatRequest {
        group_id: "g".into(),
        member_id: member.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(subscribe.iter().map(|s| (*s).to_string()).collect()),
        owned: Some(Vec::new()),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        ..ConsumerHeartbeatRequest::default()
    }
}

/// A heartbeat reporting `owned` (what the member consumes now).
fn beat(member: &str, epoch: i32, owned: &Assignment) -> ConsumerHeartbeatRequest {
    ConsumerHeartbeatRequest {
        group_id: "g".into(),
        member_id: member.into(),
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        owned: Some(
            owned
                .iter()
                .map(|(t, ps)| (t.clone(), ps.iter().copied().collect()))
                .collect(),
        ),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        ..ConsumerHeartbeatRequest::default()
    }
}

/// A client as librdkafka behaves: it applies every assignment it receives and reports
/// what it owns on the next heartbeat.
struct Client {
    id: String,
    epoch: i32,
    owned: Assignment,
}

impl Client {
    fn apply(&mut self, resp: &ConsumerHeartbeatResponse) {
        assert!(resp.error.is_none(), "{:?}", resp.error);
        self.epoch = resp.member_epoch;
        if let Some(a) = &resp.assignment {
            self.owned = a
                .iter()
                .map(|(t, ps)| (t.clone(), ps.iter().copied().collect()))
                .collect();
        }
    }

    fn beat(
        &mut self,
        g: &mut ConsumerGroup,
        topics: &BTreeMap<String, i32>,
        now: i64,
    ) -> ConsumerHeartbeatResponse {
        let resp = g
            .heartbeat(
                &beat(&self.id, self.epoch, &self.owned),
                topics,
                now,
                &config(),
            )
            .unwrap();
        self.apply(&resp);
        resp
    }
}

fn config() -> ConsumerGroupConfig {
    ConsumerGroupConfig::default()
}

fn joined(g: &mut ConsumerGroup, id: &str, subs: &[&str], t: &BTreeMap<String, i32>) -> Client {
    let mut c = Client {
        id: id.into(),
        epoch: 0,
        owned: Assignment::new(),
    };
    let resp = g.heartbeat(&join(id, subs), t, 0, &config()).unwrap();
    c.apply(&resp);
    c
}

/// No partition is owned by two clients at once, and none is held by two members.
fn check_exclusive(g: &ConsumerGroup, clients: &[Client]) {
    let mut seen = BTreeSet::new();
    for c in clients {
        for (t, ps) in &c.owned {
            for p in ps {
                assert!(seen.insert((t.clone(), *p)), "{t}[{p}] owned twice");
            }
        }
    }
    let mut held = BTreeSet::new();
    for m in g.members.values() {
        for (t, ps) in union(&m.assigned, &m.revoking) {
            for p in ps {
                assert!(held.insert((t.clone(), p)), "{t}[{p}] held by two members");
            }
        }
    }
}

#[test]
fn a_joining_member_gets_partitions_only_after_the_owner_revokes_them() {
    let t = topics(&[("t", 6)]);
    let mut g = ConsumerGroup::new("g", 0);
    let mut a = joined(&mut g, "a", &["t"], &t);
    assert_eq!(count(&a.owned), 6);
    assert_eq!(g.state(), "Stable");
    let mut b = joined(&mut g, "b", &["t"], &t);
    // b's target is 3 partitions, but a still owns them all: b gets none yet.
    assert_eq!(count(&b.owned), 0);
    check_exclusive(&g, &[]);
    // a is told to keep 3 and drop 3; its epoch stays until it reports them gone.
    let epoch_before = a.epoch;
    let r = a.beat(&mut g, &t, 1);
    assert_eq!(count(&a.owned), 3);
    assert_eq!(r.member_epoch, epoch_before);
    // b still gets nothing: a has not confirmed the revocation.
    b.beat(&mut g, &t, 2);
    assert_eq!(count(&b.owned), 0);
    // a confirms (reports 3 owned) and moves to the new epoch.
    let r = a.beat(&mut g, &t, 3);
    assert!(r.member_epoch > epoch_before);
    b.beat(&mut g, &t, 4);
    assert_eq!(count(&b.owned), 3);
    assert_eq!(count(&union(&a.owned, &b.owned)), 6);
    check_exclusive(&g, &[a, b]);
    assert_eq!(g.state(), "Stable");
}

#[test]
fn many_members_converge_to_a_balanced_exclusive_assignment() {
    let t = topics(&[("t", 10), ("u", 3)]);
    let mut g = ConsumerGroup::new("g", 0);
    let mut clients: Vec<Client> = Vec::new();
    for i in 0..4 {
        clients.push(joined(&mut g, &format!("m{i}"), &["t", "u"], &t));
        check_exclusive(&g, &clients);
    }
    for round in 0..6 {
        for c in &mut clients {
            c.beat(&mut g, &t, 10 + round);
        }
        check_exclusive(&g, &clients);
    }
    let counts: Vec<usize> = clients.iter().map(|c| count(&c.owned)).collect();
    assert_eq!(counts.iter().sum::<usize>(), 13, "{counts:?}");
    assert!(
        counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
        "{counts:?}"
    );
    assert_eq!(g.state(), "Stable");
    // One leaves: the others take its partitions.
    let gone = clients.remove(1);
    let r = g
        .heartbeat(&beat(&gone.id, -1, &gone.owned), &t, 100, &config())
        .unwrap();
    assert_eq!(r.member_epoch, -1);
    for round in 0..4 {
        for c in &mut clients {
            c.beat(&mut g, &t, 200 + round);
        }
        check_exclusive(&g, &clients);
    }
    let counts: Vec<usize> = clients.iter().map(|c| count(&c.owned)).collect();
    assert_eq!(counts.iter().sum::<usize>(), 13, "{counts:?}");
    assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
}

#[test]
fn an_expired_member_is_removed_and_its_partitions_move() {
    let t = topics(&[("t", 4)]);
    let mut g = ConsumerGroup::new("g", 0);
    let mut a = joined(&mut g, "a", &["t"], &t);
    let mut b = joined(&mut g, "b", &["t"], &t);
    for now in 1..4 {
        a.beat(&mut g, &t, now);
        b.beat(&mut g, &t, now);
    }
    assert_eq!(count(&a.owned), 2);
    // b stops heartbeating; a keeps going past b's session timeout.
    let later = 3 + i64::from(config().session_timeout_ms);
    assert!(g.tick(later - 1, &t).is_empty());
    a.beat(&mut g, &t, later - 1);
    assert_eq!(g.tick(later + 1, &t), vec!["b".to_string()]);
    a.beat(&mut g, &t, later + 2);
    assert_eq!(count(&a.owned), 4);
    // b comes back with its old epoch: fenced, it must rejoin.
    let err = g
        .heartbeat(&beat("b", b.epoch, &b.owned), &t, later + 3, &config())
        .unwrap_err();
    assert!(matches!(err, GroupError::UnknownMemberId { .. }), "{err:?}");
}

#[test]
fn a_member_that_never_revokes_is_removed_at_its_rebalance_timeout() {
    let t = topics(&[("t", 2)]);
    let mut g = ConsumerGroup::new("g", 0);
    let a = joined(&mut g, "a", &["t"], &t);
    assert_eq!(count(&a.owned), 2);
    let mut b = joined(&mut g, "b", &["t"], &t);
    // a heartbeats once (told to revoke) and then only heartbeats without giving them up.
    let owned_all = a.owned.clone();
    let req = beat("a", a.epoch, &owned_all);
    g.heartbeat(&req, &t, 1, &config()).unwrap();
    assert!(g.tick(1 + 29_999, &t).is_empty());
    g.heartbeat(&req, &t, 2, &config()).unwrap();
    assert_eq!(g.tick(1 + 30_000, &t), vec!["a".to_string()]);
    b.beat(&mut g, &t, 30_002);
    assert_eq!(count(&b.owned), 2);
}

#[test]
fn epochs_are_checked_on_heartbeat_and_commit() {
    let t = topics(&[("t", 1)]);
    let mut g = ConsumerGroup::new("g", 0);
    let a = joined(&mut g, "a", &["t"], &t);
    assert!(a.epoch > 0);
    let err = g
        .heartbeat(&beat("a", a.epoch + 5, &a.owned), &t, 1, &config())
        .unwrap_err();
    assert!(
        matches!(err, GroupError::FencedMemberEpoch { .. }),
        "{err:?}"
    );
    assert!(g.validate_commit(a.epoch, "a").is_ok());
    assert!(matches!(
        g.validate_commit(a.epoch - 1, "a"),
        Err(GroupError::StaleMemberEpoch { .. })
    ));
    assert!(matches!(
        g.validate_commit(a.epoch, "nobody"),
        Err(GroupError::UnknownMemberId { .. })
    ));
    // A commit from outside the group only while it has no members.
    assert!(g.validate_commit(-1, "").is_err());
    let err = g
        .heartbeat(&join("", &["t"]), &t, 1, &config())
        .unwrap_err();
    assert!(matches!(err, GroupError::InvalidRequest { .. }), "{err:?}");
    let mut bad = join("x", &["t"]);
    bad.server_assignor = Some("sticky-ish".into());
    assert!(matches!(
        g.heartbeat(&bad, &t, 1, &config()),
        Err(GroupError::UnsupportedAssignor { .. })
    ));
    g.heartbeat(&beat("a", -1, &a.owned), &t, 2, &config())
        .unwrap();
    assert!(g.validate_commit(-1, "").is_ok());
    assert_eq!(g.state(), "Empty");
}

#[test]
fn range_assignor_splits_each_topic_in_contiguous_ranges() {
    let members = vec![
        ("a".to_string(), BTreeSet::from(["t".to_string()])),
        (
            "b".to_string(),
            BTreeSet::from(["t".to_string(), "u".to_string()]),
        ),
    ];
    let out = assign_range(&members, &topics(&[("t", 5), ("u", 2)]));
    assert_eq!(out["a"]["t"], BTreeSet::from([0, 1, 2]));
    assert_eq!(out["b"]["t"], BTreeSet::from([3, 4]));
    assert_eq!(out["b"]["u"], BTreeSet::from([0, 1]));
    assert!(!out["a"].contains_key("u"));
}

#[test]
fn uniform_assignor_is_sticky_and_respects_subscriptions() {
    let members = vec![
        ("a".to_string(), BTreeSet::from(["t".to_string()])),
        ("b".to_string(), BTreeSet::from(["t".to_string()])),
    ];
    let t = topics(&[("t", 4), ("v", 3)]);
    let first = assign_uniform(&members, &t, &BTreeMap::new());
    assert_eq!(
        count(&first["a"]) + count(&first["b"]),
        4,
        "v has no subscriber"
    );
    let mut three = members.clone();
    three.push(("c".to_string(), BTreeSet::from(["t".to_string()])));
    let second = assign_uniform(&three, &t, &first);
    // Only what c needs moved: a and b each keep partitions they had.
    for id in ["a", "b"] {
        assert!(count(&intersect(&second[id], &first[id])) >= 1);
        assert_eq!(
            minus(&second[id], &first[id]).len(),
            0,
            "{id} gained partitions"
        );
    }
    assert_eq!(count(&second["c"]), 1);
}

#[test]
fn a_regex_subscription_follows_new_topics_and_a_topic_that_grows() {
    let mut g = ConsumerGroup::new("g", 0);
    let mut t = topics(&[("orders-eu", 2), ("payments", 2), ("__internal", 1)]);
    let mut req = join("a", &[]);
    req.subscribed_topic_names = None;
    req.subscribed_topic_regex = Some("orders-.*".into());
    let mut a = Client {
        id: "a".into(),
        epoch: 0,
        owned: Assignment::new(),
    };
    a.apply(&g.heartbeat(&req, &t, 0, &config()).unwrap());
    assert_eq!(a.owned.keys().collect::<Vec<_>>(), vec!["orders-eu"]);
    t.insert("orders-us".into(), 1);
    t.insert("orders-eu".into(), 3);
    a.beat(&mut g, &t, 1);
    assert_eq!(count(&a.owned), 4, "{:?}", a.owned);
    let mut bad = join("b", &[]);
    bad.subscribed_topic_regex = Some("orders-(".into());
    assert!(matches!(
        g.heartbeat(&bad, &t, 2, &config()),
        Err(GroupError::InvalidRegularExpression { .. })
    ));
}

#[test]
fn state_survives_a_record_round_trip() {
    let t = topics(&[("t", 6)]);
    let mut g = ConsumerGroup::new("g", 0);
    let a = joined(&mut g, "a", &["t"], &t);
    let _b = joined(&mut g, "b", &["t"], &t);
    let record = g.to_record();
    let back = ConsumerGroup::from_record("g", record.clone(), 50, &config());
    assert_eq!(back.to_record(), record);
    assert_eq!(back.members["a"].epoch, a.epoch);
    assert!(back.validate_commit(a.epoch, "a").is_ok());
}

/// Random joins, leaves, heartbeats and expiries: the exclusivity invariant holds after
/// every step, and once everyone heartbeats a few times the group is stable and covers
/// every partition.
#[test]
fn random_membership_changes_never_give_a_partition_to_two_members() {
    let t = topics(&[("t", 7), ("u", 5)]);
    let mut seed: u64 = 0x5eed_1234;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for run in 0..20 {
        let mut g = ConsumerGroup::new("g", 0);
        let mut clients: Vec<Client> = Vec::new();
        let mut now = 0;
        let mut ids = 0;
        for _ in 0..200 {
            now += 1;
            match next(10) {
                0 if clients.len() < 6 => {
                    ids += 1;
                    clients.push(joined(&mut g, &format!("r{run}-m{ids}"), &["t", "u"], &t));
                }
                1 if clients.len() > 1 => {
                    let c = clients.remove(usize::try_from(next(clients.len() as u64)).unwrap());
                    g.heartbeat(&beat(&c.id, -1, &c.owned), &t, now, &config())
                        .unwrap();
                }
                _ if !clients.is_empty() => {
                    let i = usize::try_from(next(clients.len() as u64)).unwrap();
                    clients[i].beat(&mut g, &t, now);
                }
                _ => {}
            }
            check_exclusive(&g, &clients);
        }
        if clients.is_empty() {
            continue;
        }
        for _ in 0..4 {
            for c in &mut clients {
                now += 1;
                c.beat(&mut g, &t, now);
            }
            check_exclusive(&g, &clients);
        }
        let total: usize = clients.iter().map(|c| count(&c.owned)).sum();
        assert_eq!(total, 12, "run {run}");
        assert_eq!(g.state(), "Stable", "run {run}");
    }
}
