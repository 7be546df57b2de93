//! Micro-benchmarks of the storage hot paths: append through the shard writer (group commit,
//! no fdatasync) and index lookup + read of one batch. Throughput claims come from wharf-bench;
//! these track the cost of the code itself. `cargo bench -p wharf-storage`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wharf_record::BatchBuilder;
use wharf_storage::{Durability, LogConfig, Storage, StorageConfig};

/// One batch of `records` × 1 KiB values.
fn batch(records: usize) -> Bytes {
    let value = vec![b'v'; 1024];
    let mut b = BatchBuilder::new(1_700_000_000_000);
    for i in 0..records {
        b.push(
            Some(format!("k{i}").as_bytes()),
            Some(&value),
            &[],
            1_700_000_000_000,
        );
    }
    Bytes::from(b.build())
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = StorageConfig::new(dir.path());
    config.shards = 1;
    let storage = Storage::open(config).unwrap();
    let log = storage.create_log(1, LogConfig::default());
    let one = batch(16);
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Bytes(one.len() as u64));
    group.bench_function("16x1KiB batch, written", |b| {
        b.iter(|| {
            runtime
                .block_on(log.append(one.clone(), Durability::Written))
                .unwrap()
        });
    });
    // 32 appends submitted before any is awaited: one group commit covers them.
    group.throughput(Throughput::Bytes(32 * one.len() as u64));
    group.bench_function("32 pipelined 16x1KiB batches, written", |b| {
        b.iter_batched(
            || (0..32).map(|_| one.clone()).collect::<Vec<_>>(),
            |batches| {
                let pending: Vec<_> = batches
                    .into_iter()
                    .map(|x| log.submit(x, Durability::Written).unwrap())
                    .collect();
                runtime.block_on(async {
                    for p in pending {
                        p.wait().await.unwrap();
                    }
                });
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
    storage.shutdown();
}

fn lookup(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = StorageConfig::new(dir.path());
    config.shards = 1;
    let storage = Storage::open(config).unwrap();
    let log = storage.create_log(1, LogConfig::default());
    let one = batch(4);
    for _ in 0..10_000 {
        runtime
            .block_on(log.append(one.clone(), Durability::Written))
            .unwrap();
    }
    let high = log.high_watermark();
    let mut offset = 0;
    c.bench_function(
        "index lookup + read of one 4x1KiB batch among 10,000",
        |b| {
            b.iter(|| {
                offset = (offset + 7_919) % high;
                black_box(log.read(black_box(offset), 1).unwrap());
            });
        },
    );
    storage.shutdown();
}

criterion_group!(benches, append, lookup);
criterion_main!(benches);
