//! The operator surface of the supplier workflow (SPEC section 8): exceptions, supplier sheets
//! and events, shipments, the outbox and their metrics, through the admin API and through the
//! CLI binary, with the daemon running and with it stopped.
//!
//! The daemon runs in the test process on a fixed admin port written into a config file, so the
//! CLI binary finds it the way an operator's would; the test itself waits on the daemon's
//! workflow instead of sleeping. Stopping the daemon closes its store, and the same commands then
//! open the store directly.

use std::path::PathBuf;
use std::process::Output;

use serde_json::{Value, json};
use shipgate::config::Config;
use shipgate::daemon::{Daemon, Options};
use shipgate::sandbox::harness::{ShopAuth, SupplierSpec};
use shipgate::sandbox::shopify::{NewLine, NewOrder, Plan, SandboxShopify};

use crate::helpers::{free_port, sandbox_config, spawn_app, synced_loopback};

const TOKEN: &str = "ops-admin-token";

/// The daemon with a csv agent (`depot`, `SAMPLE-*`) and a manual supplier (`charlie`, `KIT-*`),
/// a sandbox Shopify, and a config file the CLI reads.
struct Operated {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    config: Config,
    sandbox: SandboxShopify,
    daemon: Option<Daemon>,
    admin: String,
    client: reqwest::Client,
}

async fn spawn_operated() -> Operated {
    let sandbox = SandboxShopify::start(sandbox_config(Plan::Standard))
        .await
        .expect("sandbox starts");
    let dir = tempfile::tempdir().unwrap();
    let mut loopback = synced_loopback(&sandbox, ShopAuth::Token("shpat_sandbox".into()));
    loopback.admin_port = free_port();
    loopback.admin_token = Some(TOKEN.into());
    loopback.suppliers = vec![
        SupplierSpec::offline("depot", "csv", &["SAMPLE-*"]),
        SupplierSpec::offline("charlie", "manual", &["KIT-*"]),
    ];
    let config_path = dir.path().join("shipgate.toml");
    std::fs::write(&config_path, loopback.toml()).unwrap();
    let config = loopback.load(dir.path()).expect("config loads");
    let mut operated = Operated {
        admin: format!("http://127.0.0.1:{}", loopback.admin_port),
        dir,
        config_path,
        config,
        sandbox,
        daemon: None,
        client: reqwest::Client::new(),
    };
    operated.start().await;
    operated
}

fn new_order(lines: &[(&str, i64)]) -> NewOrder {
    NewOrder {
        name: None,
        lines: lines
            .iter()
            .map(|(sku, quantity)| NewLine {
                sku: sku.to_string(),
                quantity: *quantity,
                location: 0,
                variant_title: Some("Standard".into()),
            })
            .collect(),
        customer_email: Some("ada@example.com".into()),
        shipping_address: Some(json!({
            "name": "Ada Lovelace", "address1": "1 Example Street", "city": "London",
            "zip": "N1 1AA", "countryCodeV2": "GB"
        })),
    }
}

impl Operated {
    /// Starts the daemon (again) on the config's admin port and points Shopify's webhooks at it.
    async fn start(&mut self) {
        assert!(self.daemon.is_none());
        let daemon = Daemon::start(&self.config, Options::default())
            .await
            .expect("daemon starts");
        self.sandbox.set_webhook_url(Some(format!(
            "http://{}/webhooks/shopify",
            daemon.public_addr()
        )));
        self.daemon = Some(daemon);
    }

    /// Stops the daemon: its store is flushed and closed, so the CLI opens it directly next.
    async fn stop(&mut self) {
        self.sandbox.set_webhook_url(None);
        self.daemon
            .take()
            .expect("the daemon runs")
            .stop()
            .await
            .unwrap();
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the daemon runs")
    }

    /// Lets Shopify, the mirror, planning and the outbox act until nothing moves.
    async fn settle(&self) {
        let daemon = self.daemon();
        let workflow = daemon.workflow();
        for _ in 0..40 {
            let before = workflow.writes();
            self.sandbox.flush_webhooks().await;
            daemon.wait_idle().await;
            daemon.sync_now(self.sandbox.shop()).await.expect("sync");
            workflow.wait_quiet().await.unwrap();
            daemon.wait_idle().await;
            workflow.wait_quiet().await.unwrap();
            if workflow.writes() == before {
                return;
            }
        }
        panic!("the system did not settle");
    }

    /// The only shipment of an order, and its only line.
    fn shipment_of(&self, order: &str) -> (String, String) {
        let case = self
            .daemon()
            .store()
            .case(self.sandbox.shop(), order)
            .unwrap()
            .expect("the order has a case");
        assert_eq!(case.shipments.len(), 1, "{case:?}");
        let shipment = &case.shipments[0];
        (shipment.id.clone(), shipment.lines[0].line_item_id.clone())
    }

    fn holds(&self, order: &str) -> Vec<Value> {
        let snapshot = self.sandbox.order_snapshot(order).unwrap();
        snapshot["fulfillmentOrders"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|fo| fo["fulfillmentHolds"].as_array().unwrap().clone())
            .collect()
    }

    /// Runs the CLI binary with this config (`$USER` fixed, so the default operator is known).
    async fn cli(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_shipgate"))
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .env_remove("SHIPGATE_CONFIG")
            .env("USER", "tester")
            .output()
            .await
            .unwrap()
    }

    /// Runs the CLI, expects success, and returns its stdout.
    async fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args).await;
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the CLI, expects exit 1 with one line on stderr, and returns that line.
    async fn cli_fails(&self, args: &[&str]) -> String {
        let out = self.cli(args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        stderr.trim().to_string()
    }

    /// The manual supplier's receipt and confirmation of a shipment's line, through the API.
    async fn confirm(&self, shipment: &str, line: &str, sku: &str, quantity: i64) {
        for event in [
            json!({"type": "received", "shipment_id": shipment}),
            json!({"type": "line_confirmed", "shipment_id": shipment, "line_id": line,
                "sku": sku, "quantity": quantity}),
        ] {
            let r = self
                .post("/api/suppliers/charlie/events")
                .json(&event)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }
    }

    /// Writes a check record (the sandbox's, as an agent would send it) to a file for the CLI.
    fn check_file(
        &self,
        name: &str,
        shipment: &str,
        line: (&str, &str, i64, i64),
        result: &str,
    ) -> String {
        let event = shipgate::sandbox::harness::check_event(name, shipment, &[line], result);
        let shipgate::suppliers::EventKind::CheckReported { check_json } = event.kind else {
            unreachable!("check_event builds a check");
        };
        let path = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&path, check_json).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// The carrier events recorded on a shipment.
    fn carrier_events(&self, shipment: &str) -> Vec<shipgate::tracking::TrackingEvent> {
        let case = self.daemon().store().case_of(shipment).unwrap().unwrap();
        case.shipment(shipment)
            .unwrap()
            .evidence
            .iter()
            .filter_map(|e| match &e.kind {
                shipgate::workflow::model::EvidenceKind::Carrier(ev) => Some(ev.clone()),
                _ => None,
            })
            .collect()
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.admin))
            .bearer_auth(TOKEN)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.admin))
            .bearer_auth(TOKEN)
    }

    async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_answer_the_same_through_the_api_the_daemon_and_the_store() {
    let mut s = spawn_operated().await;
    let first = s.sandbox.create_order(new_order(&[("LAMP-9", 1)]));
    let second = s.sandbox.create_order(new_order(&[("LAMP-7", 1)]));
    s.settle().await;

    // The API lists both, oldest first, with their subject and the hold placed for each.
    let listed = s.get_json("/api/exceptions").await;
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{listed}");
    for (row, (order, sku)) in rows.iter().zip([(&first, "LAMP-9"), (&second, "LAMP-7")]) {
        assert_eq!(row["kind"], "unmapped_sku");
        assert_eq!(row["order_id"], order.as_str());
        assert_eq!(row["subject"]["sku"], sku);
        assert_eq!(row["open"], true);
        assert_eq!(row["hold"]["state"], "placed", "{row}");
        assert!(row["decision"].is_null());
    }
    let first_ex = rows[0]["id"].as_str().unwrap().to_string();
    let second_ex = rows[1]["id"].as_str().unwrap().to_string();
    let shown = s.get_json(&format!("/api/exceptions/{first_ex}")).await;
    assert_eq!(shown["allowed_decisions"], json!(["route", "cancel"]));
    assert_eq!(shown["hold"]["handle"], format!("shipgate-{first_ex}"));
    assert_eq!(shown["hold"]["reason"], "OTHER");
    assert_eq!(shown["opened_by"], "shipgate");
    assert_eq!(shown["shipments"], json!([]), "nothing could be planned");
    assert_eq!(s.get_json("/api/exceptions?kind=stockout").await, json!([]));

    // Bad input names the field; unknown ids are 404; a decision that does not fit is 422.
    let r = s.get("/api/exceptions?kind=bogus").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("`kind`"));
    let r = s.get("/api/exceptions?all=perhaps").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("`all`"));
    let r = s
        .get("/api/exceptions?shop=nowhere.myshopify.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s.get("/api/exceptions/EX-0000000000").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let decide = |body: Value| {
        s.post(&format!("/api/exceptions/{first_ex}/decide"))
            .json(&body)
            .send()
    };
    let r = decide(json!({"decision": "approve"})).await.unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"],
        "an unmapped_sku exception allows route, cancel; not approve"
    );
    let r = decide(json!({"decision": "route"})).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("needs the supplier"));
    let r = decide(json!({"decision": "cancel", "color": "red"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "unknown fields are refused");
    let r = s
        .post("/api/exceptions/EX-0000000000/decide")
        .json(&json!({"decision": "cancel"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The same commands through the running daemon and on the store give the same answers.
    let show_first = format!("exceptions show {first_ex}");
    let commands: Vec<Vec<&str>> = vec![
        vec!["exceptions", "list", "--json"],
        vec![
            "exceptions",
            "list",
            "--all",
            "--kind",
            "unmapped_sku",
            "--json",
        ],
        vec!["exceptions", "show", &first_ex, "--json"],
        show_first.split(' ').collect(),
        vec!["outbox", "list", "--json"],
    ];
    let mut through_daemon = Vec::new();
    for command in &commands {
        through_daemon.push(s.cli_ok(command).await);
    }
    let table = s.cli_ok(&["exceptions", "list"]).await;
    let wrong = [
        "exceptions",
        "decide",
        first_ex.as_str(),
        "approve",
        "--note",
        "why not",
    ];
    let refused_through_daemon = s.cli_fails(&wrong).await;
    s.stop().await;
    let mut from_store = Vec::new();
    for command in &commands {
        from_store.push(s.cli_ok(command).await);
    }
    assert_eq!(through_daemon, from_store);
    assert_eq!(refused_through_daemon, s.cli_fails(&wrong).await);
    assert!(
        refused_through_daemon.contains("allows route, cancel; not approve"),
        "{refused_through_daemon}"
    );
    let cli_list: Value = serde_json::from_str(&through_daemon[0]).unwrap();
    assert_eq!(cli_list, listed, "the CLI prints what the API answers");
    assert!(
        table.contains(&first_ex) && table.contains("LAMP-9"),
        "{table}"
    );
    assert!(table.contains("2 exception(s)"), "{table}");
    assert!(through_daemon[3].contains("allows: route, cancel"));
    assert!(through_daemon[3].contains(&format!("hold: shipgate-{first_ex} placed")));
    let outbox: Value = serde_json::from_str(&through_daemon[4]).unwrap();
    assert!(
        outbox
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] == "shopify_hold" && e["state"] == "done"),
        "{outbox}"
    );

    // A decision with the daemon stopped is recorded, and its effects wait for the daemon.
    let out = s
        .cli(&[
            "exceptions",
            "decide",
            &second_ex,
            "route",
            "--supplier",
            "depot",
            "--note",
            "the depot has lamps",
            "--by",
            "alice",
            "--json",
        ])
        .await;
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the daemon is not running")
            && stderr.contains("sent when the daemon starts"),
        "{stderr}"
    );
    let decided: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decided["open"], false, "{decided}");
    assert_eq!(decided["decision"]["name"], "route");
    assert_eq!(decided["decision"]["supplier"], "depot");
    assert_eq!(decided["decision"]["by"], "operator alice");
    assert_eq!(decided["decision"]["note"], "the depot has lamps");
    assert_eq!(decided["hold"]["state"], "release_requested");
    assert_eq!(decided["shipments"][0]["supplier"], "depot");
    assert_eq!(decided["shipments"][0]["status"], "awaiting_submission");
    assert_eq!(s.holds(&second).len(), 1, "nothing was sent yet");
    s.start().await;
    s.settle().await;
    assert!(s.holds(&second).is_empty(), "the daemon released the hold");
    let after = s.get_json(&format!("/api/exceptions/{second_ex}")).await;
    assert_eq!(after["hold"]["state"], "released");
    assert_eq!(after["shipments"][0]["status"], "awaiting_confirmation");
    assert_eq!(after["closed"]["by"], "operator alice", "{after}");

    // The same decision through the daemon; the operator defaults to $USER.
    let decided: Value = serde_json::from_str(
        &s.cli_ok(&[
            "exceptions",
            "decide",
            &first_ex,
            "route",
            "--supplier",
            "depot",
            "--json",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(decided["open"], false);
    assert_eq!(decided["decision"]["by"], "operator tester");
    s.settle().await;
    assert!(s.holds(&first).is_empty());
    assert_eq!(s.get_json("/api/exceptions").await, json!([]));
    let all = s.get_json("/api/exceptions?all=true").await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    s.stop().await;
}

/// A sheet with one event per row (docs/suppliers.md section 4).
fn sheet(rows: &[String]) -> String {
    let mut text = String::from(
        "shipment_id,event,line_id,sku,variant,quantity,date,parcel_id,carrier,tracking_number,tracking_url,weight_grams,note\n",
    );
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_supplier_exports_its_pending_shipments_and_imports_only_a_sheet_without_bad_rows() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut s = spawn_operated().await;
    let order = s.sandbox.create_order(new_order(&[("SAMPLE-1", 2)]));
    s.settle().await;
    let (shipment, line) = s.shipment_of(&order);

    let exported = s.cli_ok(&["supplier", "export", "depot"]).await;
    let rows: Vec<&str> = exported.lines().collect();
    assert_eq!(rows.len(), 2, "{exported}");
    assert!(rows[0].starts_with("shipment_id,order_name,line_id,sku"));
    for cell in [
        shipment.as_str(),
        line.as_str(),
        "SAMPLE-1",
        ",2,",
        "Ada Lovelace",
        "ship",
    ] {
        assert!(rows[1].contains(cell), "{cell} missing from {}", rows[1]);
    }
    let file = s.dir.path().join("depot.csv");
    std::fs::write(&file, "old, readable by all").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = s.cli(&["supplier", "export", "depot", "--out"]).await;
    assert_eq!(out.status.code(), Some(2), "--out needs a file");
    s.cli_ok(&[
        "supplier",
        "export",
        "depot",
        "--out",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), exported);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "addresses are for the owner only");
    let r = s.get("/api/suppliers/depot/export").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(r.text().await.unwrap(), exported);
    let refused = s.cli_fails(&["supplier", "export", "nobody"]).await;
    assert!(
        refused.contains("supplier nobody is not configured"),
        "{refused}"
    );
    let r = s.get("/api/suppliers/nobody/export").send().await.unwrap();
    assert_eq!(r.status(), 404);

    // One bad row refuses the whole file, with its row number; nothing is recorded.
    let bad = s.dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        sheet(&[
            format!("{shipment},received,,,,,,,,,,,PO-1"),
            format!("{shipment},confirmed,gid://shopify/LineItem/999999,SAMPLE-1,,2,,,,,,,"),
        ]),
    )
    .unwrap();
    let out = s
        .cli(&["supplier", "import", "depot", bad.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.csv refused"), "{stderr}");
    assert!(stderr.contains("row 3:"), "{stderr}");
    assert!(!stderr.contains("row 2:"), "{stderr}");
    let r = s
        .post("/api/suppliers/depot/import?file_name=bad.csv&by=api")
        .body(std::fs::read(&bad).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["problems"][0]["row"], 3, "{body}");
    assert!(body["error"].as_str().unwrap().contains("row 3:"));
    let r = s
        .post("/api/suppliers/depot/import")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("`file_name`"));
    let shown = s.get_json(&format!("/api/shipments/{shipment}")).await;
    assert_eq!(shown["status"], "awaiting_confirmation");

    // A good sheet records each row once and moves the shipment on.
    let good = s.dir.path().join("good.csv");
    let good_sheet = sheet(&[
        format!("{shipment},received,,,,,,,,,,,PO-1"),
        format!("{shipment},confirmed,{line},SAMPLE-1,Standard,2,2026-12-01,,,,,,"),
    ]);
    std::fs::write(&good, &good_sheet).unwrap();
    let imported = s
        .cli_ok(&["supplier", "import", "depot", good.to_str().unwrap()])
        .await;
    assert_eq!(
        imported.trim(),
        "good.csv: 2 event(s) recorded, 0 already recorded"
    );
    s.settle().await;
    let shown = s.get_json(&format!("/api/shipments/{shipment}")).await;
    assert_eq!(shown["status"], "awaiting_check", "{shown}");
    // The order names its shipments, so an operator finds the SG id to record evidence on.
    let text = s.cli_ok(&["orders", "show", &order]).await;
    assert!(
        text.contains(&format!("    {shipment} depot awaiting_check: SAMPLE-1 x2")),
        "{text}"
    );
    let json: Value =
        serde_json::from_str(&s.cli_ok(&["orders", "show", &order, "--json"]).await).unwrap();
    assert_eq!(json["shipments"][0]["id"], shipment.as_str(), "{json}");
    assert_eq!(
        json["id"],
        order.as_str(),
        "the mirror's own fields stay at the top"
    );
    let confirmed = shown["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "line_confirmed")
        .expect("the confirmation is evidence");
    assert_eq!(confirmed["actor"], "operator tester");
    assert_eq!(confirmed["source"], "sheet good.csv");
    assert_eq!(confirmed["event"]["sku"], "SAMPLE-1");
    assert!(
        shown["effects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "supplier_submission" && e["state"] == "done"),
        "{shown}"
    );
    let r = s
        .post("/api/suppliers/depot/import?file_name=good.csv")
        .body(good_sheet)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["recorded"], 0);
    assert_eq!(again["already_recorded"], 2);
    assert_eq!(
        s.cli_ok(&["supplier", "export", "depot"])
            .await
            .lines()
            .count(),
        1,
        "a confirmed shipment no longer waits for the agent"
    );

    // The shipment reads the same through the daemon and on the store.
    let through_daemon = s.cli_ok(&["shipments", "show", &shipment, "--json"]).await;
    let text = s.cli_ok(&["shipments", "show", &shipment]).await;
    s.stop().await;
    assert_eq!(
        through_daemon,
        s.cli_ok(&["shipments", "show", &shipment, "--json"]).await
    );
    assert_eq!(text, s.cli_ok(&["shipments", "show", &shipment]).await);
    assert!(text.contains("awaiting_check"), "{text}");
    assert!(
        text.contains("operator tester via sheet good.csv"),
        "{text}"
    );
    let missing = s.cli_fails(&["shipments", "show", "SG-0000000000"]).await;
    assert!(missing.contains("no shipment SG-0000000000"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_supplier_event_from_the_cli_opens_a_stockout_and_a_wrong_decision_is_refused() {
    let s = spawn_operated().await;
    let order = s.sandbox.create_order(new_order(&[("KIT-1", 1)]));
    s.settle().await;
    let (shipment, line) = s.shipment_of(&order);

    let received = json!({"type": "received", "shipment_id": shipment}).to_string();
    let out = s
        .cli_ok(&["supplier", "event", "charlie", "--json", &received])
        .await;
    assert!(
        out.starts_with("recorded: received manual-")
            && out.trim().ends_with(&format!("for {shipment}")),
        "{out}"
    );
    let short = json!({"id": "kit-short-1", "type": "line_short", "shipment_id": shipment,
        "line_id": line, "quantity_short": 1, "reason": "out of kits",
        "occurred_at": "2026-11-25T10:00:00Z"});
    let file = s.dir.path().join("short.json");
    std::fs::write(&file, short.to_string()).unwrap();
    let out = s
        .cli_ok(&[
            "supplier",
            "event",
            "charlie",
            "--file",
            file.to_str().unwrap(),
            "--by",
            "carol",
        ])
        .await;
    assert_eq!(
        out.trim(),
        format!("recorded: line_short kit-short-1 for {shipment}")
    );
    let out = s
        .cli_ok(&["supplier", "event", "charlie", "--json", &short.to_string()])
        .await;
    assert!(out.starts_with("already recorded"), "{out}");
    s.settle().await;

    // Events that do not fit are refused with the reason.
    let other = s
        .cli_fails(&["supplier", "event", "depot", "--json", &received])
        .await;
    assert!(
        other.contains(&format!("shipment {shipment} is not depot's")),
        "{other}"
    );
    let unknown = json!({"type": "received", "shipment_id": "SG-9999999999"}).to_string();
    let refused = s
        .cli_fails(&["supplier", "event", "charlie", "--json", &unknown])
        .await;
    assert!(
        refused.contains("unknown shipment SG-9999999999"),
        "{refused}"
    );
    let refused = s
        .cli_fails(&[
            "supplier",
            "event",
            "charlie",
            "--json",
            "{\"type\":\"received\"}",
        ])
        .await;
    assert!(refused.contains("`shipment_id` is missing"), "{refused}");
    for (path, body, status) in [
        (
            "/api/suppliers/charlie/events",
            "{\"type\":\"received\"}".to_string(),
            400,
        ),
        ("/api/suppliers/charlie/events", unknown.clone(), 422),
        ("/api/suppliers/nobody/events", received.clone(), 404),
    ] {
        let r = s.post(path).body(body).send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
    }
    let r = s
        .post("/api/suppliers/charlie/events?by=dave")
        .body(received.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["result"], "recorded");
    assert!(body["id"].as_str().unwrap().starts_with("manual-"));

    // The shortage opened a stockout with its Shopify hold.
    let open = s.get_json("/api/exceptions").await;
    let rows = open.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{open}");
    assert_eq!(rows[0]["kind"], "stockout");
    assert_eq!(rows[0]["subject"]["shipment_id"], shipment.as_str());
    assert_eq!(rows[0]["subject"]["sku"], "KIT-1");
    let ex = rows[0]["id"].as_str().unwrap().to_string();
    assert_eq!(s.holds(&order)[0]["reason"], "INVENTORY_OUT_OF_STOCK");
    let refused = s.cli_fails(&["exceptions", "decide", &ex, "approve"]).await;
    assert_eq!(
        refused,
        "shipgate: a stockout exception allows wait, reroute, cancel; not approve"
    );
    let refused = s
        .cli_fails(&["exceptions", "decide", &ex, "wait", "--until", "soon"])
        .await;
    assert!(refused.contains("`soon` is not a date"), "{refused}");
    let waiting: Value = serde_json::from_str(
        &s.cli_ok(&[
            "exceptions",
            "decide",
            &ex,
            "wait",
            "--until",
            "2099-01-01",
            "--json",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(waiting["open"], true, "a wait keeps it open");
    assert_eq!(waiting["decision"]["name"], "wait");
    assert_eq!(waiting["decision"]["until"], "2099-01-01");
    assert_eq!(waiting["shipments"][0]["status"], "held");

    let shown = s.get_json(&format!("/api/shipments/{shipment}")).await;
    let short = shown["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "supplier:kit-short-1")
        .unwrap()
        .clone();
    assert_eq!(short["actor"], "operator carol");
    assert_eq!(short["source"], "manual entry");
    assert_eq!(short["at"], "2026-11-25T10:00:00Z");
    assert_eq!(shown["exceptions"][0]["id"], ex.as_str());
    assert!(
        shown["effects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "shopify_hold" && e["state"] == "done"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_open_exceptions_by_kind_and_outbox_counts() {
    let mut s = spawn_operated().await;
    s.sandbox.create_order(new_order(&[("LAMP-9", 1)]));
    s.sandbox.create_order(new_order(&[("SAMPLE-1", 1)]));
    s.settle().await;
    let text = s
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "# TYPE shipgate_exceptions_open gauge",
        "shipgate_exceptions_open{kind=\"unmapped_sku\"} 1",
        "shipgate_exceptions_open{kind=\"stockout\"} 0",
        "shipgate_exceptions_open{kind=\"supplier_rejected\"} 0",
        "shipgate_exceptions_open{kind=\"substitute_offered\"} 0",
        "shipgate_exceptions_open{kind=\"cancelled_after_submission\"} 0",
        "# TYPE shipgate_outbox_effects gauge",
        // The unmapped SKU's hold and the depot's submission.
        "shipgate_outbox_effects{state=\"done\"} 2",
        "shipgate_outbox_effects{state=\"pending\"} 0",
        "shipgate_outbox_effects{state=\"failed\"} 0",
        "shipgate_outbox_effects{state=\"superseded\"} 0",
        "# TYPE shipgate_plan_queue_depth gauge",
        "shipgate_plan_queue_depth 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from:\n{text}"
        );
    }
    assert!(text.contains("# HELP shipgate_exceptions_open "));
    let failed = s.cli_ok(&["outbox", "list", "--failed", "--json"]).await;
    assert_eq!(serde_json::from_str::<Value>(&failed).unwrap(), json!([]));
    let all: Value = serde_json::from_str(&s.cli_ok(&["outbox", "list", "--json"]).await).unwrap();
    let newest: Value = serde_json::from_str(
        &s.cli_ok(&["outbox", "list", "--limit", "1", "--json"])
            .await,
    )
    .unwrap();
    assert_eq!(newest, json!([all[0].clone()]), "newest first");
    assert!(all[0]["id"].as_u64() > all[1]["id"].as_u64());
    let table = s.cli_ok(&["outbox", "list"]).await;
    assert!(table.contains("shopify_hold") && table.contains("supplier_submission"));
    assert!(table.contains("2 effect(s)"), "{table}");
    s.stop().await;
}

/// A receipt's SHA-256, as an operator would compute it with `sha256sum`.
fn digest(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn rfc3339(ms: i64) -> String {
    shipgate::order::Timestamp::from_unix_ms(ms).text
}

/// The whole physical path entered by hand: a failed check holds the order, a bad one is
/// refused with its reasons, a passing one (with the daemon stopped) closes the exception; the
/// packing, the label and a manual acceptance with evidence make the shipment ready, and only
/// then is it fulfilled in Shopify, which the write-back metrics count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_entered_by_hand_makes_a_shipment_ready_and_it_is_written_back() {
    let mut s = spawn_operated().await;
    let order = s.sandbox.create_order(new_order(&[("KIT-1", 2)]));
    s.settle().await;
    let (shipment, line) = s.shipment_of(&order);
    s.confirm(&shipment, &line, "KIT-1", 2).await;
    let shown = s.get_json(&format!("/api/shipments/{shipment}")).await;
    assert_eq!(shown["status"], "awaiting_check", "{shown}");

    // A failed check through the API: the shipment is held by a check_failed exception.
    let failed = s.check_file("qc-fail", &shipment, (&line, "KIT-1", 2, 0), "fail");
    let check: Value = serde_json::from_str(&std::fs::read_to_string(&failed).unwrap()).unwrap();
    let r = s
        .post(&format!("/api/shipments/{shipment}/check"))
        .json(&json!({"check": check, "by": "qc-desk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let recorded: Value = r.json().await.unwrap();
    assert_eq!(recorded["type"], "check_reported");
    assert_eq!(recorded["supplier"], "charlie", "found from the shipment");
    assert_eq!(recorded["result"], "recorded");
    assert_eq!(recorded["status"], "held", "{recorded}");
    assert_eq!(recorded["open_exceptions"][0]["kind"], "check_failed");
    s.settle().await;
    assert_eq!(s.holds(&order).len(), 1, "the failed check holds the order");

    // A check its own findings contradict is refused with the reasons, one line, both ways.
    let contradicted = s.check_file("qc-bad", &shipment, (&line, "KIT-1", 2, 1), "pass");
    let refused = s
        .cli_fails(&["check", "record", &shipment, "--file", &contradicted])
        .await;
    assert!(
        refused.contains(&format!("the check of shipment {shipment} is refused"))
            && refused.contains("quantity_passed"),
        "{refused}"
    );
    let check: Value =
        serde_json::from_str(&std::fs::read_to_string(&contradicted).unwrap()).unwrap();
    let r = s
        .post(&format!("/api/shipments/{shipment}/check"))
        .json(&json!({"check": check}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        format!("shipgate: {}", body["error"].as_str().unwrap()),
        refused
    );
    let r = s
        .post("/api/shipments/SG-0000000000/check")
        .json(&json!({"check": check}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let missing = s
        .cli_fails(&["check", "record", "SG-0000000000", "--file", &contradicted])
        .await;
    assert_eq!(missing, "shipgate: no shipment SG-0000000000");
    let unreadable = s
        .cli_fails(&[
            "check",
            "record",
            &shipment,
            "--file",
            "/nonexistent/check.json",
        ])
        .await;
    assert!(
        unreadable.contains("cannot read /nonexistent/check.json"),
        "{unreadable}"
    );

    // With the daemon stopped, a passing check is recorded in the store and closes the
    // exception; its hold is released when the daemon is back.
    s.stop().await;
    assert_eq!(
        s.cli_fails(&["check", "record", &shipment, "--file", &contradicted])
            .await,
        refused,
        "the store refuses it in the same words"
    );
    let passed = s.check_file("qc-pass", &shipment, (&line, "KIT-1", 2, 2), "pass");
    let out = s
        .cli(&[
            "check", "record", &shipment, "--file", &passed, "--by", "li",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("the daemon is not running"));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("recorded: check_reported manual-check-")
            && text.contains(&format!("shipment {shipment} is now awaiting_packing")),
        "{text}"
    );
    let again = s
        .cli_ok(&["check", "record", &shipment, "--file", &passed, "--json"])
        .await;
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(
        again["result"], "already_recorded",
        "the same file is the same check"
    );

    // Packing on the store: bad lines are refused by name, a good parcel is recorded.
    let photo = format!("sha256:{}=packed.jpg", digest("photo of the packed parcel"));
    for (args, expected) in [
        (
            vec!["--line", "KIT-1=two"],
            "--line `KIT-1=two`: the quantity".to_string(),
        ),
        (
            vec!["--line", "LAMP-1=2"],
            format!("line `LAMP-1` is not in shipment {shipment}"),
        ),
        (
            vec!["--line", "KIT-1=2", "--photo", "packed.jpg"],
            "must start with sha256:".to_string(),
        ),
    ] {
        let mut command = vec!["pack", "record", &shipment, "--parcel", "P1"];
        command.extend(args);
        let bad = s.cli_fails(&command).await;
        assert!(bad.contains(&expected), "{bad}");
    }
    let packed = s
        .cli_ok(&[
            "pack",
            "record",
            &shipment,
            "--parcel",
            "P1",
            "--line",
            "KIT-1=2",
            "--weight-grams",
            "800",
            "--dimensions-cm",
            "30x20x10",
            "--photo",
            &photo,
        ])
        .await;
    assert!(packed.contains("now awaiting_label"), "{packed}");

    // The label through the running daemon's CLI.
    s.start().await;
    s.settle().await;
    assert!(
        s.holds(&order).is_empty(),
        "the passing check released the hold"
    );
    let number = "1ZMANUAL0000000001";
    let labelled: Value = serde_json::from_str(
        &s.cli_ok(&[
            "parcel",
            "label",
            &shipment,
            "--parcel",
            "P1",
            "--carrier",
            "UPS",
            "--number",
            number,
            "--json",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(labelled["type"], "label_created");
    assert_eq!(labelled["status"], "awaiting_acceptance");
    let r = s
        .post("/api/shipments/SG-0000000000/label")
        .json(&json!({"carrier": "UPS", "tracking_number": number}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Acceptance by hand needs evidence; the latch still judges it.
    let receipt = digest("UPS counter receipt");
    // Now: the order was placed moments ago, and no scan before it counts.
    let at = rfc3339(shipgate::delivery::now_ms() as i64);
    let refused = s
        .cli_fails(&[
            "parcel",
            "accept",
            number,
            "--at",
            &at,
            "--note",
            "handed over at the counter",
        ])
        .await;
    assert!(refused.contains("needs evidence"), "{refused}");
    let refused = s
        .cli_fails(&[
            "parcel",
            "accept",
            number,
            "--at",
            &at,
            "--evidence",
            "sha256:1234",
            "--note",
            "x",
        ])
        .await;
    assert!(refused.contains("64 hex digits"), "{refused}");
    let r = s
        .post(&format!("/api/tracking/{number}/accept"))
        .json(&json!({"at": at, "evidence": [], "note": "handed over"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("needs evidence"));
    let too_early = rfc3339(shipgate::delivery::now_ms() as i64 - 3 * 86_400_000);
    let early: Value = serde_json::from_str(
        &s.cli_ok(&[
            "parcel",
            "accept",
            number,
            "--at",
            &too_early,
            "--evidence",
            &format!("sha256:{receipt}"),
            "--note",
            "receipt misdated",
            "--json",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(early["result"], "recorded");
    assert_eq!(early["shipments"][0]["accepted"], false, "{early}");
    assert_eq!(early["shipments"][0]["status"], "awaiting_acceptance");
    assert!(
        early["shipments"][0]["why"]
            .as_str()
            .unwrap()
            .contains("timed more than a day before the label"),
        "{early}"
    );
    // Within the label's day of slack, but before the order was placed: not this parcel's.
    let before_order = rfc3339(shipgate::delivery::now_ms() as i64 - 3_600_000);
    let stale: Value = serde_json::from_str(
        &s.cli_ok(&[
            "parcel",
            "accept",
            number,
            "--at",
            &before_order,
            "--evidence",
            &format!("sha256:{receipt}"),
            "--note",
            "an old receipt for this number",
            "--json",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(stale["shipments"][0]["accepted"], false, "{stale}");
    assert!(
        stale["shipments"][0]["why"]
            .as_str()
            .unwrap()
            .contains("timed before the order"),
        "{stale}"
    );
    let evidence = format!("sha256:{receipt}=https://files.example/receipt.jpg");
    let accept = [
        "parcel",
        "accept",
        number,
        "--at",
        &at,
        "--location",
        "Shenzhen UPS counter",
        "--evidence",
        &evidence,
        "--note",
        "counter clerk scanned it",
        "--by",
        "alice",
    ];
    let accepted = s.cli_ok(&accept).await;
    assert!(
        accepted.starts_with("recorded: manual acceptance manual:"),
        "{accepted}"
    );
    assert!(
        accepted.contains(&format!(
            "shipment {shipment} is now ready: accepted; acceptance scan (manual)"
        )),
        "{accepted}"
    );
    let retried = s.cli_ok(&accept).await;
    assert!(retried.starts_with("already recorded"), "{retried}");
    // The misdated receipt, the one from before the order, and the counter's: each is kept as
    // evidence, whether or not it counts.
    let scans = s.carrier_events(&shipment);
    assert_eq!(scans.len(), 3, "{scans:?}");
    let scan = scans.iter().find(|e| e.location.is_some()).unwrap();
    assert_eq!(scan.provider, shipgate::tracking::Provider::Manual);
    assert_eq!(scan.carrier, "UPS", "from the label");
    assert!(scan.acceptance_scan);
    assert_eq!(
        scan.evidence,
        vec![format!(
            "sha256:{receipt}=https://files.example/receipt.jpg"
        )]
    );
    assert!(scan.raw_text.contains("operator alice") && scan.raw_text.contains(&receipt));

    // Only now is the shipment fulfilled in Shopify, with the tracking number; the write-back
    // metrics count it with the check's hold and its release.
    s.settle().await;
    let fulfillments = s.sandbox.fulfillments(&order);
    assert_eq!(fulfillments.len(), 1, "{fulfillments:?}");
    assert!(fulfillments[0]["trackingInfo"].to_string().contains(number));
    let shown = s.get_json(&format!("/api/shipments/{shipment}")).await;
    assert_eq!(shown["status"], "fulfilled", "{shown}");
    assert!(
        shown["evidence"].as_array().unwrap().iter().any(|e| e["kind"] == "carrier_event"
            && e["what"].as_str().unwrap().contains(&receipt)),
        "the evidence shows in the shipment: {shown}"
    );
    let metrics = s
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "# TYPE shipgate_write_backs gauge",
        "shipgate_write_backs{action=\"shopify_fulfillment\",state=\"done\"} 1",
        "shipgate_write_backs{action=\"shopify_fulfillment\",state=\"pending\"} 0",
        "shipgate_write_backs{action=\"shopify_fulfillment\",state=\"failed\"} 0",
        "shipgate_write_backs{action=\"shopify_hold\",state=\"done\"} 1",
        "shipgate_write_backs{action=\"shopify_release_hold\",state=\"done\"} 1",
        // The manual acceptance, posted as CARRIER_PICKED_UP on the new fulfillment.
        "shipgate_write_backs{action=\"shopify_fulfillment_event\",state=\"done\"} 1",
        "shipgate_write_backs{action=\"shopify_tracking_update\",state=\"pending\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing from:\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("shipgate_write_backs{action=\"supplier_"),
        "supplier messages are not write-backs"
    );
    s.stop().await;
}

/// An acceptance recorded by hand before any label carries the number waits for the label and
/// counts once it arrives; here every command runs on the store, except the check and the
/// packing, which go through the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acceptance_before_its_label_waits_for_it_on_the_store() {
    let mut s = spawn_operated().await;
    let order = s.sandbox.create_order(new_order(&[("KIT-2", 1)]));
    s.settle().await;
    let (shipment, line) = s.shipment_of(&order);
    s.confirm(&shipment, &line, "KIT-2", 1).await;
    let passed = s.check_file("qc-1", &shipment, (&line, "KIT-2", 1, 1), "pass");
    let checked: Value = serde_json::from_str(
        &s.cli_ok(&["check", "record", &shipment, "--file", &passed, "--json"])
            .await,
    )
    .unwrap();
    assert_eq!(checked["status"], "awaiting_packing", "{checked}");
    let numeric = line.rsplit('/').next().unwrap();
    let parcels = s.dir.path().join("parcels.json");
    std::fs::write(
        &parcels,
        json!({"parcels": [{"parcel_id": "BOX-1", "lines": [{"line_id": numeric, "quantity": 1}],
            "weight_grams": 350}]})
        .to_string(),
    )
    .unwrap();
    let packed = s
        .cli_ok(&[
            "pack",
            "record",
            &shipment,
            "--file",
            parcels.to_str().unwrap(),
        ])
        .await;
    assert!(packed.contains("now awaiting_label"), "{packed}");
    let r = s
        .post(&format!("/api/shipments/{shipment}/pack"))
        .json(&json!({"parcels": [{"parcel_id": "BOX-1", "lines": [{"line_id": numeric, "quantity": 1}],
            "weight_grams": 350}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["result"], "already_recorded",
        "the same packing, by content"
    );

    s.stop().await;
    let number = "LX000000001CN";
    let receipt = format!("sha256:{}", digest("post office receipt"));
    // Now: the order was placed moments ago, and no scan before it counts.
    let at = rfc3339(shipgate::delivery::now_ms() as i64);
    let refused = s
        .cli_fails(&[
            "parcel",
            "accept",
            number,
            "--at",
            &at,
            "--note",
            "no receipt",
        ])
        .await;
    assert!(
        refused.starts_with("shipgate: a manual acceptance needs evidence"),
        "{refused}"
    );
    let waiting = s
        .cli_ok(&[
            "parcel",
            "accept",
            number,
            "--at",
            &at,
            "--evidence",
            &receipt,
            "--note",
            "receipt from the post office",
        ])
        .await;
    assert!(
        waiting.starts_with(&format!("no label carries {number} yet;"))
            && waiting.contains("kept until a label arrives"),
        "{waiting}"
    );
    let labelled = s
        .cli_ok(&[
            "parcel",
            "label",
            &shipment,
            "--carrier",
            "China Post",
            "--number",
            number,
            "--url",
            "https://track.example/LX000000001CN",
        ])
        .await;
    assert!(
        labelled.contains(&format!("shipment {shipment} is now ready")),
        "the waiting acceptance came in with the label: {labelled}"
    );
    let missing = s
        .cli_fails(&[
            "parcel",
            "label",
            "SG-0000000000",
            "--carrier",
            "UPS",
            "--number",
            "1Z1",
        ])
        .await;
    assert_eq!(missing, "shipgate: no shipment SG-0000000000");

    // Back with the daemon, the shipment is written back to Shopify.
    s.start().await;
    s.settle().await;
    let fulfillments = s.sandbox.fulfillments(&order);
    assert_eq!(fulfillments.len(), 1, "{fulfillments:?}");
    assert!(fulfillments[0]["trackingInfo"].to_string().contains(number));
    let r = s
        .post(&format!("/api/tracking/{number}/accept"))
        .json(
            &json!({"at": at, "evidence": [receipt], "note": "receipt from the post office",
            "by": "tester"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .post("/api/tracking/LXNOLABEL0CN/accept")
        .json(&json!({"at": at, "evidence": [receipt], "note": "receipt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "kept until a label carries it");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["result"], "waiting");
    assert_eq!(body["shipments"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn the_operator_endpoints_need_the_bearer_token() {
    let app = spawn_app().await;
    let admin = format!("http://{}", app.daemon.admin_addr());
    let client = reqwest::Client::new();
    let endpoints = [
        (reqwest::Method::GET, "/api/exceptions"),
        (reqwest::Method::GET, "/api/exceptions/EX-0000000001"),
        (
            reqwest::Method::POST,
            "/api/exceptions/EX-0000000001/decide",
        ),
        (reqwest::Method::GET, "/api/suppliers/depot/export"),
        (
            reqwest::Method::POST,
            "/api/suppliers/depot/import?file_name=a.csv",
        ),
        (reqwest::Method::POST, "/api/suppliers/depot/events"),
        (reqwest::Method::GET, "/api/shipments/SG-0000000001"),
        (reqwest::Method::GET, "/api/outbox"),
        (reqwest::Method::POST, "/api/shipments/SG-0000000001/check"),
        (reqwest::Method::POST, "/api/shipments/SG-0000000001/pack"),
        (reqwest::Method::POST, "/api/shipments/SG-0000000001/label"),
        (reqwest::Method::POST, "/api/tracking/1Z0000/accept"),
    ];
    for (method, path) in endpoints {
        for (token, what) in [
            (None, "without a token"),
            (Some("not-the-token"), "with a wrong token"),
        ] {
            let mut request = client
                .request(method.clone(), format!("{admin}{path}"))
                .body("{}");
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 401, "{method} {path} {what}");
        }
        // With the token, these ids and suppliers do not exist here (no supplier is
        // configured): the answer is a clean 404, never an internal error.
        let r = client
            .request(method.clone(), format!("{admin}{path}"))
            .bearer_auth("test-admin-token")
            .body("{\"decision\":\"cancel\"}")
            .send()
            .await
            .unwrap();
        let expected = if path == "/api/exceptions" || path == "/api/outbox" {
            200
        } else if path.ends_with("/check")
            || path.ends_with("/pack")
            || path.ends_with("/label")
            || path.ends_with("/accept")
        {
            // A body that is not the command's is refused before anything is looked up.
            400
        } else {
            404
        };
        assert_eq!(r.status(), expected, "{method} {path} with the token");
    }
    app.daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_configuration_whose_admin_token_the_daemon_refuses_is_told_so() {
    let mut s = spawn_operated().await;
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    assert!(text.contains("ops-admin-token"), "{text}");
    let other = s.config_path.with_file_name("other.toml");
    std::fs::write(
        &other,
        text.replace("ops-admin-token", "someone-elses-token"),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_shipgate"))
        .args(["exceptions", "list", "--config"])
        .arg(&other)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("missing or wrong bearer token")
            && stderr.contains("does not take the [admin] token of this configuration")
            && stderr.contains(&format!(
                "http://127.0.0.1:{}",
                s.config.admin.listen.port()
            )),
        "{stderr}"
    );
    s.stop().await;
}
