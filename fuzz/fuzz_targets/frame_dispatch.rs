//! Any bytes as a request frame, through header parsing, version checks and dispatch to a
//! real broker on a temporary data directory. Must never panic or hang.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use wharf_broker::{Broker, BrokerConfig, StorageConfig};

struct Harness {
    runtime: tokio::runtime::Runtime,
    broker: Arc<Broker>,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut storage = StorageConfig::new(dir.path());
        storage.shards = 1;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        // No auto-creation: random Metadata requests would otherwise create a topic (and an
        // fsynced metadata write) on most inputs, and the run would measure that instead.
        let config = BrokerConfig { auto_create_topics: false, ..BrokerConfig::default() };
        let broker = runtime.block_on(async { Broker::open(config, storage) }).expect("broker");
        Harness { runtime, broker, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let frame = bytes::BytesMut::from(data);
    let _ = h.runtime.block_on(async {
        // Requests that park (Fetch long-polls, JoinGroup) are cut off: the fuzzer looks for panics.
        tokio::time::timeout(std::time::Duration::from_millis(50), wharf_kafka::handle_frame(&h.broker, frame)).await
    });
});
