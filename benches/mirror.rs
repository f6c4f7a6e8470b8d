//! Mirror benchmark: orders mirrored per second against the sandbox at Standard-plan limits,
//! compared with the throttle bound, in one run.
//!
//! `cargo bench --bench mirror [-- --orders 400]`
//!
//! The sandbox holds `--orders` orders and sends no webhooks; the daemon's scan finds them all and
//! the fetcher mirrors them in batches. The throttle bound is what Shopify's bucket allows: the
//! points that were available during the run (the bucket's drop plus the restore rate times the
//! duration) divided by the points one mirrored order costs (the scan's and the fetches' actual
//! cost per order). The ratio of the measured rate to that bound is what the target speaks of
//! (SPEC section 9 and issue 3: at least 90%).

use std::time::Instant;

use shipgate::config::Config;
use shipgate::daemon::{Daemon, Options};
use shipgate::sandbox::shopify::{Plan, SandboxConfig, SandboxShopify, sample_orders};

fn arg(name: &str, default: usize) -> usize {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|x| x == name)
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let orders = arg("--orders", 400);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sandbox = SandboxShopify::start(SandboxConfig {
            shop: "bench-store.myshopify.com".into(),
            plan: Plan::Standard,
            static_tokens: vec!["shpat_bench".into()],
            seed: 3,
            ..SandboxConfig::default()
        })
        .await
        .unwrap();
        for order in sample_orders(orders, 3) {
            sandbox.create_order(order);
        }
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[store]
path = "store"
[log]
level = "error"
[sync]
poll_interval_secs = 86400
[[shops]]
domain = "{}"
admin_base_url = "{}"
access_token = {{ value = "shpat_bench" }}
webhook_secrets = [{{ value = "unused" }}]
requests_per_second = 1000
"#,
            sandbox.shop(),
            sandbox.base_url()
        );
        let config = Config::from_toml_str(&text, dir.path()).unwrap().config;
        let before_bucket = sandbox.bucket();
        let before = sandbox.stats();
        let started = Instant::now();
        // The daemon's first scan starts at once; sync_now waits for it and the fetches.
        let daemon = Daemon::start(&config, Options::default()).await.unwrap();
        daemon.sync_now(sandbox.shop()).await.unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let after_bucket = sandbox.bucket();
        let after = sandbox.stats();
        let mirrored = daemon.store().order_count();
        daemon.stop().await.unwrap();

        let spent = (after.points_actual - before.points_actual) as f64;
        let per_order = spent / mirrored.max(1) as f64;
        let available = (before_bucket.currently_available - after_bucket.currently_available)
            + before_bucket.restore_rate * seconds;
        let bound = available / per_order / seconds;
        let rate = mirrored as f64 / seconds;
        println!(
            "mirror benchmark: {orders} orders at Standard plan (restore {:.0}/s, bucket {:.0})",
            before_bucket.restore_rate, before_bucket.maximum_available
        );
        println!(
            "mirrored {mirrored} orders in {seconds:.2} s: {rate:.2} orders/s; {:.1} points per order ({spent:.0} spent)",
            per_order
        );
        println!(
            "requests {}, THROTTLED {}, points available during the run {available:.0}",
            after.requests - before.requests,
            after.throttled_natural - before.throttled_natural
        );
        println!(
            "throttle bound {bound:.2} orders/s; ratio measured / bound: {:.2} (target >= 0.90)",
            rate / bound
        );
    });
}
