//! The real binary: its commands, graceful shutdown, and the crash test of invariant 1.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use shipgate::delivery::Origin;
use shipgate::sandbox::harness::{LoopbackConfig, ShopAuth, ShopSpec};
use shipgate::sandbox::webhooks::{ShopifyDelivery, sample_order};
use shipgate::store::{Store, StoreOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::helpers::*;

fn shipgate(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_shipgate"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn version_prints_the_crate_version() {
    let out = shipgate(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("shipgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn an_operator_command_whose_configuration_does_not_load_exits_2_naming_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shipgate.toml");
    // Two problems: a credential that cannot be read without systemd, and a bad listen address.
    let text = config_text("")
        .replace(
            "token = { value = \"test-admin-token\" }",
            "token = { credential = \"admin_token\" }",
        )
        .replace("127.0.0.1:0", "not-an-address");
    assert!(text.contains("credential = \"admin_token\""), "{text}");
    std::fs::write(&path, text).unwrap();
    for args in [
        &["orders", "list"][..],
        &["exceptions", "list"][..],
        &["outbox", "list"][..],
        &["reconcile"][..],
    ] {
        let mut full = args.to_vec();
        full.extend(["--config", path.to_str().unwrap()]);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shipgate"))
            .args(&full)
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("CREDENTIALS_DIRECTORY=/etc/shipgate/credentials"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("not-an-address"), "{args:?}: {stderr}");
        assert!(
            stderr.lines().all(|l| l.starts_with("shipgate: ")),
            "{args:?}: every line names the program: {stderr}"
        );
    }
}

#[test]
fn config_check_accepts_a_good_file_and_names_every_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path());
    let out = shipgate(&["config", "check", "--config", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("inline secret"),
        "inline secrets are warned about: {stderr}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[server]
listen = "nowhere"
[store]
path = "store"
cache_capacity_mb = "big"
[[shops]]
domain = "x.myshopify.com"
acess_token = { env = "X" }
"#,
    )
    .unwrap();
    let out = shipgate(&["config", "check", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "server.listen",
        "store.cache_capacity_mb",
        "shops[0].acess_token",
        "shops[0].webhook_secrets",
    ] {
        assert!(stderr.contains(key), "{key} not named in:\n{stderr}");
    }
}

#[test]
fn the_example_config_names_only_missing_credentials() {
    // The shipped example is production-shaped: it must fail only because this machine has no
    // systemd credentials, never because of a key or a value.
    let out = shipgate(&["config", "check", "--config", "systemd/shipgate.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| !l.contains("warning")) {
        assert!(
            line.contains("CREDENTIALS_DIRECTORY") || line.contains("credential"),
            "unexpected problem: {line}"
        );
    }
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    // The body arrives in two parts with the shutdown in between; on a loaded machine that
    // takes longer than the usual 300 ms body timeout, which would answer 408 instead.
    let config = dir.path().join("shipgate.toml");
    std::fs::write(
        &config,
        crate::helpers::config_text("")
            .replace("body_read_timeout_ms = 300", "body_read_timeout_ms = 10000"),
    )
    .unwrap();
    let daemon = Binary::start(&config, &[]).await;
    let delivery = ShopifyDelivery::new(
        SHOP,
        "orders/create",
        "in-flight",
        sample_order(1, 7001, "a@example.net", "1 A St"),
        SECRET,
    );
    let (headers, body) = delivery.wire();
    let mut head = String::from("POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let addr = daemon.public.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    // The request is in flight (headers read, body pending). Stop the daemon now.
    let ready = reqwest::get(format!("{}/readyz", daemon.admin))
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    daemon.signal_term();
    // The listener closes: new connections are refused once the daemon saw the signal. The
    // daemon is another process, so this is observed from outside, bounded by a deadline
    // (a fixed number of tries ran out on a loaded machine before the signal was handled).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut refused = false;
    while std::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stream.write_all(&body[10..]).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut child = daemon.child;
    let status = child.wait().await.unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(refused, "new connections were still accepted after SIGTERM");
    let store = Store::open(&dir.path().join("store"), &StoreOptions::default()).unwrap();
    let origin = Origin::Shopify { shop: SHOP.into() };
    assert!(store.delivery_seq(&origin, "in-flight").unwrap().is_some());
}

/// Sends unique deliveries from `clients` concurrent connections until the daemon dies, and
/// records each id that got a 2xx.
async fn burst(
    base: String,
    round: usize,
    clients: usize,
    acked: Arc<Mutex<Vec<String>>>,
    count: watch::Sender<usize>,
) {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let base = base.clone();
        let acked = acked.clone();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for n in 0.. {
                let id = format!("crash-{round}-{c}-{n}");
                let delivery = ShopifyDelivery::new(
                    SHOP,
                    "orders/updated",
                    &id,
                    sample_order(n, 7001, "crash@example.net", "1 Crash Lane"),
                    SECRET,
                );
                match delivery.send(&client, &base).await {
                    Ok((200, _)) => {
                        acked.lock().unwrap().push(id);
                        count.send_modify(|n| *n += 1);
                    }
                    Ok((status, text)) => panic!("valid delivery answered {status}: {text}"),
                    // The daemon was killed: this round is over for this client.
                    Err(_) => return,
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Runs `rounds` of: start the binary, burst from several clients, SIGKILL it once `per_round`
/// deliveries were acknowledged (while the burst goes on). Returns the acknowledged ids and, per
/// id, how many times the store holds it.
async fn crash_rounds(
    envs: &[(&str, &str)],
    rounds: usize,
    per_round: usize,
) -> (Vec<String>, HashMap<String, usize>) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let acked = Arc::new(Mutex::new(Vec::new()));
    for round in 0..rounds {
        let daemon = Binary::start(&config, envs).await;
        // Replays of deliveries acknowledged before the last crash must not be stored again.
        let replay: Vec<String> = acked
            .lock()
            .unwrap()
            .iter()
            .rev()
            .take(20)
            .cloned()
            .collect();
        let client = reqwest::Client::new();
        for id in &replay {
            let d = ShopifyDelivery::new(SHOP, "orders/updated", id, "{\"id\":1}", SECRET);
            assert_eq!(d.send(&client, &daemon.public).await.unwrap().0, 200);
        }
        let (count_tx, mut count_rx) = watch::channel(0usize);
        let sender = tokio::spawn(burst(
            daemon.public.clone(),
            round,
            4,
            acked.clone(),
            count_tx,
        ));
        count_rx.wait_for(|n| *n >= per_round).await.unwrap();
        daemon.kill().await;
        sender.await.unwrap();
    }
    let store = Store::open(&dir.path().join("store"), &StoreOptions::default()).unwrap();
    let mut stored: HashMap<String, usize> = HashMap::new();
    for entry in store.deliveries() {
        let (_, delivery) = entry.unwrap();
        *stored.entry(delivery.id).or_default() += 1;
    }
    let acked = acked.lock().unwrap().clone();
    (acked, stored)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_delivery_survives_sigkill_exactly_once() {
    let (acked, stored) = crash_rounds(&[], 8, 300).await;
    eprintln!(
        "crash test: {} acknowledged over 8 SIGKILLs, {} stored",
        acked.len(),
        stored.len()
    );
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "each id was acknowledged once");
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !stored.contains_key(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged deliveries lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    let twice: Vec<(&String, &usize)> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert!(acked.len() >= 8 * 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crash_test_finds_losses_when_flushing_is_off() {
    // Same test, flushing switched off: if it found nothing here it could not find anything.
    let (acked, stored) = crash_rounds(&[(shipgate::cli::UNSAFE_NO_FLUSH_ENV, "1")], 3, 150).await;
    let lost = acked.iter().filter(|id| !stored.contains_key(*id)).count();
    eprintln!(
        "crash test without flushing: {lost} of {} acknowledged deliveries lost",
        acked.len()
    );
    assert!(
        lost > 0,
        "no acknowledged delivery was lost without flushing: the crash test would not bite"
    );
}

#[tokio::test]
async fn systemd_hears_ready_watchdog_pings_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let socket_path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let daemon = Binary::start(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            // A 1 s watchdog: pinged every 0.5 s while the workers beat.
            ("WATCHDOG_USEC", "1000000"),
        ],
    )
    .await;
    let next = || async {
        let mut buf = vec![0u8; 256];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), socket.recv(&mut buf))
            .await
            .expect("a notification within 10 s")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // READY comes after the readiness line, i.e. once the store, listeners and workers are up.
    assert_eq!(next().await.trim(), "READY=1");
    assert_eq!(next().await.trim(), "WATCHDOG=1");
    daemon.signal_term();
    let mut rest = Vec::new();
    loop {
        let message = next().await;
        let done = message.trim() == "STOPPING=1";
        rest.push(message);
        if done {
            break;
        }
    }
    assert!(
        rest[..rest.len() - 1]
            .iter()
            .all(|m| m.trim() == "WATCHDOG=1"),
        "{rest:?}"
    );
    let mut child = daemon.child;
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn no_secret_or_customer_value_reaches_a_log_line() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("shipgate.toml");
        // A supplier and a tracking provider with secrets of their own, beside the shops'.
        let supplier_secret = "planted-supplier-secret";
        let tracking_secret = "planted-tracking-secret";
        let text = format!(
            "{}[[suppliers]]\nname = \"acme\"\nadapter = \"http\"\nendpoint = \"http://127.0.0.1:9/orders\"\nskus = [\"MUG-*\"]\nsecrets = [{{ value = \"{supplier_secret}\" }}]\n[[tracking]]\nprovider = \"aftership\"\nsecrets = [{{ value = \"{tracking_secret}\" }}]\n",
            config_text("")
        )
        .replace(
            "level = \"warn\"",
            &format!("level = \"debug\"\nformat = \"{format}\""),
        );
        std::fs::write(&config, text).unwrap();
        let daemon = Binary::start_logging(&config, &[("RUST_LOG", "debug")]).await;
        let client = reqwest::Client::new();
        let email = "planted.logcheck@example.org";
        let street = "77 Planted Log Street";
        let body = sample_order(42, 7001, email, street);
        for (id, secret) in [("l1", SECRET), ("l1", SECRET), ("l2", b"wrong".as_slice())] {
            let d = ShopifyDelivery::new(SHOP, "orders/create", id, body.clone(), secret);
            d.send(&client, &daemon.public).await.unwrap();
        }
        let redact = serde_json::json!({"shop_id": 1, "shop_domain": SHOP, "orders_to_redact": [42],
            "customer": {"id": 7001, "email": email, "phone": "+15550009999"}});
        ShopifyDelivery::new(SHOP, "customers/redact", "l3", redact.to_string(), SECRET)
            .send(&client, &daemon.public)
            .await
            .unwrap();
        // A supplier's event about a shipment nobody knows, carrying a customer's address, and
        // one signed with a wrong secret; a carrier's update with a number no label carries.
        let supplier_body = serde_json::json!({"id": "ev-log-1", "type": "rejected",
            "shipment_id": "SG-0000000999", "occurred_at": "2026-11-26T08:00:00Z",
            "reason": format!("cannot ship to {street}")})
        .to_string();
        for secret in [supplier_secret, "wrong-supplier-secret"] {
            let t = shipgate::suppliers::signature::now_secs();
            client
                .post(format!("{}/webhooks/suppliers/acme", daemon.public))
                .header(
                    "Shipgate-Signature",
                    shipgate::suppliers::signature::sign(
                        secret.as_bytes(),
                        t,
                        supplier_body.as_bytes(),
                    ),
                )
                .body(supplier_body.clone())
                .send()
                .await
                .unwrap();
        }
        let tracking_body =
            serde_json::json!({"event_id": "log-check-1", "event": "tracking_update",
            "msg": {"tracking_number": "1ZLOGCHECK0001", "slug": "ups", "tag": "InTransit",
                "checkpoints": [{"checkpoint_time": "2026-11-26T08:00:00Z", "message": "Pickup",
                    "tag": "InTransit", "subtag": "InTransit_002", "location": street}]}})
            .to_string();
        client
            .post(format!("{}/webhooks/tracking/aftership", daemon.public))
            .header(
                "aftership-hmac-sha256",
                shipgate::tracking::aftership::sign(
                    tracking_secret.as_bytes(),
                    tracking_body.as_bytes(),
                ),
            )
            .body(tracking_body)
            .send()
            .await
            .unwrap();
        // A wrong admin token is logged as refused, never echoed.
        client
            .get(format!("{}/metrics", daemon.admin))
            .bearer_auth("guessed-admin-token-123")
            .send()
            .await
            .unwrap();
        let logs = daemon.stop_and_collect_logs().await;
        // The supplier and carrier paths ran (and logged), so their silence below means something.
        for ran in ["supplier delivery refused", "tracking delivery stored"] {
            assert!(
                logs.contains(ran),
                "no `{ran}` in the {format} logs:\n{logs}"
            );
        }
        assert!(
            logs.lines().count() > 3,
            "the daemon logged ({format}):\n{logs}"
        );
        for planted in [
            email,
            street,
            "+15550009999",
            "current-secret",
            "previous-secret",
            "test-admin-token",
            "guessed-admin-token-123",
            supplier_secret,
            tracking_secret,
        ] {
            assert!(
                !logs.contains(planted),
                "{planted} appears in the {format} logs:\n{logs}"
            );
        }
    }
}

/// The real binary against a sandbox shop, its admin API on a fixed port (the CLI finds it from
/// the config), and the mirror synced once. Returns the folder, the config path and the daemon.
async fn synced_binary(
    sandbox: &shipgate::sandbox::shopify::SandboxShopify,
) -> (tempfile::TempDir, std::path::PathBuf, Binary) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shipgate.toml");
    let mut loopback = LoopbackConfig::new(vec![ShopSpec::synced(
        sandbox.shop(),
        &sandbox.base_url(),
        ShopAuth::Token("shpat_sandbox".into()),
        b"x",
    )]);
    loopback.admin_port = free_port();
    loopback.admin_token = Some("cli-admin-token".into());
    std::fs::write(&config, loopback.toml()).unwrap();
    let daemon = Binary::start(&config, &[]).await;
    let synced = reqwest::Client::new()
        .post(format!(
            "{}/api/shops/{}/sync",
            daemon.admin,
            sandbox.shop()
        ))
        .bearer_auth("cli-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(synced.status().as_u16(), 200);
    (dir, config, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_commands_answer_the_same_through_the_daemon_and_from_the_store() {
    use shipgate::sandbox::shopify::{Plan, SandboxShopify, sample_orders};
    let sandbox = SandboxShopify::start(sandbox_config(Plan::Plus))
        .await
        .unwrap();
    let ids: Vec<String> = sample_orders(5, 9)
        .into_iter()
        .map(|o| sandbox.create_order(o))
        .collect();
    sandbox.cancel_order(&ids[2], "CUSTOMER").unwrap();
    let name = sandbox.order_snapshot(&ids[2]).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let (_dir, config, daemon) = synced_binary(&sandbox).await;
    let config_arg = config.to_str().unwrap().to_string();
    let run = move |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shipgate"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let commands: Vec<Vec<String>> = vec![
        vec!["orders", "list", "--json", "--config", &config_arg],
        vec!["orders", "list", "--config", &config_arg],
        vec!["orders", "show", &name, "--json", "--config", &config_arg],
        vec!["orders", "show", &ids[0], "--config", &config_arg],
    ]
    .into_iter()
    .map(|c| c.into_iter().map(String::from).collect())
    .collect();
    let through_daemon: Vec<String> = commands.iter().map(|c| run(c.clone())).collect();
    daemon.signal_term();
    let mut child = daemon.child;
    assert!(child.wait().await.unwrap().success());
    let from_store: Vec<String> = commands.iter().map(|c| run(c.clone())).collect();
    assert_eq!(through_daemon, from_store);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&through_daemon[0]).unwrap();
    assert_eq!(listed.len(), 5);
    let shown: serde_json::Value = serde_json::from_str(&through_daemon[2]).unwrap();
    assert_eq!(shown["id"], ids[2].as_str());
    assert!(shown["cancelled_at"].is_object(), "{shown}");
    assert!(through_daemon[1].contains("CANCELLED"));

    // An unknown order is a one-line error and a non-zero exit, both ways.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shipgate"))
        .args(["orders", "show", "#99999", "--config", &config_arg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("#99999"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_the_same_through_the_daemon_and_from_the_store_and_repairs() {
    use shipgate::sandbox::shopify::{Plan, SandboxShopify, sample_orders};
    let sandbox = SandboxShopify::start(sandbox_config(Plan::Plus))
        .await
        .unwrap();
    for order in sample_orders(4, 21) {
        sandbox.create_order(order);
    }
    let (_dir, config, daemon) = synced_binary(&sandbox).await;
    // Two orders the mirror never hears of (the sandbox sends no webhooks here).
    for order in sample_orders(2, 22) {
        sandbox.create_order(order);
    }
    let config_arg = config.to_str().unwrap().to_string();
    let reconcile = |extra: &[&str]| {
        let mut args = vec!["reconcile", "--json", "--config", &config_arg];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shipgate"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reports: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reports.len(), 1);
        (
            reports[0]["classes"].clone(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (through_daemon, progress) = reconcile(&[]);
    // Progress shows while it runs, through the daemon as on the store.
    assert!(
        progress.contains("through the running daemon"),
        "{progress}"
    );
    assert!(
        progress.contains(": listed 6 orders in 1 pages"),
        "{progress}"
    );
    assert!(progress.contains(": compared 6 of 6"), "{progress}");
    daemon.signal_term();
    let mut child = daemon.child;
    assert!(child.wait().await.unwrap().success());
    let (from_store, progress) = reconcile(&[]);
    assert!(progress.contains(": compared 6 of 6"), "{progress}");
    assert_eq!(
        through_daemon, from_store,
        "the same classes, counts and examples"
    );
    let missing = through_daemon
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "missing_from_mirror")
        .unwrap()
        .clone();
    assert_eq!(missing["count"], 2, "{missing}");
    // Repair with the daemon stopped, then nothing is missing any more.
    reconcile(&["--repair"]);
    let (after, _) = reconcile(&[]);
    for class in after.as_array().unwrap() {
        if class["name"] == "missing_from_mirror" || class["name"] == "stale_in_mirror" {
            assert_eq!(class["count"], 0, "{class}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shops_subscribe_creates_each_subscription_once() {
    use shipgate::sandbox::shopify::{Plan, SandboxShopify};
    let sandbox = SandboxShopify::start(sandbox_config(Plan::Plus))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shipgate.toml");
    let loopback = LoopbackConfig::new(vec![ShopSpec::synced(
        sandbox.shop(),
        &sandbox.base_url(),
        ShopAuth::Token("shpat_sandbox".into()),
        b"x",
    )]);
    std::fs::write(&config, loopback.toml()).unwrap();
    let run = |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_shipgate"))
            .args(["shops", "subscribe", "--json", "--url", url, "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let url = "https://shipgate.example.com/webhooks/shopify";
    let first = run(url);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        rows.len(),
        shipgate::shopify::convert::SUBSCRIBED_TOPICS.len()
    );
    assert!(rows.iter().all(|r| r["result"] == "subscribed"));
    let second = run(url);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&second.stdout).unwrap();
    assert!(
        rows.iter().all(|r| r["result"] == "already subscribed"),
        "{rows:?}"
    );
    let subscriptions = sandbox.webhook_subscriptions();
    assert_eq!(
        subscriptions.len(),
        shipgate::shopify::convert::SUBSCRIBED_TOPICS.len()
    );
    assert!(
        subscriptions.iter().all(|(_, u)| u == url),
        "{subscriptions:?}"
    );
    assert!(
        subscriptions
            .iter()
            .any(|(t, _)| t == "ORDERS_UPDATED" || t.eq_ignore_ascii_case("orders/updated")),
        "{subscriptions:?}"
    );
    // Plain HTTP to a public host is refused before anything is sent.
    let refused = run("http://shipgate.example.com/webhooks/shopify");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("https"));
}
