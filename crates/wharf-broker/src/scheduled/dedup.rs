//! Deduplication by `wharf-msg-id` on topics with `wharf.dedup.window.ms` > 0: per topic
//! (by topic id, so a re-created topic starts empty), the message ids stored within the
//! window, with the offset where they landed. The map is pure ([`DedupWindow`]); at start
//! it is rebuilt from every partition's retained tail within the window and from the
//! records waiting in `__wharf_scheduled`.
//! Invariant: `order` holds every id of `ids` once, oldest stored first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use wharf_record::{BatchHeader, RecordIter};
use wharf_storage::Log;

use super::headers;
use crate::producer::now_ms;
use crate::{Broker, BrokerError};

/// The message ids of one topic stored within the window.
#[derive(Debug, Default)]
pub struct DedupWindow {
    /// id → (offset, -1 until known; stored at, broker ms).
    ids: HashMap<Vec<u8>, (i64, i64)>,
    order: VecDeque<(i64, Vec<u8>)>,
}

impl DedupWindow {
    /// Forgets ids stored before `now_ms - window_ms`.
    pub fn prune(&mut self, now_ms: i64, window_ms: i64) {
        let horizon = now_ms.saturating_sub(window_ms);
        while let Some((stored, id)) = self.order.front() {
            if *stored >= horizon {
                break;
            }
            if self.ids.get(id).is_some_and(|(_, s)| s == stored) {
                self.ids.remove(id);
            }
            self.order.pop_front();
        }
    }

    /// Where `id` was stored within the window (`Some(-1)` while its offset is unknown);
    /// `None` if it was not.
    pub fn seen(&mut self, id: &[u8], now_ms: i64, window_ms: i64) -> Option<i64> {
        self.prune(now_ms, window_ms);
        self.ids.get(id).map(|(offset, _)| *offset)
    }

    /// Records `id` as stored at `stored_ms` (offset unknown: -1).
    pub fn insert(&mut self, id: &[u8], offset: i64, stored_ms: i64) {
        self.ids.insert(id.to_vec(), (offset, stored_ms));
        self.order.push_back((stored_ms, id.to_vec()));
    }

    /// The offset of a stored id became known.
    pub fn set_offset(&mut self, id: &[u8], offset: i64) {
        if let Some(entry) = self.ids.get_mut(id) {
            entry.0 = offset;
        }
    }

    /// A store of `id` failed: forget it, so a retry is stored.
    pub fn remove(&mut self, id: &[u8]) {
        self.ids.remove(id);
    }

    /// Restores the invariant after inserts out of time order (a rebuild from several
    /// partitions).
    pub fn sort(&mut self) {
        self.order.make_contiguous().sort();
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Every partition's dedup map.
pub(crate) struct Dedup {
    topics: Mutex<HashMap<uuid::Uuid, DedupWindow>>,
    pub(crate) duplicates: metrics::Counter,
}

impl Default for Dedup {
    fn default() -> Self {
        Self {
            topics: Mutex::new(HashMap::new()),
            duplicates: metrics::counter!("wharf_dedup_duplicates_total"),
        }
    }
}

impl Dedup {
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<uuid::Uuid, DedupWindow>> {
        self.topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Broker {
    /// Rebuilds the dedup maps of every topic with a window from its retained tail.
    pub(crate) fn open_dedup(&self) -> Result<(), BrokerError> {
        let now = now_ms();
        let mut ids = 0usize;
        for topic in self.topics() {
            let window = topic.config.dedup_window_ms;
            if window <= 0 {
                continue;
            }
            let mut map = DedupWindow::default();
            for p in &topic.partitions {
                scan(&p.log, now.saturating_sub(window), &mut map)?;
            }
            map.sort();
            ids += map.len();
            self.scheduler().dedup.lock().insert(topic.id, map);
        }
        for e in self.scheduler().waiting_entries() {
            let Some(topic) = self.topic(&e.topic) else {
                continue;
            };
            if let (Some(id), Some(map)) = (
                headers::find(&to_refs(&e.headers), headers::MSG_ID).flatten(),
                self.scheduler().dedup.lock().get_mut(&topic.id),
            ) {
                map.insert(id, -1, e.timestamp.min(now));
                ids += 1;
            }
        }
        tracing::info!(ids, "dedup windows rebuilt");
        Ok(())
    }
}

fn to_refs(headers: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<(&[u8], Option<&[u8]>)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_deref()))
        .collect()
}

/// Ids stored by a produce that is being appended: their offsets are recorded when it
/// completes, or they are forgotten when it fails.
pub(crate) struct DedupPending {
    pub(crate) dedup: std::sync::Arc<Dedup>,
    pub(crate) topic_id: uuid::Uuid,
    /// Each new id and its record's position in the produce.
    pub(crate) ids: Vec<(Vec<u8>, i64)>,
    /// Diverted into `__wharf_scheduled`: offsets stay unknown.
    pub(crate) diverted: bool,
}

impl DedupPending {
    pub(crate) fn finish(self, base_offset: Option<i64>) {
        let mut topics = self.dedup.lock();
        let Some(map) = topics.get_mut(&self.topic_id) else {
            return;
        };
        for (id, index) in &self.ids {
            match base_offset {
                Some(_) if self.diverted => {}
                Some(base) => map.set_offset(id, base + index),
                None => map.remove(id),
            }
        }
    }
}

/// Adds the message ids of `log`'s records with a timestamp at or after `from_ms`.
fn scan(log: &Log, from_ms: i64, map: &mut DedupWindow) -> Result<(), BrokerError> {
    let Some(start) = log.offset_for_timestamp(from_ms)? else {
        return Ok(());
    };
    let end = log.high_watermark();
    let mut offset = start.offset;
    while offset < end {
        let read = log.read(offset, 1 << 20)?;
        let mut at = 0usize;
        let mut progressed = false;
        while let Some(batch) = read
            .records
            .get(at..)
            .and_then(|b| BatchHeader::parse(b).ok())
        {
            at += batch.len().max(1);
            if batch.last_offset() < offset {
                continue;
            }
            progressed = true;
            offset = batch.last_offset() + 1;
            let Ok(records) = RecordIter::new(&batch) else {
                continue;
            };
            for record in records.flatten() {
                if record.timestamp < from_ms {
                    continue;
                }
                if let Some(id) = headers::msg_id(&record.headers) {
                    map.insert(id, record.offset, record.timestamp);
                }
            }
        }
        if !progressed {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_seen_within_the_window_only() {
        let mut d = DedupWindow::default();
        assert_eq!(d.seen(b"a", 1_000, 500), None);
        d.insert(b"a", -1, 1_000);
        assert_eq!(d.seen(b"a", 1_200, 500), Some(-1));
        d.set_offset(b"a", 7);
        assert_eq!(d.seen(b"a", 1_500, 500), Some(7));
        assert_eq!(d.seen(b"a", 1_501, 500), None, "outside the window");
        assert!(d.is_empty());
    }

    #[test]
    fn a_restored_id_is_not_forgotten_by_its_older_entry() {
        let mut d = DedupWindow::default();
        d.insert(b"a", 1, 1_000);
        d.prune(1_600, 500);
        d.insert(b"a", 9, 1_600);
        assert_eq!(d.seen(b"a", 1_700, 500), Some(9));
        d.insert(b"c", 3, 1_650);
        d.insert(b"b", 2, 1_200);
        d.sort();
        assert_eq!(d.seen(b"b", 1_710, 500), None, "pruned once sorted");
        assert_eq!(d.seen(b"c", 1_710, 500), Some(3));
        d.remove(b"a");
        assert_eq!(d.seen(b"a", 1_700, 500), None);
    }
}
