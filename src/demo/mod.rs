//! `shipgate demo`: the real daemon on loopback, fed by the sandbox, with every outcome checked.
//!
//! The demo starts the daemon exactly as `shipgate run` does (port 0, a temporary store), pushes
//! deliveries through every intake path (valid, duplicate, rotated secret, each kind of bad input,
//! compliance erasure and export, uninstall, a failing store), mirrors a sandbox shop through lost
//! webhooks and failing calls, sends its orders to sandbox supplier agents, walks every
//! supplier exception path and the whole way to Shopify (check, pack, label, the carrier's
//! acceptance from a sandbox tracker, the gated fulfillment) in `suppliers.rs`, prints a timeline
//! and a summary, and returns `false` when any step ended differently than it must or the gate
//! was ever bypassed. It grows with every part of shipgate that lands.

mod suppliers;

use std::time::Instant;

use anyhow::Context as _;

use crate::clock::Clock;
use crate::sandbox::harness::SupplierSpec;
use crate::sandbox::supplier::{AgentSettings, SandboxAgent};

use crate::daemon::{Daemon, Options};
use crate::delivery::Origin;
use crate::sandbox::harness::{LoopbackConfig, ShopAuth, ShopSpec};
use crate::sandbox::shopify::{Faults, OrderEdit, SandboxConfig, SandboxShopify, sample_orders};
use crate::sandbox::webhooks::{ShopifyDelivery, Tamper, sample_order};

const SHOP: &str = "demo-store.myshopify.com";
const SECRET: &[u8] = b"demo-current-secret";
const OLD_SECRET: &[u8] = b"demo-previous-secret";
const SANDBOX_SHOP: &str = "sandbox-store.myshopify.com";
const SANDBOX_TOKEN: &str = "shpat_demo_sandbox";
const SANDBOX_SECRET: &[u8] = b"demo-sandbox-app-secret";

struct Timeline {
    started: Instant,
    failures: Vec<String>,
    steps: usize,
}

impl Timeline {
    fn check(&mut self, what: &str, ok: bool, detail: String) {
        self.steps += 1;
        let ms = self.started.elapsed().as_millis();
        let mark = if ok { "ok  " } else { "FAIL" };
        println!("{ms:>6} ms  {mark}  {what}: {detail}");
        if !ok {
            self.failures.push(what.to_string());
        }
    }
}

/// Runs the demo; returns whether every step ended as it must.
pub async fn run() -> anyhow::Result<bool> {
    let dir = tempfile::tempdir().context("creating a temporary folder")?;
    let sandbox = SandboxShopify::start(SandboxConfig {
        shop: SANDBOX_SHOP.into(),
        static_tokens: vec![SANDBOX_TOKEN.into()],
        webhook_secret: SANDBOX_SECRET.to_vec(),
        seed: 2026,
        ..SandboxConfig::default()
    })
    .await?;
    let mut loopback = LoopbackConfig::new(vec![
        ShopSpec::webhooks_only(SHOP, &[SECRET, OLD_SECRET]),
        ShopSpec {
            requests_per_second: 100,
            ..ShopSpec::synced(
                SANDBOX_SHOP,
                &sandbox.base_url(),
                ShopAuth::Token(SANDBOX_TOKEN.into()),
                SANDBOX_SECRET,
            )
        },
    ]);
    loopback.server_extra = "body_limit = 65536".into();
    let agents = suppliers::Agents {
        shenzhen: SandboxAgent::start(AgentSettings {
            name: "shenzhen".into(),
            secret: b"demo-shenzhen-secret".to_vec(),
        })
        .await?,
        la: SandboxAgent::start(AgentSettings {
            name: "la-3pl".into(),
            secret: b"demo-la-secret".to_vec(),
        })
        .await?,
        tracker: crate::sandbox::tracking::SandboxTracker::start(b"demo-aftership-secret".to_vec())
            .await?,
    };
    loopback.tracking = vec![("aftership".into(), "demo-aftership-secret".into())];
    // The sample catalogue ships from Shenzhen (location 0) or a Los Angeles 3PL (location 1).
    loopback.suppliers = vec![
        SupplierSpec::http(
            "shenzhen",
            &agents.shenzhen.endpoint(),
            b"demo-shenzhen-secret",
            &[
                "PHN-*",
                "LED-*",
                "PET-*",
                "POSTURE-*",
                "KITCHEN-*",
                "CAR-*",
                "SUNSET-*",
                "NECK-*",
            ],
        )
        .with_backups(&["la-3pl"]),
        SupplierSpec::http(
            "la-3pl",
            &agents.la.endpoint(),
            b"demo-la-secret",
            &["MASSAGE-*", "EARBUDS-*", "YOGA-*", "BABY-*"],
        )
        .with_backups(&["sheets"]),
        SupplierSpec::offline("sheets", "csv", &[]),
    ];
    let config = loopback
        .load(dir.path())
        .map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    crate::telemetry::init(&config.log.format, &config.log.level);
    // Retries and waits run on a manual clock, so that a supplier's day-long outage takes no time.
    let clock = Clock::manual(crate::delivery::now_ms() as i64);
    let daemon = Daemon::start(
        &config,
        Options {
            clock: clock.clone(),
            ..Options::default()
        },
    )
    .await?;
    let base = format!("http://{}", daemon.public_addr());
    agents
        .shenzhen
        .set_report_to(format!("{base}/webhooks/suppliers/shenzhen"));
    agents
        .la
        .set_report_to(format!("{base}/webhooks/suppliers/la-3pl"));
    agents
        .tracker
        .set_report_to(format!("{base}/webhooks/tracking/aftership"));
    let client = reqwest::Client::new();
    println!("shipgate demo: daemon on {base}, store in a temporary folder\n");
    let mut t = Timeline {
        started: Instant::now(),
        failures: Vec::new(),
        steps: 0,
    };

    let planted_email = "ada.lovelace@example.org";
    let planted_street = "12 Analytical Engine Row";
    let order = sample_order(820982911946154508, 7001, planted_email, planted_street);
    let valid = ShopifyDelivery::new(SHOP, "orders/create", "demo-wh-1", order.clone(), SECRET);
    let cases: Vec<(&str, ShopifyDelivery, u16)> = vec![
        (
            "orders/create signed with the current secret",
            valid.clone(),
            200,
        ),
        ("the same delivery again (duplicate)", valid.clone(), 200),
        (
            "orders/updated signed with the previous secret",
            ShopifyDelivery::new(
                SHOP,
                "orders/updated",
                "demo-wh-2",
                order.clone(),
                OLD_SECRET,
            ),
            200,
        ),
        (
            "signed with a wrong secret",
            ShopifyDelivery::new(SHOP, "orders/updated", "demo-wh-3", order.clone(), b"guess"),
            401,
        ),
        (
            "without a signature",
            valid.clone().tampered(Tamper::NoSignature),
            401,
        ),
        (
            "body re-serialized after signing",
            ShopifyDelivery::new(SHOP, "orders/updated", "demo-wh-4", order.clone(), SECRET)
                .tampered(Tamper::Reserialized),
            401,
        ),
        (
            "body over the 64 KiB limit",
            ShopifyDelivery::new(
                SHOP,
                "orders/updated",
                "demo-wh-5",
                vec![b' '; 70_000],
                SECRET,
            ),
            413,
        ),
        (
            "without X-Shopify-Topic",
            ShopifyDelivery::new(SHOP, "orders/updated", "demo-wh-6", order.clone(), SECRET)
                .tampered(Tamper::DropHeader("X-Shopify-Topic")),
            400,
        ),
        (
            "from a shop that is not configured",
            ShopifyDelivery::new(
                "other.myshopify.com",
                "orders/updated",
                "demo-wh-7",
                order.clone(),
                SECRET,
            ),
            401,
        ),
    ];
    for (what, delivery, expected) in cases {
        let (status, text) = delivery.send(&client, &base).await?;
        t.check(
            what,
            status == expected,
            format!("{status} (expected {expected}) {}", text.trim()),
        );
    }
    let origin = Origin::Shopify { shop: SHOP.into() };
    t.check(
        "stored once per webhook id",
        daemon.store().delivery_count() == 2,
        format!("{} deliveries stored", daemon.store().delivery_count()),
    );

    daemon.wait_idle().await;
    let triggers = daemon.store().order_triggers(SHOP)?;
    t.check(
        "order deliveries became one coalesced order trigger",
        triggers.len() == 1,
        format!(
            "{:?}",
            triggers
                .iter()
                .map(|(g, tr)| (g, tr.deliveries))
                .collect::<Vec<_>>()
        ),
    );

    let export = serde_json::json!({
        "shop_id": 1, "shop_domain": SHOP, "orders_requested": [820982911946154508u64],
        "customer": {"id": 7001, "email": planted_email, "phone": null},
        "data_request": {"id": 9001}
    });
    let (status, _) = ShopifyDelivery::new(
        SHOP,
        "customers/data_request",
        "demo-wh-8",
        export.to_string(),
        SECRET,
    )
    .send(&client, &base)
    .await?;
    daemon.wait_idle().await;
    let export_path = config
        .compliance
        .export_dir
        .join(SHOP)
        .join("data-request-9001.json");
    let exported = std::fs::read_to_string(&export_path).unwrap_or_default();
    t.check(
        "customers/data_request exported what is held",
        status == 200 && exported.contains(planted_street),
        format!("{status}, export file {} bytes", exported.len()),
    );

    let redact = serde_json::json!({
        "shop_id": 1, "shop_domain": SHOP, "orders_to_redact": [820982911946154508u64],
        "customer": {"id": 7001, "email": planted_email, "phone": null}
    });
    let (status, _) = ShopifyDelivery::new(
        SHOP,
        "customers/redact",
        "demo-wh-9",
        redact.to_string(),
        SECRET,
    )
    .send(&client, &base)
    .await?;
    daemon.wait_idle().await;
    let left: usize = [planted_email.as_bytes(), planted_street.as_bytes()]
        .iter()
        .map(|needle| {
            daemon
                .store()
                .find_bytes(needle)
                .map(|h| h.len())
                .unwrap_or(usize::MAX)
        })
        .sum();
    t.check(
        "customers/redact erased the customer everywhere in the store",
        status == 200 && left == 0,
        format!("{status}, {left} entries still hold the planted values"),
    );

    let (status, _) = ShopifyDelivery::new(SHOP, "app/uninstalled", "demo-wh-10", "{}", SECRET)
        .send(&client, &base)
        .await?;
    let (status2, _) = ShopifyDelivery::new(
        SHOP,
        "orders/updated",
        "demo-wh-11",
        sample_order(5, 7001, "x@example.org", "1 Street"),
        SECRET,
    )
    .send(&client, &base)
    .await?;
    daemon.wait_idle().await;
    let stopped = daemon
        .store()
        .shop_state(SHOP)?
        .is_some_and(|s| s.uninstalled_at_ms.is_some());
    let triggered_after = daemon
        .store()
        .order_triggers(SHOP)?
        .iter()
        .any(|(gid, _)| gid.ends_with("/5"));
    t.check(
        "app/uninstalled stopped work for the shop",
        status == 200 && status2 == 200 && stopped && !triggered_after,
        format!("uninstalled={stopped}, later order triggered={triggered_after}"),
    );

    daemon.store().inject_write_fault(true);
    let (status, text) =
        ShopifyDelivery::new(SHOP, "orders/updated", "demo-wh-12", order.clone(), SECRET)
            .send(&client, &base)
            .await?;
    daemon.store().inject_write_fault(false);
    let stored = daemon
        .store()
        .delivery_seq(&origin, "demo-wh-12")?
        .is_some();
    t.check(
        "a failing store answers 503 and stores nothing",
        status == 503 && !stored,
        format!("{status} {}", text.trim()),
    );
    let (status, _) =
        ShopifyDelivery::new(SHOP, "orders/updated", "demo-wh-12", order.clone(), SECRET)
            .send(&client, &base)
            .await?;
    t.check(
        "Shopify's retry after the store recovered is accepted",
        status == 200,
        format!("{status}"),
    );

    let sample_ids = mirror_demo(&mut t, &daemon, &sandbox, &base).await?;
    suppliers::run(&mut t, &daemon, &sandbox, &agents, &clock, &sample_ids).await?;

    let counters = daemon.counters();
    let (accepted, duplicates, refused) = (
        counters.accepted.load(std::sync::atomic::Ordering::Relaxed),
        counters
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed),
        counters.refused.load(std::sync::atomic::Ordering::Relaxed),
    );
    daemon.stop().await?;
    println!(
        "\nsummary: {} steps, {} failed; deliveries accepted {accepted}, duplicates {duplicates}, refused {refused}",
        t.steps,
        t.failures.len()
    );
    if t.failures.is_empty() {
        println!("demo passed");
        Ok(true)
    } else {
        println!("demo FAILED: {}", t.failures.join("; "));
        Ok(false)
    }
}

/// The order mirror against the sandbox Shopify: orders created, edited and cancelled there reach
/// the mirror through webhooks (a fifth of them lost, some duplicated, all shuffled) and the scan,
/// while almost a third of the GraphQL calls fail or are throttled.
async fn mirror_demo(
    t: &mut Timeline,
    daemon: &Daemon,
    sandbox: &SandboxShopify,
    base: &str,
) -> anyhow::Result<Vec<String>> {
    sandbox.set_webhook_url(Some(format!("{base}/webhooks/shopify")));
    sandbox.set_faults(Faults {
        throttled: 0.15,
        http_5xx: 0.15,
        http_429: 0.0,
        webhook_drop: 0.2,
        webhook_duplicate: 0.1,
        webhook_reorder: true,
        ..Faults::default()
    });
    let ids: Vec<String> = sample_orders(12, 2026)
        .into_iter()
        .map(|o| sandbox.create_order(o))
        .collect();
    sandbox.cancel_order(&ids[1], "CUSTOMER")?;
    let sku = sandbox
        .order_snapshot(&ids[2])
        .and_then(|o| first_sku(&o))
        .unwrap_or_default();
    sandbox.edit_order(&ids[2], OrderEdit::SetQuantity { sku, quantity: 4 })?;
    sandbox.flush_webhooks().await;
    let report = daemon.sync_now(SANDBOX_SHOP).await?;
    let mut wrong = Vec::new();
    for id in &ids {
        let truth = sandbox.order_snapshot(id);
        let mirror = daemon.store().order(SANDBOX_SHOP, id)?;
        let same = match (&truth, &mirror) {
            (Some(truth), Some(mirror)) => {
                truth["updatedAt"]
                    .as_str()
                    .and_then(|s| crate::order::Timestamp::parse(s).ok())
                    .is_some_and(|ts| ts.unix_ms == mirror.updated_at.unix_ms)
                    && truth["cancelledAt"].is_null() != mirror.is_cancelled()
            }
            _ => false,
        };
        if !same {
            wrong.push(id.clone());
        }
    }
    let stats = sandbox.stats();
    t.check(
        "12 sandbox orders (1 cancelled, 1 edited) mirrored despite lost webhooks and failing calls",
        wrong.is_empty(),
        format!(
            "scan saw {}, triggered {}; webhooks dropped {}, duplicated {}; GraphQL 5xx {}, throttled {}; wrong: {wrong:?}",
            report.seen,
            report.triggered,
            stats.webhooks_dropped,
            stats.webhooks_duplicated,
            stats.http_5xx,
            stats.throttled_forced + stats.throttled_natural,
        ),
    );
    let cancelled = daemon
        .store()
        .order(SANDBOX_SHOP, &ids[1])?
        .is_some_and(|o| o.is_cancelled());
    t.check(
        "the cancellation made in Shopify is in the mirror",
        cancelled,
        format!("{} cancelled={cancelled}", ids[1]),
    );
    Ok(ids)
}

fn first_sku(order: &serde_json::Value) -> Option<String> {
    let lines = &order["lineItems"];
    let first = lines
        .get("nodes")
        .and_then(|n| n.get(0))
        .or_else(|| lines.get(0))?;
    first["sku"].as_str().map(str::to_string)
}
