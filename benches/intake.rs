//! Intake benchmark: durable acknowledgements against verification only, on one machine, in one run.
//!
//! `cargo bench --bench intake [-- --seconds 5 --connections 32 --rate 1000 --burst-seconds 60]`
//!
//! 1. Closed loop, verify-only: the same daemon with `IntakeMode::VerifyOnly` (HMAC checked, nothing
//!    stored): the ceiling the durable path is measured against.
//! 2. Closed loop, durable: every delivery stored and flushed (group commit) before its 200.
//! 3. Open loop at a fixed rate (default 1,000/s) against the durable daemon: latency measured from
//!    each request's scheduled send time, so a stall cannot hide itself (no coordinated omission).
//! 4. A sustained burst at the same rate: every valid delivery must get a 2xx.
//!
//! The load generator runs in the same process and shares the machine's cores with the daemon, for
//! both modes alike; the ratio is what the target (SPEC section 9: durable >= 25% of verify-only)
//! speaks of.

mod common;
use common::arg;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shipgate::daemon::{Daemon, Options};
use shipgate::intake::IntakeMode;
use shipgate::sandbox::harness::{LoopbackConfig, ShopSpec};
use shipgate::sandbox::webhooks::ShopifyDelivery;

const SHOP: &str = "bench.myshopify.com";
const SECRET: &[u8] = b"bench-secret";

struct Args {
    seconds: u64,
    connections: usize,
    rate: u64,
    burst_seconds: u64,
}

fn args() -> Args {
    Args {
        seconds: arg("--seconds", 5),
        connections: arg("--connections", 32),
        rate: arg("--rate", 1000),
        burst_seconds: arg("--burst-seconds", 10),
    }
}

/// A realistic order body (Shopify's are several KiB: a dozen line items with their properties).
fn body(n: u64) -> Vec<u8> {
    let items: Vec<serde_json::Value> = (0..12)
        .map(|i| {
            serde_json::json!({
                "id": n * 100 + i, "sku": format!("SKU-{i:04}-BLUE-L"), "variant_id": 44_000 + i,
                "quantity": 1 + i % 3, "current_quantity": 1 + i % 3, "fulfillable_quantity": 1 + i % 3,
                "variant_title": "Blue / L", "title": "A product with a reasonably long title",
                "requires_shipping": true, "price": "19.99", "vendor": "Supplier Co",
                "properties": [{"name": "gift", "value": "no"}]
            })
        })
        .collect();
    serde_json::json!({
        "id": 820982911946154508u64 + n,
        "admin_graphql_api_id": format!("gid://shopify/Order/{}", 820982911946154508u64 + n),
        "name": format!("#{}", 1000 + n), "updated_at": "2026-11-25T10:00:00-05:00",
        "email": "buyer@example.com", "currency": "USD", "total_price": "199.00",
        "shipping_address": {"first_name": "Ada", "address1": "1 Main St", "city": "London", "zip": "N1"},
        "line_items": items,
    })
    .to_string()
    .into_bytes()
}

async fn start(mode: IntakeMode, dir: &std::path::Path) -> Daemon {
    let mut loopback = LoopbackConfig::new(vec![ShopSpec::webhooks_only(SHOP, &[SECRET])]);
    loopback.log_level = "error".into();
    let config = loopback.load(dir).unwrap();
    let options = Options {
        intake: mode,
        // Processing is not part of what is acknowledged; leave the cores to the intake.
        processor: false,
        ..Options::default()
    };
    Daemon::start(&config, options).await.unwrap()
}

struct Run {
    ok: u64,
    failed: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
    fn print(&self, name: &str) {
        println!(
            "{name:<28} {:>9.0} deliveries/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  non-2xx/errors {}",
            self.rate(),
            self.percentile(0.50),
            self.percentile(0.99),
            self.percentile(1.0),
            self.failed
        );
    }
}

/// `connections` clients, each sending one delivery after another for `seconds`.
async fn closed_loop(base: &str, connections: usize, seconds: u64, tag: &str) -> Run {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..connections {
        let base = base.to_string();
        let next = next.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut ok, mut failed, mut lat) = (0u64, 0u64, Vec::new());
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let d = ShopifyDelivery::new(
                    SHOP,
                    "orders/updated",
                    &format!("{tag}-{n}"),
                    body(n),
                    SECRET,
                );
                let t = Instant::now();
                match d.send(&client, &base).await {
                    Ok((200, _)) => {
                        ok += 1;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    _ => failed += 1,
                }
            }
            (ok, failed, lat)
        }));
    }
    let mut run = Run {
        ok: 0,
        failed: 0,
        seconds: 0.0,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (ok, failed, lat) = t.await.unwrap();
        run.ok += ok;
        run.failed += failed;
        run.latencies_us.extend(lat);
    }
    run.seconds = started.elapsed().as_secs_f64();
    run.latencies_us.sort_unstable();
    run
}

/// Sends at a fixed `rate` for `seconds`; latency counts from each request's scheduled time.
async fn open_loop(base: &str, rate: u64, seconds: u64, tag: &str) -> Run {
    let clients: Vec<reqwest::Client> = (0..64).map(|_| reqwest::Client::new()).collect();
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = tokio::time::Instant::now();
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let scheduled = started + interval * n as u32;
        tokio::time::sleep_until(scheduled).await;
        let client = clients[n as usize % clients.len()].clone();
        let base = base.to_string();
        let d = ShopifyDelivery::new(
            SHOP,
            "orders/updated",
            &format!("{tag}-{n}"),
            body(n),
            SECRET,
        );
        let failed = failed.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            match d.send(&client, &base).await {
                Ok((200, _)) => Some(scheduled.elapsed().as_micros() as u64),
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        }));
    }
    let mut latencies_us = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Some(l) = t.await.unwrap() {
            latencies_us.push(l);
        }
    }
    stop.store(true, Ordering::Relaxed);
    latencies_us.sort_unstable();
    Run {
        ok: latencies_us.len() as u64,
        failed: failed.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        latencies_us,
    }
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "intake benchmark: {} cores, {} connections, {} s per closed-loop run, open loop {}/s, burst {} s",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            args.connections,
            args.seconds,
            args.rate,
            args.burst_seconds
        );
        let dir = tempfile::tempdir().unwrap();
        let verify_dir = dir.path().join("verify");
        let durable_dir = dir.path().join("durable");
        std::fs::create_dir_all(&verify_dir).unwrap();
        std::fs::create_dir_all(&durable_dir).unwrap();

        let verify = start(IntakeMode::VerifyOnly, &verify_dir).await;
        let base = format!("http://{}", verify.public_addr());
        closed_loop(&base, args.connections, 1, "warm").await;
        let verify_run = closed_loop(&base, args.connections, args.seconds, "v").await;
        verify_run.print("verify-only, closed loop");
        verify.stop().await.unwrap();

        let durable = start(IntakeMode::Durable, &durable_dir).await;
        let base = format!("http://{}", durable.public_addr());
        closed_loop(&base, args.connections, 1, "warm").await;
        let before = durable.store().flush_stats();
        let durable_run = closed_loop(&base, args.connections, args.seconds, "d").await;
        let after = durable.store().flush_stats();
        durable_run.print("durable, closed loop");
        let rounds = after.rounds - before.rounds;
        let waiters = after.waiters - before.waiters;
        println!(
            "group commit: {rounds} flushes for {waiters} durable writes ({:.1} writes per flush)",
            waiters as f64 / rounds.max(1) as f64
        );

        let paced = open_loop(&base, args.rate, args.seconds, "o").await;
        paced.print(&format!("durable, open loop {}/s", args.rate));
        let burst = open_loop(&base, args.rate, args.burst_seconds, "b").await;
        burst.print(&format!("durable, {} s burst", args.burst_seconds));
        let stored = durable.store().delivery_count();
        durable.stop().await.unwrap();

        let ratio = durable_run.rate() / verify_run.rate();
        println!();
        println!(
            "ratio durable / verify-only: {:.2} ({:.0}%; target >= 25%)",
            ratio,
            ratio * 100.0
        );
        println!(
            "p99 at {}/s: {:.2} ms (target <= 50 ms, aim 5 ms); non-2xx in the {} s burst: {} (target 0)",
            args.rate,
            paced.percentile(0.99),
            args.burst_seconds,
            burst.failed
        );
        println!("deliveries stored by the durable daemon: {stored}");
    });
}
