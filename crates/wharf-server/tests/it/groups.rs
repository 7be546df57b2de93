//! Consumer groups with librdkafka against a real broker process: assignment across members,
//! commit-after-processing through a clean leave and a kill -9, cooperative-sticky
//! rebalances, a broker restart, lag in `wharf group describe`, static membership.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::FutureRecord;
use rdkafka::topic_partition_list::TopicPartitionListElem;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::{eventually, start_broker, wharf_bin};

/// Broker settings for group tests: a short first-rebalance delay.
const BROKER: &[(&str, &str)] = &[("group_initial_rebalance_delay_ms", "300")];

/// Records rebalance callbacks: ("assign" | "revoke", partitions).
type Recorded = Arc<Mutex<Vec<(&'static str, Vec<i32>)>>>;

#[derive(Clone, Default)]
struct Events(Recorded);

impl Events {
    fn all(&self) -> Vec<(&'static str, Vec<i32>)> {
        self.0.lock().unwrap().clone()
    }
}

impl ClientContext for Events {}
impl ConsumerContext for Events {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (kind, tpl) = match rebalance {
            Rebalance::Assign(tpl) => ("assign", *tpl),
            Rebalance::Revoke(tpl) => ("revoke", *tpl),
            Rebalance::Error(_) => return,
        };
        let partitions = tpl
            .elements()
            .iter()
            .map(TopicPartitionListElem::partition)
            .collect();
        self.0.lock().unwrap().push((kind, partitions));
    }
}

fn assigned<C: ConsumerContext>(c: &BaseConsumer<C>) -> BTreeSet<i32> {
    c.assignment()
        .map(|tpl| {
            tpl.elements()
                .iter()
                .map(TopicPartitionListElem::partition)
                .collect()
        })
        .unwrap_or_default()
}

/// Polls every consumer until `done` holds for their assignments (60 s at most).
fn poll_until<C: ConsumerContext>(
    consumers: &[&BaseConsumer<C>],
    what: &str,
    done: impl Fn(&[BTreeSet<i32>]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for c in consumers {
            let _ = c.poll(Duration::from_millis(20));
        }
        let sets: Vec<_> = consumers.iter().map(|c| assigned(c)).collect();
        if done(&sets) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}; have {sets:?}"
        );
    }
}

/// Every partition in 0..n owned by exactly one consumer, each owning `each` if given.
fn exact_cover(sets: &[BTreeSet<i32>], n: i32, each: Option<usize>) -> bool {
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    total == n as usize
        && union == (0..n).collect()
        && each.is_none_or(|k| sets.iter().all(|s| s.len() == k))
}

fn wharf_group(addr: &str, args: &[&str]) -> String {
    let out = Command::new(wharf_bin())
        .args(["group", "--bootstrap-server", addr])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "wharf group {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Partition rows of `wharf group describe`: partition → (committed, log end, lag, owner).
fn describe_rows(addr: &str, group: &str, topic: &str) -> BTreeMap<i32, Vec<String>> {
    wharf_group(addr, &["describe", group])
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|cells| cells.len() == 6 && cells[0] == topic)
        .map(|cells| (cells[1].parse().unwrap(), cells[2..].to_vec()))
        .collect()
}

async fn produce(addr: &str, topic: &str, partitions: i32, count: usize) {
    let p = wharf_testkit::producer(addr, &[("acks", "1"), ("linger.ms", "20")]).unwrap();
    let mut pending = Vec::new();
    for i in 0..count {
        let v = i.to_string();
        let f = p
            .send_result(
                FutureRecord::<str, str>::to(topic)
                    .partition((i % partitions as usize) as i32)
                    .payload(&v),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        pending.push(f);
        if pending.len() >= 20_000 {
            for f in pending.drain(..) {
                f.await.unwrap().map_err(|(e, _)| e).unwrap();
            }
        }
    }
    for f in pending {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_consumers_split_twelve_partitions() {
    let (_dir, broker) = start_broker(BROKER);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "split", 12, &[])
        .await
        .unwrap();
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        let consumers: Vec<_> = (0..3)
            .map(|_| {
                let c = wharf_testkit::group_consumer(&a, "split-group", &[], Events::default())
                    .unwrap();
                c.subscribe(&["split"]).unwrap();
                c
            })
            .collect();
        let refs: Vec<_> = consumers.iter().collect();
        poll_until(&refs, "3 members owning 4 partitions each", |sets| {
            exact_cover(sets, 12, Some(4))
        });
        // The broker's view agrees: 3 members, every partition owned.
        eventually("describe shows 3 members and 12 owned partitions", || {
            let text = wharf_group(&a, &["describe", "split-group"]);
            let owners: BTreeSet<String> = describe_rows(&a, "split-group", "split")
                .values()
                .map(|r| r[3].clone())
                .collect();
            // Members are listed with the host they connected from, as Kafka shows it.
            text.contains("Members: 3")
                && text.contains("/127.0.0.1")
                && describe_rows(&a, "split-group", "split").len() == 12
                && owners.len() == 3
                && !owners.contains("-")
        });
        assert!(wharf_group(&a, &["list"]).contains("split-group"));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn cooperative_sticky_rebalances_incrementally() {
    let (_dir, broker) = start_broker(BROKER);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "sticky", 12, &[])
        .await
        .unwrap();
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        let opts = [("partition.assignment.strategy", "cooperative-sticky")];
        let new = |events: &Events| {
            let c =
                wharf_testkit::group_consumer(&a, "sticky-group", &opts, events.clone()).unwrap();
            c.subscribe(&["sticky"]).unwrap();
            c
        };
        let (ex, ey, ez) = (Events::default(), Events::default(), Events::default());
        let x = new(&ex);
        poll_until(&[&x], "x owns all 12", |s| exact_cover(s, 12, None));
        let first = assigned(&x);
        let y = new(&ey);
        poll_until(&[&x, &y], "x and y own 6 each", |s| {
            exact_cover(s, 12, Some(6))
        });
        assert!(assigned(&x).is_subset(&first));
        let z = new(&ez);
        poll_until(&[&x, &y, &z], "4 each", |s| exact_cover(s, 12, Some(4)));
        let before_leave = (assigned(&x), assigned(&z));
        drop(y);
        poll_until(&[&x, &z], "x and z own 6 each", |s| {
            exact_cover(s, 12, Some(6))
        });
        assert!(
            before_leave.0.is_subset(&assigned(&x)),
            "sticky: x kept its partitions"
        );
        assert!(
            before_leave.1.is_subset(&assigned(&z)),
            "sticky: z kept its partitions"
        );
        // Incremental: x never gave up everything at once, and every revocation was partial.
        for (kind, partitions) in ex.all() {
            if kind == "revoke" {
                assert!(partitions.len() < 12, "x revoked all: {:?}", ex.all());
            }
        }
        assert!(
            ex.all().iter().any(|(k, _)| *k == "revoke"),
            "{:?}",
            ex.all()
        );
        assert!(
            ez.all().iter().filter(|(k, _)| *k == "assign").count() >= 2,
            "{:?}",
            ez.all()
        );
    })
    .await
    .unwrap();
}

/// What a member did: processed (partition, offset), or committed (partition, next offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Processed(i32, i64),
    Committed(i32, i64),
}

/// Consumes with commit-after-processing until `stop`: every record is reported
/// (processed) before the commit that covers it, and each commit is reported after it
/// succeeded. Throttled so that departures land mid-stream.
fn run_member<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    stop: &dyn Fn() -> bool,
    report: &mut dyn FnMut(Event),
) {
    let mut pending: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_commit = Instant::now();
    let mut since_sleep = 0;
    while !stop() {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            report(Event::Processed(m.partition(), m.offset()));
            pending.insert(m.partition(), m.offset() + 1);
            since_sleep += 1;
            if since_sleep >= 20 {
                since_sleep = 0;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if !pending.is_empty() && last_commit.elapsed() >= Duration::from_millis(150) {
            let owned = assigned(consumer);
            pending.retain(|p, _| owned.contains(p));
            let mut tpl = TopicPartitionList::new();
            for (p, next) in &pending {
                tpl.add_partition_offset("work", *p, Offset::Offset(*next))
                    .unwrap();
            }
            if consumer.commit(&tpl, CommitMode::Sync).is_ok() {
                for (p, next) in &pending {
                    report(Event::Committed(*p, *next));
                }
            }
            pending.clear();
            last_commit = Instant::now();
        }
    }
}

/// Not a test on its own: the body of the member that `members_leave_and_die_*` runs in a
/// child process (this test binary, re-run with `--ignored --exact`) so it can be killed
/// with SIGKILL. Ignored so that a plain run does not count it as a pass, and it fails when
/// run without the parent's `WHARF_GROUP_MEMBER_ADDR`.
#[test]
#[ignore = "child process of members_leave_and_die_without_losing_messages, which runs it"]
fn member_process() {
    let addr = std::env::var("WHARF_GROUP_MEMBER_ADDR").expect(
        "WHARF_GROUP_MEMBER_ADDR is set by members_leave_and_die_without_losing_messages, \
         the only caller of this child-process body",
    );
    let c = wharf_testkit::group_consumer(&addr, "work-group", &[], Events::default()).unwrap();
    c.subscribe(&["work"]).unwrap();
    let out = std::io::stdout();
    run_member(&c, &|| false, &mut |e| {
        let mut out = out.lock();
        let _ = match e {
            Event::Processed(p, o) => writeln!(out, "EVENT P {p} {o}"),
            Event::Committed(p, o) => writeln!(out, "EVENT C {p} {o}"),
        };
        let _ = out.flush();
    });
}

/// Records `produce` put in partition `p` of 12.
fn per_partition(total: usize, p: i32) -> i64 {
    (total / 12 + usize::from((p as usize) < total % 12)) as i64
}

/// Prints the processing runs and commits of one partition, in arrival order.
fn diagnose_partition(log: &[(&str, Event)], p: i32) {
    let mut last: Option<(&str, i64, i64)> = None;
    let flush = |last: &mut Option<(&str, i64, i64)>| {
        if let Some((w, first, prev)) = last.take() {
            eprintln!("  {w} processed {first}..={prev}");
        }
    };
    for (who, e) in log {
        match *e {
            Event::Committed(q, c) if q == p => {
                flush(&mut last);
                eprintln!("  {who} committed {c}");
            }
            Event::Processed(q, o) if q == p => match last {
                Some((w, first, prev)) if w == *who && o == prev + 1 => {
                    last = Some((w, first, o));
                }
                _ => {
                    flush(&mut last);
                    last = Some((who, o, o));
                }
            },
            _ => {}
        }
    }
    flush(&mut last);
}

/// Prints what happened to the partitions holding unconsumed records.
fn diagnose(log: &[(&str, Event)], seen: &BTreeSet<(i32, i64)>, total: usize) {
    for p in 0..12 {
        let missing: Vec<i64> = (0..per_partition(total, p))
            .filter(|o| !seen.contains(&(p, *o)))
            .take(5)
            .collect();
        if missing.is_empty() {
            continue;
        }
        eprintln!("partition {p}: missing {missing:?}");
        let mut last: Option<(&str, i64, i64)> = None;
        for (who, e) in log {
            match *e {
                Event::Committed(q, c) if q == p => eprintln!("  {who} committed {c}"),
                Event::Processed(q, o) if q == p => match last {
                    Some((w, first, prev)) if w == *who && o == prev + 1 => {
                        last = Some((w, first, o));
                    }
                    _ => {
                        if let Some((w, first, prev)) = last {
                            eprintln!("  {w} processed {first}..={prev}");
                        }
                        last = Some((who, o, o));
                    }
                },
                _ => {}
            }
        }
        if let Some((w, first, prev)) = last {
            eprintln!("  {w} processed {first}..={prev}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn members_leave_and_die_without_losing_messages() {
    const TOTAL: usize = 200_000;
    let (_dir, broker) = start_broker(BROKER);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "work", 12, &[])
        .await
        .unwrap();
    produce(&addr, "work", 12, TOTAL).await;
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        let (tx, rx) = mpsc::channel::<(&'static str, Event)>();
        let stop_a = Arc::new(AtomicBool::new(false));
        let stop_b = Arc::new(AtomicBool::new(false));
        let spawn = |name: &'static str, stop: Arc<AtomicBool>| {
            let tx = tx.clone();
            let a = a.clone();
            std::thread::spawn(move || {
                let c = wharf_testkit::group_consumer(&a, "work-group", &[], Events::default())
                    .unwrap();
                c.subscribe(&["work"]).unwrap();
                run_member(&c, &|| stop.load(Ordering::Acquire), &mut |e| {
                    let _ = tx.send((name, e));
                });
                // Dropping the consumer closes it: LeaveGroup.
            })
        };
        let member_a = spawn("a", stop_a.clone());
        let member_b = spawn("b", stop_b.clone());
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "groups::member_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("WHARF_GROUP_MEMBER_ADDR", &a)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let child_tx = tx.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest's "test ... " prefix may share a line with the first event.
                let Some(at) = line.find("EVENT ") else {
                    continue;
                };
                let fields: Vec<&str> = line[at..].split_whitespace().collect();
                if let ["EVENT", kind, p, o] = fields[..] {
                    let (p, o) = (p.parse().unwrap(), o.parse().unwrap());
                    let event = if kind == "P" {
                        Event::Processed(p, o)
                    } else {
                        Event::Committed(p, o)
                    };
                    let _ = child_tx.send(("c", event));
                }
            }
        });
        drop(tx);

        // Collect in arrival order; a leaves cleanly at 30%, c is killed at 60%.
        let mut log: Vec<(&'static str, Event)> = Vec::new();
        let mut seen: BTreeSet<(i32, i64)> = BTreeSet::new();
        let mut processed_by: HashMap<&str, usize> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(150);
        let (mut a_left, mut c_killed) = (false, false);
        while seen.len() < TOTAL {
            if Instant::now() >= deadline {
                diagnose(&log, &seen, TOTAL);
                panic!("only {} of {TOTAL} consumed", seen.len());
            }
            let Ok((who, e)) = rx.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            if let Event::Processed(p, o) = e {
                seen.insert((p, o));
                *processed_by.entry(who).or_default() += 1;
            }
            log.push((who, e));
            if !a_left && seen.len() >= TOTAL * 3 / 10 {
                a_left = true;
                stop_a.store(true, Ordering::Release);
            }
            if !c_killed && seen.len() >= TOTAL * 6 / 10 {
                c_killed = true;
                child.kill().unwrap();
                child.wait().unwrap();
            }
        }
        // Reap c (killed above, or now if the loop ended first).
        let _ = child.kill();
        let _ = child.wait();
        // b catches up; let it commit everything, then close.
        let hwm: BTreeMap<i32, i64> = (0..12).map(|p| (p, per_partition(TOTAL, p))).collect();
        let mut committed: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        let all_committed = |committed: &BTreeMap<(&str, i32), i64>| {
            hwm.iter()
                .all(|(p, h)| committed.iter().any(|((_, q), c)| q == p && c == h))
        };
        for (who, e) in &log {
            if let Event::Committed(p, c) = e {
                committed.insert((who, *p), *c);
            }
        }
        while !all_committed(&committed) {
            assert!(
                Instant::now() < deadline,
                "final commits missing: {committed:?}"
            );
            if let Ok((who, e)) = rx.recv_timeout(Duration::from_millis(200)) {
                if let Event::Committed(p, c) = e {
                    committed.insert((who, p), c);
                }
                log.push((who, e));
            }
        }
        stop_b.store(true, Ordering::Release);
        member_a.join().unwrap();
        member_b.join().unwrap();
        reader.join().unwrap();
        while let Ok(item) = rx.try_recv() {
            log.push(item);
        }
        assert!(
            processed_by.get("a").copied().unwrap_or(0) > 0,
            "{processed_by:?}"
        );
        assert!(
            processed_by.get("c").copied().unwrap_or(0) > 0,
            "the child member (groups::member_process) processed nothing; did it run? \
             {processed_by:?}"
        );

        // Nothing lost: every offset of every partition was processed.
        for p in 0..12 {
            for o in 0..per_partition(TOTAL, p) {
                assert!(seen.contains(&(p, o)), "lost {p}/{o}");
            }
        }
        // A member starts (or restarts) reading a partition exactly at an offset committed
        // for it, or at 0 before any commit: so a record is processed twice only when it lies
        // after the last commit that preceded the partition changing hands.
        let mut committed_values: HashMap<i32, BTreeSet<i64>> = HashMap::new();
        for (_, e) in &log {
            if let Event::Committed(p, c) = *e {
                committed_values.entry(p).or_default().insert(c);
            }
        }
        // The killed member c may have had a commit acknowledged by the broker whose report
        // died with it: c commits the offset after one it processed, so any such offset is a
        // commit the test could not see.
        let c_reached: BTreeSet<(i32, i64)> = log
            .iter()
            .filter_map(|(who, e)| match *e {
                Event::Processed(p, o) if *who == "c" => Some((p, o + 1)),
                _ => None,
            })
            .collect();
        let mut last: HashMap<(&str, i32), i64> = HashMap::new();
        let mut times: HashMap<(i32, i64), usize> = HashMap::new();
        let mut restarts = 0;
        for (who, e) in &log {
            if let Event::Processed(p, o) = *e {
                *times.entry((p, o)).or_default() += 1;
                if last.get(&(*who, p)).is_none_or(|prev| o != prev + 1) {
                    restarts += 1;
                    let known = o == 0
                        || committed_values.get(&p).is_some_and(|c| c.contains(&o))
                        || c_reached.contains(&(p, o));
                    if !known {
                        diagnose_partition(&log, p);
                    }
                    assert!(known, "{who} started {p} at {o}, which nobody committed");
                }
                last.insert((*who, p), o);
            }
        }
        let duplicates: usize = times.values().map(|n| n - 1).sum();
        assert!(restarts >= 12, "every partition was started at least once");
        eprintln!(
            "members_leave_and_die: processed {processed_by:?}, {duplicates} duplicates, \
             {restarts} (re)starts, all at committed offsets"
        );
        // The group's committed offsets are the log end: lag 0 everywhere.
        eventually("group describe shows lag 0 on every partition", || {
            let rows = describe_rows(&a, "work-group", "work");
            rows.len() == 12 && rows.values().all(|r| r[2] == "0")
        });
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn group_resumes_from_committed_offsets_after_restart() {
    const TOTAL: usize = 20_000;
    let (_dir, mut broker) = start_broker(BROKER);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "resume", 4, &[])
        .await
        .unwrap();
    produce(&addr, "resume", 4, TOTAL).await;
    let a = addr.clone();
    let (seen_before, committed) = tokio::task::spawn_blocking(move || {
        let c = wharf_testkit::group_consumer(&a, "resume-group", &[], Events::default()).unwrap();
        c.subscribe(&["resume"]).unwrap();
        let mut seen = BTreeSet::new();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        while seen.len() < TOTAL / 2 || next.len() < 4 {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                seen.insert((m.partition(), m.offset()));
                next.insert(m.partition(), m.offset() + 1);
            }
        }
        // Commit what was processed, with metadata that must come back verbatim.
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &next {
            tpl.add_partition_offset("resume", *p, Offset::Offset(*o))
                .unwrap();
            tpl.find_partition("resume", *p)
                .unwrap()
                .set_metadata(format!("checkpoint-{p}"));
        }
        c.commit(&tpl, CommitMode::Sync).unwrap();
        (seen, next)
    })
    .await
    .unwrap();

    // Restart in the middle, hard: committed offsets were fdatasync-ed before the ack.
    broker.kill9().unwrap();
    broker.restart().unwrap();

    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        // Lag shown by describe = produced - committed.
        let rows = describe_rows(&a, "resume-group", "resume");
        for p in 0..4 {
            let produced = (TOTAL / 4) as i64;
            let c = committed.get(&p).copied().unwrap_or(0);
            let row = &rows[&p];
            assert_eq!(row[0], c.to_string(), "committed of {p}: {rows:?}");
            assert_eq!(row[1], produced.to_string(), "log end of {p}: {rows:?}");
            assert_eq!(row[2], (produced - c).to_string(), "lag of {p}: {rows:?}");
        }
        let c = wharf_testkit::group_consumer(&a, "resume-group", &[], Events::default()).unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..4 {
            tpl.add_partition("resume", p);
        }
        let stored = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        for e in stored.elements() {
            assert_eq!(e.offset(), Offset::Offset(committed[&e.partition()]));
            assert_eq!(e.metadata(), format!("checkpoint-{}", e.partition()));
        }
        c.subscribe(&["resume"]).unwrap();
        let mut first_after: BTreeMap<i32, i64> = BTreeMap::new();
        let mut seen = seen_before;
        let mut duplicates = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.len() < TOTAL {
            assert!(Instant::now() < deadline, "only {} of {TOTAL}", seen.len());
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                first_after.entry(m.partition()).or_insert(m.offset());
                if !seen.insert((m.partition(), m.offset())) {
                    duplicates += 1;
                }
            }
        }
        for (p, o) in &first_after {
            assert_eq!(
                Some(o),
                committed.get(p),
                "partition {p} resumed at its commit"
            );
        }
        assert_eq!(duplicates, 0, "everything before the commits was committed");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn static_member_returns_without_rebalance() {
    let (_dir, broker) = start_broker(BROKER);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "static", 6, &[])
        .await
        .unwrap();
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        // A long session: the returning member is well within it.
        let member = |instance: &str, events: &Events| {
            let opts = [
                ("group.instance.id", instance),
                ("session.timeout.ms", "30000"),
            ];
            let c =
                wharf_testkit::group_consumer(&a, "static-group", &opts, events.clone()).unwrap();
            c.subscribe(&["static"]).unwrap();
            c
        };
        let (e1, e2) = (Events::default(), Events::default());
        let s1 = member("s1", &e1);
        let s2 = member("s2", &e2);
        poll_until(&[&s1, &s2], "3 partitions each", |s| {
            exact_cover(s, 6, Some(3))
        });
        let s1_partitions = assigned(&s1);
        let s2_events = e2.all().len();
        // A static member closes without LeaveGroup.
        drop(s1);
        let e1b = Events::default();
        let s1b = member("s1", &e1b);
        poll_until(&[&s1b, &s2], "s1 is back", |s| exact_cover(s, 6, Some(3)));
        assert_eq!(assigned(&s1b), s1_partitions, "same partitions back");
        // s2 keeps polling a while: no revoke or assign reaches it.
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            let _ = s2.poll(Duration::from_millis(50));
            let _ = s1b.poll(Duration::from_millis(50));
        }
        assert_eq!(
            e2.all().len(),
            s2_events,
            "s2 saw a rebalance: {:?}",
            e2.all()
        );
        let text = wharf_group(&a, &["describe", "static-group"]);
        assert!(
            text.contains("Members: 2") && text.contains("s1") && text.contains("s2"),
            "{text}"
        );
    })
    .await
    .unwrap();
}
