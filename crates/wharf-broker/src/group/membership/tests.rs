use bytes::Bytes;

use super::*;

const SESSION: i32 = 6_000;
const REBALANCE: i32 = 10_000;

fn config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 500,
        ..GroupConfig::default()
    }
}

fn join_req(member_id: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: instance.map(Into::into),
        protocol_type: "consumer".into(),
        protocols: vec![Protocol {
            name: "range".into(),
            metadata: Bytes::from_static(b"sub"),
        }],
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        client_id: "c".into(),
        client_host: String::new(),
        require_known_member_id: true,
    }
}

fn sync_req(member_id: &str, generation: i32, assignments: &[(&str, &str)]) -> SyncRequest {
    SyncRequest {
        group_id: "g".into(),
        generation_id: generation,
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignments: assignments
            .iter()
            .map(|(m, a)| ((*m).to_string(), Bytes::copy_from_slice(a.as_bytes())))
            .collect(),
    }
}

fn heartbeat(g: &mut Group, member: &str, generation: i32, now: i64) -> Result<(), GroupError> {
    g.heartbeat(
        &HeartbeatRequest {
            group_id: "g".into(),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
        },
        now,
    )
}

fn joined(outputs: &[Output]) -> Vec<(String, JoinResponse)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Join {
                member_id,
                response,
            } => Some((member_id.clone(), response.clone())),
            Output::Sync { .. } => None,
        })
        .collect()
}

/// Two members, "a" (leader) and "b", stable at generation 1 with assignments "A" and "B".
fn stable_pair() -> Group {
    let cfg = config();
    let mut g = Group::new("g", 0);
    let (reply, _) = g.join(&join_req("", None), 0, "a".into(), &cfg);
    assert!(matches!(
        reply,
        Reply::Now(JoinResponse {
            error: Some(GroupError::MemberIdRequired { .. }),
            ..
        })
    ));
    assert_eq!(
        g.join(&join_req("a", None), 1, "x".into(), &cfg).0,
        Reply::Parked {
            member_id: "a".into()
        }
    );
    let (_, _) = g.join(&join_req("", None), 2, "b".into(), &cfg);
    let (reply, out) = g.join(&join_req("b", None), 3, "x".into(), &cfg);
    assert_eq!(
        reply,
        Reply::Parked {
            member_id: "b".into()
        }
    );
    assert!(
        out.is_empty(),
        "the initial delay holds the first rebalance"
    );
    let out = g.tick(600, &cfg);
    let answers = joined(&out);
    assert_eq!(answers.len(), 2);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    let (_, leader) = answers.iter().find(|(m, _)| m == "a").unwrap();
    assert_eq!(
        (
            leader.generation_id,
            leader.leader.as_str(),
            leader.members.len()
        ),
        (1, "a", 2)
    );
    let (_, follower) = answers.iter().find(|(m, _)| m == "b").unwrap();
    assert!(follower.members.is_empty());
    assert_eq!(
        g.sync(&sync_req("b", 1, &[]), 700).0,
        Reply::Parked {
            member_id: "b".into()
        }
    );
    let (reply, out) = g.sync(&sync_req("a", 1, &[("a", "A"), ("b", "B")]), 800);
    assert_eq!(
        reply,
        Reply::Parked {
            member_id: "a".into()
        }
    );
    assert_eq!(out.len(), 2);
    assert!(out.contains(&Output::Sync {
        member_id: "b".into(),
        response: SyncResponse {
            error: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignment: Bytes::from_static(b"B"),
        }
    }));
    assert_eq!(g.state(), GroupState::Stable);
    assert!(g.take_metadata_change());
    g
}

#[test]
fn members_join_and_sync_into_a_stable_generation() {
    let g = stable_pair();
    assert_eq!(g.generation(), 1);
    let d = g.describe();
    assert_eq!(d.members.len(), 2);
}

#[test]
fn an_expired_session_rebalances_the_rest() {
    let cfg = config();
    let mut g = stable_pair();
    heartbeat(&mut g, "a", 1, 5_000).unwrap();
    assert_eq!(
        heartbeat(&mut g, "a", 0, 5_000),
        Err(GroupError::IllegalGeneration {
            group: "g".into(),
            generation: 0,
            current: 1
        })
    );
    // "b" last spoke at 700: gone at 6700; "a" at 5000 stays.
    assert!(g.tick(6_699, &cfg).is_empty());
    g.tick(6_700, &cfg);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert!(matches!(
        heartbeat(&mut g, "a", 1, 6_800),
        Err(GroupError::RebalanceInProgress { .. })
    ));
    assert!(matches!(
        heartbeat(&mut g, "b", 1, 6_800),
        Err(GroupError::UnknownMemberId { .. })
    ));
    let (_, out) = g.join(&join_req("a", None), 6_900, "x".into(), &cfg);
    let answers = joined(&out);
    assert_eq!(answers.len(), 1, "no initial delay once the group has run");
    assert_eq!(answers[0].1.generation_id, 2);
    assert_eq!(answers[0].1.members.len(), 1);
}

#[test]
fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_timeout() {
    let cfg = config();
    let mut g = stable_pair();
    // A new member starts a rebalance; "b" keeps heartbeating but never rejoins.
    let (_, _) = g.join(&join_req("", None), 1_000, "c".into(), &cfg);
    g.join(&join_req("c", None), 1_000, "x".into(), &cfg);
    g.join(&join_req("a", None), 1_100, "x".into(), &cfg);
    for t in (2_000..11_000).step_by(1_000) {
        assert!(matches!(
            heartbeat(&mut g, "b", 1, t),
            Err(GroupError::RebalanceInProgress { .. })
        ));
        assert!(g.tick(t, &cfg).is_empty());
    }
    let out = g.tick(11_000, &cfg);
    let mut members: Vec<String> = joined(&out).into_iter().map(|(m, _)| m).collect();
    members.sort();
    assert_eq!(members, ["a", "c"]);
    assert_eq!(g.generation(), 2);
}

#[test]
fn leaving_members_rebalance_and_the_last_one_empties_the_group() {
    let cfg = config();
    let mut g = stable_pair();
    let leave = |id: &str| LeaveMember {
        member_id: id.into(),
        group_instance_id: None,
    };
    let (results, _) = g.leave(&[leave("b"), leave("zz")], 1_000, &cfg);
    assert!(results[0].is_ok());
    assert!(matches!(
        results[1],
        Err(GroupError::UnknownMemberId { .. })
    ));
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    let (results, _) = g.leave(&[leave("a")], 1_100, &cfg);
    assert!(results[0].is_ok());
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(g.empty_since(), Some(1_100));
    assert_eq!(g.generation(), 2);
}

#[test]
fn a_static_member_returning_in_time_keeps_its_assignment_without_rebalance() {
    let cfg = config();
    let mut g = Group::new("g", 0);
    g.join(&join_req("", Some("s1")), 0, "s1-a".into(), &cfg);
    g.join(&join_req("", Some("s2")), 0, "s2-a".into(), &cfg);
    let out = g.tick(500, &cfg);
    let leader = joined(&out)[0].1.leader.clone();
    g.sync(
        &sync_req(&leader, 1, &[("s1-a", "P1"), ("s2-a", "P2")]),
        600,
    );
    assert_eq!(g.state(), GroupState::Stable);
    // s1 restarts: no LeaveGroup, a first join with its instance id.
    let (reply, out) = g.join(&join_req("", Some("s1")), 2_000, "s1-b".into(), &cfg);
    assert!(out.is_empty());
    let Reply::Now(resp) = reply else {
        panic!("parked: {reply:?}")
    };
    assert_eq!(
        (
            resp.error.clone(),
            resp.generation_id,
            resp.member_id.as_str()
        ),
        (None, 1, "s1-b")
    );
    assert!(
        resp.members.is_empty(),
        "the newcomer must not compute an assignment"
    );
    assert_eq!(g.state(), GroupState::Stable);
    let mut sync = sync_req("s1-b", 1, &[]);
    sync.group_instance_id = Some("s1".into());
    let (reply, _) = g.sync(&sync, 2_100);
    assert!(matches!(reply, Reply::Now(SyncResponse { ref assignment, .. }) if assignment == "P1"));
    // The old incarnation is fenced.
    let hb = HeartbeatRequest {
        group_id: "g".into(),
        generation_id: 1,
        member_id: "s1-a".into(),
        group_instance_id: Some("s1".into()),
    };
    assert!(matches!(
        g.heartbeat(&hb, 2_200),
        Err(GroupError::FencedInstanceId { .. })
    ));
    assert_eq!(g.generation(), 1);
}

#[test]
fn commits_are_checked_against_membership_and_generation() {
    let mut g = Group::new("g", 0);
    g.validate_commit(-1, "", None, 0).unwrap();
    let mut g2 = stable_pair();
    assert!(matches!(
        g2.validate_commit(-1, "", None, 900),
        Err(GroupError::UnknownMemberId { .. })
    ));
    assert!(matches!(
        g2.validate_commit(7, "a", None, 900),
        Err(GroupError::IllegalGeneration { .. })
    ));
    g2.validate_commit(1, "a", None, 900).unwrap();
    g.join(&join_req("", None), 0, "m".into(), &config());
    assert!(g.has_members() || !g.is_vacant());
}

#[test]
fn membership_round_trips_through_its_record() {
    let g = stable_pair();
    let value = g.to_record();
    assert_eq!(value.members.len(), 2);
    let mut back = Group::from_record("g", value, 10_000);
    assert_eq!(back.state(), GroupState::Stable);
    assert_eq!(back.generation(), 1);
    heartbeat(&mut back, "b", 1, 10_100).unwrap();
    let (reply, _) = back.sync(&sync_req("b", 1, &[]), 10_200);
    assert!(matches!(reply, Reply::Now(SyncResponse { ref assignment, .. }) if assignment == "B"));
}
