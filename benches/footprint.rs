//! Footprint benchmark (SPEC section 9): resident memory with 100k orders mirrored, and the time
//! from start to ready on that store.
//!
//! `cargo bench --bench footprint [-- --orders 100000 --cache-mb 16]`
//!
//! The store is filled in this process; the measurement runs in a fresh child process (this same
//! binary, re-executed), so the figures are those of a daemon that restarts on a full store and
//! not of the process that filled it.

mod common;
use common::arg;

use std::time::Instant;

use shipgate::daemon::{Daemon, Options};
use shipgate::order::{
    FulfillmentOrder, FulfillmentOrderLine, FulfillmentOrderStatus, LineItem, OrderMirror,
    Timestamp,
};
use shipgate::sandbox::harness::{LoopbackConfig, ShopAuth, ShopSpec};
use shipgate::store::{Store, StoreOptions};

const SHOP: &str = "footprint.myshopify.com";

/// A typical dropshipping order: two lines, one fulfillment order.
fn order(n: u64) -> OrderMirror {
    let id = 9_000_000_000_000 + n;
    OrderMirror {
        shop: SHOP.into(),
        id: format!("gid://shopify/Order/{id}"),
        name: format!("#{}", 1000 + n),
        created_at: Some(Timestamp::from_unix_ms(1_764_000_000_000 + n as i64)),
        updated_at: Timestamp::from_unix_ms(1_764_000_000_000 + n as i64),
        cancelled_at: None,
        cancel_reason: None,
        display_fulfillment_status: "UNFULFILLED".into(),
        shipping_address: None,
        line_items: (0..2)
            .map(|l| LineItem {
                id: format!("gid://shopify/LineItem/{}", id * 10 + l),
                sku: Some(format!("SKU-{l}-BLUE")),
                variant_id: Some(format!("gid://shopify/ProductVariant/{}", 500 + l)),
                variant_title: Some("Blue / L".into()),
                quantity: 1,
                current_quantity: 1,
                unfulfilled_quantity: 1,
                requires_shipping: true,
            })
            .collect(),
        fulfillment_orders: vec![FulfillmentOrder {
            id: format!("gid://shopify/FulfillmentOrder/{id}"),
            status: FulfillmentOrderStatus::Open,
            updated_at: None,
            location_id: Some("gid://shopify/Location/1".into()),
            location_name: Some("Shenzhen Warehouse".into()),
            holds: Vec::new(),
            lines: (0..2)
                .map(|l| FulfillmentOrderLine {
                    id: format!("gid://shopify/FulfillmentOrderLineItem/{}", id * 10 + l),
                    line_item_id: format!("gid://shopify/LineItem/{}", id * 10 + l),
                    total_quantity: 1,
                    remaining_quantity: 1,
                })
                .collect(),
        }],
        fulfillments: Vec::new(),
        truncated: false,
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn measure(dir: &std::path::Path, cache_mb: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut loopback = LoopbackConfig::new(vec![ShopSpec {
            requests_per_second: 4,
            // Credentials pointing nowhere: the mirror's workers start (as in production) and
            // their first scan fails quietly; it does not touch the measurement.
            ..ShopSpec::synced(SHOP, "http://127.0.0.1:9", ShopAuth::Token("x".into()), b"x")
        }]);
        loopback.log_level = "off".into();
        let text = loopback
            .toml()
            .replace("path = \"store\"", &format!("path = \"store\"\ncache_capacity_mb = {cache_mb}"));
        let config = shipgate::config::Config::from_toml_str(&text, dir)
            .unwrap()
            .config;
        let before = rss_mib();
        let started = Instant::now();
        let daemon = Daemon::start(&config, Options::default()).await.unwrap();
        let ready = started.elapsed();
        let after_start = rss_mib();
        // Touch every order once, as a reconciliation would, so the cache is as full as it gets.
        let count = daemon.store().orders(SHOP).count();
        let after_scan = rss_mib();
        println!(
            "child: {count} orders; start to ready {:.0} ms; resident {before:.1} MiB before start, {after_start:.1} MiB when ready, {after_scan:.1} MiB after reading every order (cache cap {cache_mb} MiB)",
            ready.as_secs_f64() * 1000.0
        );
        daemon.stop().await.unwrap();
    });
}

fn main() {
    let orders = arg("--orders", 100_000);
    let cache_mb = arg("--cache-mb", 16);
    if let Some(dir) = std::env::var_os("FOOTPRINT_MEASURE_DIR") {
        measure(std::path::Path::new(&dir), cache_mb);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    {
        let store = Store::open(&dir.path().join("store"), &StoreOptions::default()).unwrap();
        for n in 0..orders {
            store.put_order(&order(n)).unwrap();
        }
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(store.flush())
            .unwrap();
        store.close();
    }
    println!(
        "footprint benchmark: stored {orders} mirrored orders in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(std::env::args().skip(1))
        .env("FOOTPRINT_MEASURE_DIR", dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    println!(
        "targets (SPEC section 9): resident set <= 64 MiB with 100k orders; restart to ready <= 1 s"
    );
}
