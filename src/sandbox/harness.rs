//! Configurations for running the daemon on loopback against the sandbox.
//!
//! The demo, the integration tests and the benchmarks all start the daemon on port 0 with inline
//! secrets; they describe what differs (shops, level, limits) and this writes the TOML, which then
//! goes through the same validation as an operator's file.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::{Config, ConfigErrors};

/// How a loopback shop authenticates to its Admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShopAuth {
    /// Webhooks only: the shop is not synced.
    None,
    /// A static access token.
    Token(String),
    /// The client-credentials grant.
    ClientCredentials { id: String, secret: String },
}

/// One shop of a loopback configuration.
#[derive(Debug, Clone)]
pub struct ShopSpec {
    pub domain: String,
    /// Current secret first.
    pub webhook_secrets: Vec<String>,
    /// The sandbox's base URL, for synced shops.
    pub admin_base_url: Option<String>,
    pub auth: ShopAuth,
    pub requests_per_second: u32,
}

impl ShopSpec {
    /// A shop that only receives webhooks.
    pub fn webhooks_only(domain: &str, secrets: &[&[u8]]) -> ShopSpec {
        ShopSpec {
            domain: domain.to_string(),
            webhook_secrets: secrets
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
            admin_base_url: None,
            auth: ShopAuth::None,
            requests_per_second: 1000,
        }
    }

    /// A shop synced against a sandbox at `base_url`.
    pub fn synced(domain: &str, base_url: &str, auth: ShopAuth, secret: &[u8]) -> ShopSpec {
        ShopSpec {
            domain: domain.to_string(),
            webhook_secrets: vec![String::from_utf8_lossy(secret).into_owned()],
            admin_base_url: Some(base_url.to_string()),
            auth,
            requests_per_second: 1000,
        }
    }
}

/// One supplier of a loopback configuration.
#[derive(Debug, Clone)]
pub struct SupplierSpec {
    pub name: String,
    /// `http`, `csv` or `manual`.
    pub adapter: String,
    /// The agent's endpoint (`http` only).
    pub endpoint: Option<String>,
    /// The shared secret (`http` only).
    pub secret: Option<String>,
    pub skus: Vec<String>,
    pub backups: Vec<String>,
    /// `request_timeout_secs` (`http` only; None: the default).
    pub request_timeout_secs: Option<u64>,
}

impl SupplierSpec {
    /// An `http` supplier (a sandbox agent) for these SKU patterns.
    pub fn http(name: &str, endpoint: &str, secret: &[u8], skus: &[&str]) -> SupplierSpec {
        SupplierSpec {
            name: name.into(),
            adapter: "http".into(),
            endpoint: Some(endpoint.into()),
            secret: Some(String::from_utf8_lossy(secret).into_owned()),
            skus: skus.iter().map(|s| s.to_string()).collect(),
            backups: Vec::new(),
            request_timeout_secs: None,
        }
    }

    /// A `csv` or `manual` supplier for these SKU patterns.
    pub fn offline(name: &str, adapter: &str, skus: &[&str]) -> SupplierSpec {
        SupplierSpec {
            name: name.into(),
            adapter: adapter.into(),
            endpoint: None,
            secret: None,
            skus: skus.iter().map(|s| s.to_string()).collect(),
            backups: Vec::new(),
            request_timeout_secs: None,
        }
    }

    /// The same supplier with these backups.
    pub fn with_backups(mut self, backups: &[&str]) -> SupplierSpec {
        self.backups = backups.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// A whole loopback configuration.
#[derive(Debug, Clone)]
pub struct LoopbackConfig {
    pub shops: Vec<ShopSpec>,
    /// The admin token (None: the admin API serves only the probes).
    pub admin_token: Option<String>,
    /// The admin port (0: any free one).
    pub admin_port: u16,
    pub log_level: String,
    /// More TOML lines for `[server]` (limits, timeouts).
    pub server_extra: String,
    /// More TOML sections (e.g. `[sync]`).
    pub extra_sections: String,
    /// Suppliers, in routing order.
    pub suppliers: Vec<SupplierSpec>,
    /// Tracking providers: (provider name, webhook secret).
    pub tracking: Vec<(String, String)>,
}

impl LoopbackConfig {
    /// A configuration with these shops, an admin token and quiet logs.
    pub fn new(shops: Vec<ShopSpec>) -> LoopbackConfig {
        LoopbackConfig {
            shops,
            admin_token: Some("loopback-admin-token".into()),
            admin_port: 0,
            log_level: "warn".into(),
            server_extra: String::new(),
            extra_sections: String::new(),
            suppliers: Vec::new(),
            tracking: Vec::new(),
        }
    }

    /// The TOML text (relative paths: the store and exports live beside the file).
    pub fn toml(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "[server]\nlisten = \"127.0.0.1:0\"\n{}\n[admin]\nlisten = \"127.0.0.1:{}\"",
            self.server_extra, self.admin_port
        );
        if let Some(token) = &self.admin_token {
            let _ = writeln!(out, "token = {{ value = {} }}", quoted(token));
        }
        let _ = writeln!(
            out,
            "[store]\npath = \"store\"\n[compliance]\nexport_dir = \"exports\"\n[log]\nlevel = {}\n{}",
            quoted(&self.log_level),
            self.extra_sections
        );
        for shop in &self.shops {
            let _ = writeln!(out, "[[shops]]\ndomain = {}", quoted(&shop.domain));
            if let Some(base) = &shop.admin_base_url {
                let _ = writeln!(out, "admin_base_url = {}", quoted(base));
            }
            match &shop.auth {
                ShopAuth::None => {}
                ShopAuth::Token(token) => {
                    let _ = writeln!(out, "access_token = {{ value = {} }}", quoted(token));
                }
                ShopAuth::ClientCredentials { id, secret } => {
                    let _ = writeln!(
                        out,
                        "client_id = {}\nclient_secret = {{ value = {} }}",
                        quoted(id),
                        quoted(secret)
                    );
                }
            }
            let secrets: Vec<String> = shop
                .webhook_secrets
                .iter()
                .map(|s| format!("{{ value = {} }}", quoted(s)))
                .collect();
            let _ = writeln!(
                out,
                "webhook_secrets = [{}]\nrequests_per_second = {}",
                secrets.join(", "),
                shop.requests_per_second
            );
        }
        let list = |items: &[String]| {
            items
                .iter()
                .map(|s| quoted(s))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for supplier in &self.suppliers {
            let _ = writeln!(
                out,
                "[[suppliers]]\nname = {}\nadapter = {}\nskus = [{}]\nbackups = [{}]",
                quoted(&supplier.name),
                quoted(&supplier.adapter),
                list(&supplier.skus),
                list(&supplier.backups)
            );
            if let Some(endpoint) = &supplier.endpoint {
                let _ = writeln!(out, "endpoint = {}", quoted(endpoint));
            }
            if let Some(secret) = &supplier.secret {
                let _ = writeln!(out, "secrets = [{{ value = {} }}]", quoted(secret));
            }
            if let Some(timeout) = supplier.request_timeout_secs {
                let _ = writeln!(out, "request_timeout_secs = {timeout}");
            }
        }
        for (provider, secret) in &self.tracking {
            let _ = writeln!(
                out,
                "[[tracking]]\nprovider = {}\nsecrets = [{{ value = {} }}]",
                quoted(provider),
                quoted(secret)
            );
        }
        out
    }

    /// The configuration, validated, with relative paths under `dir`.
    pub fn load(&self, dir: &Path) -> Result<Config, ConfigErrors> {
        Config::from_toml_str(&self.toml(), dir).map(|loaded| loaded.config)
    }
}

/// Lets the daemon, a sandbox Shopify and sandbox agents act on what they have until nothing
/// moves: Shopify's webhooks, the mirror, planning, the outbox at the current clock, and the
/// agents' events. Returns false if it did not settle within `rounds` rounds.
pub async fn settle(
    daemon: &crate::daemon::Daemon,
    shopify: &crate::sandbox::shopify::SandboxShopify,
    agents: &[&crate::sandbox::supplier::SandboxAgent],
    rounds: usize,
) -> anyhow::Result<bool> {
    let workflow = daemon.workflow();
    let moved = || {
        let mut marks = vec![workflow.writes() as usize];
        marks.extend(agents.iter().map(|a| a.events_sent().len()));
        marks
    };
    for _ in 0..rounds {
        let before = moved();
        shopify.flush_webhooks().await;
        daemon.wait_idle().await;
        daemon.sync_now(shopify.shop()).await?;
        workflow.wait_quiet().await?;
        for agent in agents {
            agent.flush_events().await;
        }
        daemon.wait_idle().await;
        workflow.wait_quiet().await?;
        if moved() == before {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A `check_reported` event with a whole check recorded now: per line (line item id, SKU
/// found, quantity checked, quantity passed), and `result` (`pass`, `fail`, …). What an agent or
/// an operator reports; the demo and the tests use it instead of writing the JSON by hand.
pub fn check_event(
    id: &str,
    shipment_id: &str,
    lines: &[(&str, &str, i64, i64)],
    result: &str,
) -> crate::suppliers::SupplierEvent {
    check_event_at(
        id,
        shipment_id,
        lines,
        result,
        crate::delivery::now_ms() as i64,
    )
}

/// [`check_event`] made at `at_ms` (for runs on a manual clock that moved on).
pub fn check_event_at(
    id: &str,
    shipment_id: &str,
    lines: &[(&str, &str, i64, i64)],
    result: &str,
    at_ms: i64,
) -> crate::suppliers::SupplierEvent {
    let now = crate::order::Timestamp::from_unix_ms(at_ms).text;
    let lines: Vec<serde_json::Value> = lines
        .iter()
        .map(|(line_id, sku, checked, passed)| {
            serde_json::json!({"line_id": line_id, "found_sku": sku,
                "quantity_checked": checked, "quantity_passed": passed})
        })
        .collect();
    let json = serde_json::json!({
        "id": id, "type": "check_reported", "shipment_id": shipment_id, "occurred_at": now,
        "check": {"inspector": {"name": "Li Wei", "organisation": "Sandbox QC"}, "checked_at": now,
            "method": "every_unit", "lines": lines, "result": result,
            "disposition": if result == "fail" { "hold" } else { "ship" }}
    });
    crate::suppliers::SupplierEvent::from_json(json.to_string().as_bytes())
        .expect("the sandbox builds valid check events")
}

/// A TOML basic string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_file_loads_with_the_shops_as_described() {
        let dir = tempfile::tempdir().unwrap();
        let config = LoopbackConfig::new(vec![
            ShopSpec::webhooks_only("a.myshopify.com", &[b"new", b"old \"quoted\""]),
            ShopSpec::synced(
                "b.myshopify.com",
                "http://127.0.0.1:9",
                ShopAuth::ClientCredentials {
                    id: "id".into(),
                    secret: "s".into(),
                },
                b"k",
            ),
        ])
        .load(dir.path())
        .unwrap();
        assert_eq!(config.shops.len(), 2);
        assert_eq!(
            config.shops[0].webhook_secrets[1].expose(),
            "old \"quoted\""
        );
        assert_eq!(
            config.shops[1].graphql_endpoint,
            "http://127.0.0.1:9/admin/api/2026-10/graphql.json"
        );
        assert_eq!(config.store.path, dir.path().join("store"));
        assert_eq!(config.server.listen.port(), 0);
    }
}
