//! Store benchmark: `record_delivery` from many concurrent writers, with and without flushing.
//!
//! `cargo bench --bench store [-- --writers 32 --per-writer 1000 --body 4000]`
//!
//! Shows what group commit costs (durable against no-flush throughput, in one run) and how many
//! writers one flush answers on average.

mod common;
use common::arg;

use std::time::Instant;

use shipgate::delivery::{Delivery, Origin};
use shipgate::store::{Durability, Store, StoreOptions};

async fn run(durability: Durability, writers: usize, per_writer: usize, body: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        &StoreOptions {
            durability,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..per_writer {
                let delivery = Delivery {
                    origin: Origin::Shopify {
                        shop: "bench.myshopify.com".into(),
                    },
                    id: format!("{w}-{n}"),
                    topic: "orders/updated".into(),
                    received_at_ms: 1,
                    headers: vec![("x-shopify-topic".into(), "orders/updated".into()); 6],
                    body: vec![b'x'; body],
                    redacted: false,
                };
                store.record_delivery(&delivery).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = (writers * per_writer) as f64 / started.elapsed().as_secs_f64();
    let stats = store.flush_stats();
    println!(
        "{:<14} {:>8.0} records/s  ({} flushes, {:.1} writers per flush)",
        format!("{durability:?}"),
        rate,
        stats.rounds,
        stats.waiters as f64 / stats.rounds.max(1) as f64
    );
    store.close();
    rate
}

fn main() {
    let writers = arg("--writers", 32);
    let per_writer = arg("--per-writer", 1000);
    let body = arg("--body", 4000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "store benchmark: {writers} concurrent writers x {per_writer} records of {body} bytes"
        );
        let unsafe_rate = run(Durability::UnsafeNoFlush, writers, per_writer, body).await;
        let durable_rate = run(Durability::Flush, writers, per_writer, body).await;
        println!(
            "ratio durable / no-flush: {:.2}",
            durable_rate / unsafe_rate
        );
    });
}
