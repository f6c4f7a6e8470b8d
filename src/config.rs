//! The daemon's configuration: one TOML file (SPEC §8), validated and with its secrets resolved.
//!
//! The file is parsed into a plain `toml::Table` and walked by a small hand-written validator
//! rather than deserialized with serde derive, because serde stops at the first mistake while an
//! operator running `shipgate config check` wants every mistake in one pass, each named by its
//! full key path (`shops[1].webhook_secrets[0]`). Secrets are resolved while loading, so a daemon
//! that starts has every credential it needs and a missing one is reported before anything
//! listens; their values are held in `secrecy` boxes and never appear in `Debug` output or in
//! problem messages.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};
use toml::{Table, Value};

/// The Shopify Admin API version a shop uses when its `api_version` key is absent.
pub const DEFAULT_API_VERSION: &str = "2026-10";

const KIB: i64 = 1024;
const MIB: i64 = 1024 * KIB;

const DEFAULT_SERVER_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080));
const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8081));

/// Secret files larger than this are refused: a real token is a few hundred bytes, so a large
/// file almost certainly means the wrong path, and reading it whole would only waste memory.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

const TOP_KEYS: &[&str] = &[
    "server",
    "admin",
    "store",
    "compliance",
    "log",
    "sync",
    "shops",
    "suppliers",
    "workflow",
    "tracking",
];
const TRACKING_KEYS: &[&str] = &["provider", "secrets"];
const SYNC_KEYS: &[&str] = &[
    "poll_interval_secs",
    "poll_overlap_secs",
    "initial_lookback_days",
    "reconcile_interval_hours",
];
const SERVER_KEYS: &[&str] = &[
    "listen",
    "body_limit",
    "header_read_timeout_ms",
    "body_read_timeout_ms",
    "shutdown_grace_ms",
];
const ADMIN_KEYS: &[&str] = &["listen", "token"];
const STORE_KEYS: &[&str] = &[
    "path",
    "cache_capacity_mb",
    "flush_interval_ms",
    "delivery_retention_days",
];
const COMPLIANCE_KEYS: &[&str] = &["export_dir"];
const LOG_KEYS: &[&str] = &["format", "level"];
const SHOP_KEYS: &[&str] = &[
    "domain",
    "api_version",
    "access_token",
    "client_id",
    "client_secret",
    "webhook_secrets",
    "admin_base_url",
    "graphql_endpoint",
    "requests_per_second",
    "notify_customer",
];
const SECRET_KEYS: &[&str] = &["file", "env", "credential", "value"];
const SUPPLIER_KEYS: &[&str] = &[
    "name",
    "adapter",
    "endpoint",
    "secrets",
    "skus",
    "backups",
    "request_timeout_secs",
];
const WORKFLOW_KEYS: &[&str] = &[
    "no_acceptance_business_days",
    "stalled_business_days",
    "hold_on_exceptions",
    "notify_merchant",
    "notify_customer",
    "route_orders_created_after",
];

/// The longest supplier name: it becomes a URL path segment and a field of every shipment
/// record, so it stays short enough to read in a table.
const MAX_SUPPLIER_NAME_LEN: usize = 32;
/// How long an http supplier gets to answer a request when `request_timeout_secs` is absent.
const DEFAULT_SUPPLIER_TIMEOUT_SECS: i64 = 20;

/// The whole validated configuration of one shipgate daemon.
#[derive(Debug, Clone)]
pub struct Config {
    /// The public listener that receives webhooks from Shopify, suppliers and tracking providers.
    pub server: ServerConfig,
    /// The admin API listener (CLI, metrics, health) and its bearer token.
    pub admin: AdminConfig,
    /// Where and how the embedded sled store keeps its data.
    pub store: StoreConfig,
    /// Where compliance webhooks (customer data requests) write their exports.
    pub compliance: ComplianceConfig,
    /// How the daemon logs.
    pub log: LogConfig,
    /// How the order mirror polls Shopify.
    pub sync: SyncConfig,
    /// The connected shops; never empty in a loaded config.
    pub shops: Vec<ShopConfig>,
    /// The suppliers in config order, which is also routing order: the first whose SKU
    /// patterns match a line ships it. Empty when none are configured.
    pub suppliers: Vec<SupplierConfig>,
    /// How exceptions act on Shopify.
    pub workflow: WorkflowConfig,
    /// Carrier-tracking providers whose webhooks are received, with their secrets.
    pub tracking: Vec<TrackingConfig>,
}

/// One tracking provider (`[[tracking]]`): its webhooks are received at
/// `/webhooks/tracking/<provider>` and verified with any of its secrets.
#[derive(Debug, Clone)]
pub struct TrackingConfig {
    /// `aftership` or `17track`.
    pub provider: String,
    /// The current secret first (AfterShip's webhook secret, 17TRACK's security key).
    pub secrets: Vec<Secret>,
}

/// Settings of the public webhook listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address the public listener binds to.
    pub listen: SocketAddr,
    /// Largest accepted webhook body in bytes; larger deliveries are answered 413 before reading.
    pub body_limit: usize,
    /// How long a client may take to send the request headers.
    pub header_read_timeout: Duration,
    /// How long a client may take to send the request body.
    pub body_read_timeout: Duration,
    /// How long in-flight requests may run on after shutdown has begun.
    pub shutdown_grace: Duration,
}

/// Settings of the admin API listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address the admin API binds to (loopback by default).
    pub listen: SocketAddr,
    /// Bearer token for the admin API; `None` disables everything except `/healthz` and `/readyz`.
    pub token: Option<Secret>,
}

/// Settings of the embedded sled store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory holding the sled database.
    pub path: PathBuf,
    /// Upper bound of sled's page cache in bytes.
    pub cache_capacity_bytes: u64,
    /// How often writes that nobody waits on are flushed in the background.
    pub flush_interval: Duration,
    /// Processed webhook deliveries (raw payloads, customer data included) are deleted this long
    /// after they were received. None keeps them until an erasure asks.
    pub delivery_retention: Option<Duration>,
}

/// How the order mirror keeps up with Shopify besides webhooks.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// How often each shop is scanned for changed orders (webhooks can be lost).
    pub poll_interval: Duration,
    /// How far before the checkpoint each scan starts, so late-indexed changes are not missed.
    pub poll_overlap: Duration,
    /// How far back the first scan of a shop looks.
    pub initial_lookback: Duration,
    /// How often the daemon reconciles each shop with `--repair` (None: never).
    pub reconcile_interval: Option<Duration>,
}

/// Settings for the GDPR/CCPA compliance webhooks.
#[derive(Debug, Clone)]
pub struct ComplianceConfig {
    /// Directory where `customers/data_request` exports are written.
    pub export_dir: PathBuf,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal or the journal.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// A `tracing` EnvFilter directive string such as `info,shipgate=debug`.
    pub level: String,
}

/// One connected Shopify store.
#[derive(Debug, Clone)]
pub struct ShopConfig {
    /// The shop's domain, lowercase, e.g. `example.myshopify.com`.
    pub domain: String,
    /// The Admin API version, `YYYY-MM`.
    pub api_version: String,
    /// How shipgate authenticates to the Admin API.
    pub credentials: ShopCredentials,
    /// Webhook HMAC secrets: the first is current, the others are accepted during rotation.
    pub webhook_secrets: Vec<Secret>,
    /// Base URL of the shop's Admin API without trailing slash: the override or `https://<domain>`.
    pub admin_base_url: String,
    /// The GraphQL endpoint: the override or `<admin_base_url>/admin/api/<api_version>/graphql.json`.
    pub graphql_endpoint: String,
    /// Cap on this shop's Admin API requests per second.
    pub requests_per_second: u32,
    /// Whether Shopify emails the customer when shipgate creates a fulfillment.
    pub notify_customer: bool,
}

impl ShopConfig {
    /// The OAuth token endpoint used by the client-credentials grant.
    pub fn oauth_token_url(&self) -> String {
        format!("{}/admin/oauth/access_token", self.admin_base_url)
    }
}

/// How shipgate authenticates to a shop's Admin API.
#[derive(Debug, Clone)]
pub enum ShopCredentials {
    /// No credentials: the shop can receive webhooks but is never synced.
    None,
    /// A static Admin API access token.
    AccessToken(Secret),
    /// The client-credentials grant; tokens are fetched and refreshed before they expire.
    ClientCredentials {
        /// The app's client id (not secret).
        client_id: String,
        /// The app's client secret.
        client_secret: Secret,
    },
}

/// One supplier or sourcing agent (SPEC §3, §6): how shipgate reaches it and which SKUs it ships.
#[derive(Debug, Clone)]
pub struct SupplierConfig {
    /// The supplier's name, `[a-z0-9_-]{1,32}`: the last segment of its webhook URL
    /// (`/webhooks/suppliers/<name>`) and the supplier field of its shipment records.
    pub name: String,
    /// The channel shipgate uses to reach it, with that channel's settings.
    pub adapter: AdapterConfig,
    /// SKU patterns as written (`*` any run, `?` one character, case-insensitive); may be empty
    /// for a supplier that only serves as another's backup. Always valid in a loaded config.
    pub skus: Vec<String>,
    /// Names of the suppliers that take over, in this order, when this one rejects a line or is
    /// short. Each names another configured supplier, none twice, never this one.
    pub backups: Vec<String>,
}

impl SupplierConfig {
    /// Which kind of adapter this supplier uses.
    pub fn adapter_kind(&self) -> AdapterKind {
        self.adapter.kind()
    }
}

impl fmt::Display for SupplierConfig {
    /// One line for `shipgate config check`: name, channel, patterns and backups. Secrets are
    /// shown by source only, and the endpoint cannot carry credentials (validation refuses user
    /// info in URLs), so the line is safe to print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.name, self.adapter.kind())?;
        if let AdapterConfig::Http(http) = &self.adapter {
            let sources: Vec<String> = http
                .secrets
                .iter()
                .map(|s| s.source().to_string())
                .collect();
            write!(
                f,
                " {}, timeout {}s, secrets: {}",
                http.endpoint,
                http.request_timeout.as_secs(),
                sources.join(", ")
            )?;
        }
        f.write_str(")")?;
        if self.skus.is_empty() {
            f.write_str(" skus: none")?;
        } else {
            write!(f, " skus: {}", self.skus.join(" "))?;
        }
        if self.backups.is_empty() {
            f.write_str("; backups: none")
        } else {
            write!(f, "; backups: {}", self.backups.join(", "))
        }
    }
}

/// The kind of channel a supplier is reached through (SPEC §6, docs/suppliers.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdapterKind {
    /// Signed HTTPS messages both ways.
    Http,
    /// Spreadsheets exported for the agent and imported back.
    Csv,
    /// Every event recorded by an operator through the CLI or admin API.
    Manual,
}

impl AdapterKind {
    /// The name used in the config file and by [`crate::suppliers::SupplierAdapter::kind`].
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterKind::Http => "http",
            AdapterKind::Csv => "csv",
            AdapterKind::Manual => "manual",
        }
    }

    fn parse(text: &str) -> Option<AdapterKind> {
        match text {
            "http" => Some(AdapterKind::Http),
            "csv" => Some(AdapterKind::Csv),
            "manual" => Some(AdapterKind::Manual),
            _ => None,
        }
    }
}

impl fmt::Display for AdapterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A supplier's channel with the settings only that channel has, so that an endpoint or secrets
/// cannot exist for an adapter that would never use them.
#[derive(Debug, Clone)]
pub enum AdapterConfig {
    /// shipgate POSTs signed messages to the agent, who POSTs signed events back.
    Http(HttpSupplierConfig),
    /// Submissions are exported as CSV and the agent's sheet is imported.
    Csv,
    /// An operator records every event.
    Manual,
}

impl AdapterConfig {
    /// Which kind of adapter this is.
    pub fn kind(&self) -> AdapterKind {
        match self {
            AdapterConfig::Http(_) => AdapterKind::Http,
            AdapterConfig::Csv => AdapterKind::Csv,
            AdapterConfig::Manual => AdapterKind::Manual,
        }
    }
}

/// Settings of the `http` adapter.
#[derive(Debug, Clone)]
pub struct HttpSupplierConfig {
    /// The http(s) URL messages are POSTed to; lookups GET `<endpoint>/<key>`.
    pub endpoint: String,
    /// Signing secrets, never empty: the first signs outbound messages, and inbound events are
    /// accepted when signed with any of them, so a secret can be rotated without losing events.
    pub secrets: Vec<Secret>,
    /// How long one request to the agent may take before it counts as "maybe delivered".
    pub request_timeout: Duration,
}

/// How exceptions act on Shopify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowConfig {
    /// Whether an exception whose kind has a Shopify hold reason places a hold on the
    /// fulfillment order (SPEC §3.2), so nobody fulfils it by hand while it is open.
    pub hold_on_exceptions: bool,
    /// The `notifyMerchant` flag of `fulfillmentOrderHold`: whether Shopify also notifies the
    /// merchant about each hold shipgate places.
    pub notify_merchant: bool,
    /// Whether Shopify e-mails the customer the shipping confirmation when shipgate creates a
    /// fulfillment (`notifyCustomer`). Default true.
    pub notify_customer: bool,
    /// Only orders created at or after this instant are routed to suppliers. Unset: those
    /// created after shipgate first planned an order of the shop, so that connecting a store
    /// does not send its backlog (handled elsewhere until then) to suppliers.
    pub route_orders_created_after: Option<crate::order::Timestamp>,
    /// A label the carrier has not accepted this many business days (Monday to Friday, UTC)
    /// after it was created opens a no-carrier-movement exception (SPEC §7). Default 3.
    pub no_acceptance_business_days: u32,
    /// A fulfilled parcel whose tracking has not moved for this many business days opens a
    /// tracking-stalled exception. Default 5.
    pub stalled_business_days: u32,
}

impl Default for WorkflowConfig {
    fn default() -> WorkflowConfig {
        WorkflowConfig {
            hold_on_exceptions: true,
            notify_merchant: false,
            notify_customer: true,
            route_orders_created_after: None,
            no_acceptance_business_days: 3,
            stalled_business_days: 5,
        }
    }
}

/// Where a secret's value came from; safe to print because it never contains the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Read from this file (path resolved against the config file's folder).
    File(PathBuf),
    /// Read from this environment variable.
    Env(String),
    /// Read from this systemd credential in `$CREDENTIALS_DIRECTORY`.
    Credential(String),
    /// Written inline in the config file (tests and demos only).
    Inline,
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(path) => write!(f, "file {}", path.display()),
            SecretSource::Env(name) => write!(f, "env {name}"),
            SecretSource::Credential(name) => write!(f, "credential {name}"),
            SecretSource::Inline => f.write_str("inline"),
        }
    }
}

/// A resolved secret. Debug prints `Secret(<source>, redacted)` e.g. `Secret(env SHIPGATE_X, redacted)`; no Display; the value only through `expose()`.
#[derive(Clone)]
pub struct Secret {
    source: SecretSource,
    value: SecretString,
}

impl Secret {
    /// The secret's value; call it only where the value is used, never to log it.
    pub fn expose(&self) -> &str {
        self.value.expose_secret()
    }

    /// Where the value came from, for messages that must name the secret without revealing it.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// A secret given directly in code, for tests and the demo.
    pub fn inline(value: impl Into<String>) -> Secret {
        let mut value: String = value.into();
        let secret = Secret {
            source: SecretSource::Inline,
            value: SecretString::from(value.as_str()),
        };
        // The copy above lives in the secret box, which zeroizes on drop; wipe the original too.
        value.zeroize();
        secret
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}, redacted)", self.source)
    }
}

/// One mistake (or, among warnings, one doubtful choice) in the config, named by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path such as `shops[0].webhook_secrets[1]`, a `line L, column C` position for syntax
    /// errors, or empty when the problem concerns the whole file.
    pub path: String,
    /// What is wrong and, where possible, how to fix it; never contains a secret value.
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A problem about the whole file (e.g. it cannot be read) has no key to point at, and a
        // leading ": " would only look like a formatting bug.
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem that made a config file unusable; Display lists one per line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", lines(.problems))]
pub struct ConfigErrors {
    /// The problems, in the order the file was walked.
    pub problems: Vec<Problem>,
}

fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A successfully loaded config together with the warnings an operator should still see.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated config with all secrets resolved.
    pub config: Config,
    /// Doubtful but acceptable choices, e.g. inline secrets or a shop without credentials.
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Reads, validates and resolves the config file at `path`; relative paths inside it are
    /// resolved against the file's folder.
    pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            problems: vec![Problem::new(
                "",
                format!("cannot read config file {}: {e}", path.display()),
            )],
        })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // An absolute base keeps the store path valid even if the process changes its working
        // directory later; `absolute` does not touch the file system, so it cannot fail on a
        // folder we just read a file from.
        let base_dir = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
        Config::from_toml_str(&text, &base_dir)
    }

    /// Validates and resolves config text; relative paths inside it are resolved against `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Loaded, ConfigErrors> {
        let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from);
        let env = SecretEnv {
            var: &process_var,
            credentials_dir: credentials_dir.as_deref(),
        };
        parse(text, base_dir, &env)
    }

    /// The shop with this domain, compared case-insensitively as Shopify's headers may differ in case.
    pub fn shop(&self, domain: &str) -> Option<&ShopConfig> {
        self.shops
            .iter()
            .find(|shop| shop.domain.eq_ignore_ascii_case(domain))
    }

    /// The supplier with this name. Names are validated lowercase, so the comparison is exact:
    /// `/webhooks/suppliers/Acme` names no supplier rather than a look-alike.
    pub fn supplier(&self, name: &str) -> Option<&SupplierConfig> {
        self.suppliers.iter().find(|supplier| supplier.name == name)
    }

    /// What `shipgate config check` prints after a successful load: the counts, then one
    /// indented line per supplier in routing order, so an operator sees at a glance which
    /// supplier receives which SKUs and who backs it up. Secrets appear by source only.
    pub fn summary(&self) -> String {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        let mut text = format!(
            "{}, {}",
            plural(self.shops.len(), "shop"),
            plural(self.suppliers.len(), "supplier")
        );
        for supplier in &self.suppliers {
            text.push_str(&format!("\n  supplier {supplier}"));
        }
        text
    }
}

/// Where secrets come from besides the config file. It is a parameter rather than a direct read
/// of the process environment so that tests, which run in parallel in one process, can supply
/// their own variables and credentials directory without mutating shared global state.
struct SecretEnv<'a> {
    var: &'a dyn Fn(&str) -> Option<OsString>,
    credentials_dir: Option<&'a Path>,
}

fn process_var(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

fn parse(text: &str, base_dir: &Path, env: &SecretEnv<'_>) -> Result<Loaded, ConfigErrors> {
    let root = match text.parse::<Table>() {
        Ok(root) => root,
        Err(err) => {
            return Err(ConfigErrors {
                problems: vec![syntax_problem(text, &err)],
            });
        }
    };
    let mut walker = Walker {
        base_dir,
        env,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let config = walker.config(&root);
    if walker.errors.is_empty() {
        Ok(Loaded {
            config,
            warnings: walker.warnings,
        })
    } else {
        Err(ConfigErrors {
            problems: walker.errors,
        })
    }
}

/// Turns a TOML syntax error into a problem located by line and column, because a file that does
/// not parse has no key paths yet.
fn syntax_problem(text: &str, err: &toml::de::Error) -> Problem {
    let path = match err.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("line {line}, column {column}")
        }
        None => String::new(),
    };
    Problem::new(path, err.message().trim())
}

/// Walks the parsed table, collecting every problem instead of stopping at the first. Each
/// method returns a usable value (a default or placeholder when the input was bad) so that the
/// walk can go on; the config is only handed out when no error was recorded.
struct Walker<'a> {
    base_dir: &'a Path,
    env: &'a SecretEnv<'a>,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Walker<'_> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem::new(path, message));
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem::new(path, message));
    }

    fn config(&mut self, root: &Table) -> Config {
        self.check_keys(root, "", TOP_KEYS);
        let empty = Table::new();
        let server = self.section(root, "server").unwrap_or(&empty);
        let server = self.server(server);
        let admin = self.section(root, "admin").unwrap_or(&empty);
        let admin = self.admin(admin, &server);
        let store = self.section(root, "store").unwrap_or(&empty);
        let store = self.store(store);
        let compliance = self.section(root, "compliance").unwrap_or(&empty);
        let compliance = self.compliance(compliance, &store);
        let log = self.section(root, "log").unwrap_or(&empty);
        let log = self.log(log);
        let sync = self.section(root, "sync").unwrap_or(&empty);
        let sync = self.sync(sync);
        let shops = self.shops(root);
        let suppliers = self.suppliers(root);
        let workflow = self.section(root, "workflow").unwrap_or(&empty);
        let workflow = self.workflow(workflow);
        let tracking = self.tracking(root);
        Config {
            server,
            admin,
            store,
            compliance,
            log,
            sync,
            shops,
            suppliers,
            workflow,
            tracking,
        }
    }

    fn tracking(&mut self, root: &Table) -> Vec<TrackingConfig> {
        let items = match root.get("tracking") {
            None => return Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.type_error("tracking", "an array of tables ([[tracking]])", other);
                return Vec::new();
            }
        };
        let mut out: Vec<TrackingConfig> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("tracking[{i}]");
            let Value::Table(t) = item else {
                self.type_error(&p, "a table", item);
                continue;
            };
            self.check_keys(t, &p, TRACKING_KEYS);
            let provider = match t.get("provider") {
                Some(Value::String(name))
                    if crate::tracking::WEBHOOK_PROVIDERS.contains(&name.as_str()) =>
                {
                    name.clone()
                }
                Some(Value::String(name)) => {
                    self.error(
                        join(&p, "provider"),
                        format!(
                            "unknown provider `{name}` (known: {})",
                            crate::tracking::WEBHOOK_PROVIDERS.join(", ")
                        ),
                    );
                    continue;
                }
                Some(other) => {
                    self.type_error(&join(&p, "provider"), "a string", other);
                    continue;
                }
                None => {
                    self.error(join(&p, "provider"), "missing required key");
                    continue;
                }
            };
            if out.iter().any(|o| o.provider == provider) {
                self.error(
                    join(&p, "provider"),
                    format!("`{provider}` is configured twice"),
                );
            }
            let path = join(&p, "secrets");
            let secrets: Vec<Secret> = match t.get("secrets") {
                Some(Value::Array(items)) if !items.is_empty() => items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| self.secret(item, &format!("{path}[{i}]")))
                    .collect(),
                Some(Value::Array(_)) | None => {
                    self.error(
                        path,
                        "must list at least one secret, the current one first: unsigned \
                         tracking webhooks are refused",
                    );
                    Vec::new()
                }
                Some(other) => {
                    self.type_error(&path, "an array of secrets", other);
                    Vec::new()
                }
            };
            out.push(TrackingConfig { provider, secrets });
        }
        out
    }

    fn workflow(&mut self, t: &Table) -> WorkflowConfig {
        let p = "workflow";
        self.check_keys(t, p, WORKFLOW_KEYS);
        let defaults = WorkflowConfig::default();
        WorkflowConfig {
            hold_on_exceptions: self.boolean(
                t,
                p,
                "hold_on_exceptions",
                defaults.hold_on_exceptions,
            ),
            notify_merchant: self.boolean(t, p, "notify_merchant", defaults.notify_merchant),
            notify_customer: self.boolean(t, p, "notify_customer", defaults.notify_customer),
            no_acceptance_business_days: self.integer(
                t,
                p,
                "no_acceptance_business_days",
                1..=60,
                defaults.no_acceptance_business_days.into(),
            ) as u32,
            stalled_business_days: self.integer(
                t,
                p,
                "stalled_business_days",
                1..=60,
                defaults.stalled_business_days.into(),
            ) as u32,
            route_orders_created_after: match t.get("route_orders_created_after") {
                None => None,
                Some(value) => {
                    let path = format!("{p}.route_orders_created_after");
                    match self.string(value, &path) {
                        Some(text) => match crate::order::Timestamp::parse(text) {
                            Ok(at) => Some(at),
                            Err(e) => {
                                self.error(path, e);
                                None
                            }
                        },
                        None => None,
                    }
                }
            },
        }
    }

    fn sync(&mut self, t: &Table) -> SyncConfig {
        let p = "sync";
        self.check_keys(t, p, SYNC_KEYS);
        let interval = self.integer(t, p, "poll_interval_secs", 1..=86_400, 300);
        let overlap = self.integer(t, p, "poll_overlap_secs", 0..=86_400, 300);
        let lookback = self.integer(t, p, "initial_lookback_days", 1..=3_650, 60);
        // Zero switches the daemon's own run off (for a setup that reconciles from cron).
        let reconcile = self.integer(t, p, "reconcile_interval_hours", 0..=8_760, 24);
        SyncConfig {
            reconcile_interval: (reconcile > 0)
                .then(|| Duration::from_secs(reconcile as u64 * 3_600)),
            poll_interval: Duration::from_secs(interval as u64),
            poll_overlap: Duration::from_secs(overlap as u64),
            initial_lookback: Duration::from_secs(lookback as u64 * 86_400),
        }
    }

    fn server(&mut self, t: &Table) -> ServerConfig {
        let p = "server";
        self.check_keys(t, p, SERVER_KEYS);
        let listen = self.socket_addr(t, p, "listen", DEFAULT_SERVER_LISTEN);
        let body_limit = self.integer(t, p, "body_limit", KIB..=64 * MIB, 2 * MIB);
        let header = self.integer(t, p, "header_read_timeout_ms", 100..=120_000, 5_000);
        let body = self.integer(t, p, "body_read_timeout_ms", 100..=300_000, 10_000);
        // Zero is allowed (drop in-flight requests at once: safe, as nothing is acknowledged
        // before it is durable); the upper bound keeps it below any sensible TimeoutStopSec.
        let grace = self.integer(t, p, "shutdown_grace_ms", 0..=300_000, 10_000);
        ServerConfig {
            listen,
            body_limit: body_limit as usize,
            header_read_timeout: millis(header),
            body_read_timeout: millis(body),
            shutdown_grace: millis(grace),
        }
    }

    fn admin(&mut self, t: &Table, server: &ServerConfig) -> AdminConfig {
        let p = "admin";
        self.check_keys(t, p, ADMIN_KEYS);
        let listen = self.socket_addr(t, p, "listen", DEFAULT_ADMIN_LISTEN);
        // An unreadable address was reported already, and its default stood in for it: a
        // conflict with that default would name an address the operator never wrote.
        let unreadable = |path: &str| self.errors.iter().any(|e| e.path == path);
        if !unreadable("server.listen")
            && !unreadable("admin.listen")
            && listeners_conflict(listen, server.listen)
        {
            // Point at the address the operator actually wrote; with both left at their
            // defaults there is no conflict.
            let path = if t.contains_key("listen") {
                "admin.listen"
            } else {
                "server.listen"
            };
            self.error(
                path,
                format!(
                    "`{listen}` conflicts with server.listen `{}`; the admin API needs its own port",
                    server.listen
                ),
            );
        }
        let token = match t.get("token") {
            Some(value) => self.secret(value, "admin.token"),
            None => {
                self.warn(
                    "admin.token",
                    "no admin token: the admin API is disabled except /healthz and /readyz",
                );
                None
            }
        };
        if token.is_some() && !listen.ip().is_loopback() {
            self.warn(
                "admin.listen",
                format!(
                    "the admin API listens on `{listen}`, which other hosts can reach; \
                     make sure a firewall limits who can"
                ),
            );
        }
        AdminConfig { listen, token }
    }

    fn store(&mut self, t: &Table) -> StoreConfig {
        let p = "store";
        self.check_keys(t, p, STORE_KEYS);
        let path = match t.get("path") {
            Some(value) => self.path_value(value, "store.path"),
            None => {
                self.error("store.path", "missing required key");
                None
            }
        };
        let cache_mb = self.integer(t, p, "cache_capacity_mb", 1..=65_536, 64);
        let flush = self.integer(t, p, "flush_interval_ms", 10..=60_000, 500);
        // At least a week: Shopify retries a delivery for 48 hours, and a delivery is the
        // evidence of what Shopify said. Zero keeps them.
        let retention = match self.integer(t, p, "delivery_retention_days", 0..=3_650, 60) {
            0 => None,
            days if days < 7 => {
                self.error(
                    "store.delivery_retention_days",
                    format!("{days} is too short: at least 7 days (Shopify retries for 48 hours), or 0 to keep them"),
                );
                None
            }
            days => Some(Duration::from_secs(days as u64 * 24 * 3600)),
        };
        StoreConfig {
            path: path.unwrap_or_default(),
            cache_capacity_bytes: cache_mb as u64 * MIB as u64,
            flush_interval: millis(flush),
            delivery_retention: retention,
        }
    }

    fn compliance(&mut self, t: &Table, store: &StoreConfig) -> ComplianceConfig {
        self.check_keys(t, "compliance", COMPLIANCE_KEYS);
        let export_dir = t
            .get("export_dir")
            .and_then(|value| self.path_value(value, "compliance.export_dir"))
            .unwrap_or_else(|| store.path.join("exports"));
        ComplianceConfig { export_dir }
    }

    fn log(&mut self, t: &Table) -> LogConfig {
        let p = "log";
        self.check_keys(t, p, LOG_KEYS);
        let format = match t.get("format").and_then(|v| self.string(v, "log.format")) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.error(
                    "log.format",
                    format!("expected \"text\" or \"json\", found \"{other}\""),
                );
                LogFormat::Text
            }
        };
        let level = match t.get("level").and_then(|v| self.string(v, "log.level")) {
            None => "info".to_owned(),
            Some(level) => {
                if level.trim().is_empty() {
                    self.error("log.level", "must not be empty (the default is \"info\")");
                } else if let Err(e) = tracing_subscriber::EnvFilter::try_new(level) {
                    self.error("log.level", format!("not a valid log filter: {e}"));
                }
                level.to_owned()
            }
        };
        LogConfig { format, level }
    }

    fn shops(&mut self, root: &Table) -> Vec<ShopConfig> {
        let items = match root.get("shops") {
            None => {
                self.error(
                    "shops",
                    "missing required key: at least one [[shops]] table is required",
                );
                return Vec::new();
            }
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.type_error("shops", "an array of tables ([[shops]])", other);
                return Vec::new();
            }
        };
        if items.is_empty() {
            self.error("shops", "at least one [[shops]] table is required");
        }
        let mut shops = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("shops[{i}]");
            let Value::Table(t) = item else {
                self.type_error(&p, "a table", item);
                continue;
            };
            let shop = self.shop(t, &p);
            if !shop.domain.is_empty() {
                let key = shop.domain.to_ascii_lowercase();
                if let Some(first) = seen.get(&key) {
                    self.error(
                        format!("{p}.domain"),
                        format!(
                            "duplicate shop domain `{}`: already configured in shops[{first}]",
                            shop.domain
                        ),
                    );
                } else {
                    seen.insert(key, i);
                }
            }
            shops.push(shop);
        }
        shops
    }

    fn shop(&mut self, t: &Table, p: &str) -> ShopConfig {
        self.check_keys(t, p, SHOP_KEYS);

        let api_version = match t.get("api_version") {
            None => DEFAULT_API_VERSION.to_owned(),
            Some(value) => {
                let path = join(p, "api_version");
                match self.string(value, &path) {
                    Some(v) if is_api_version(v) => v.to_owned(),
                    Some(v) => {
                        self.error(
                            path,
                            format!(
                                "`{v}` is not an API version; expected YYYY-MM with month \
                                 01, 04, 07 or 10, such as `{DEFAULT_API_VERSION}`"
                            ),
                        );
                        DEFAULT_API_VERSION.to_owned()
                    }
                    None => DEFAULT_API_VERSION.to_owned(),
                }
            }
        };

        let base_override = self.url(t, p, "admin_base_url");
        let graphql_override = self.url(t, p, "graphql_endpoint");

        let domain = match t.get("domain") {
            None => {
                self.error(join(p, "domain"), "missing required key");
                String::new()
            }
            Some(value) => {
                let path = join(p, "domain");
                match self.string(value, &path) {
                    Some(domain) => {
                        // The presence of the key decides, not its validity, so that a bad URL is
                        // reported once instead of also making the domain look wrong.
                        let has_override = t.contains_key("admin_base_url");
                        if let Err(message) = check_domain(domain, has_override) {
                            self.error(path, message);
                        }
                        domain.to_owned()
                    }
                    None => String::new(),
                }
            }
        };

        let admin_base_url = match &base_override {
            Some(url) => url.text.trim_end_matches('/').to_owned(),
            None => format!("https://{domain}"),
        };
        let graphql_endpoint = match &graphql_override {
            Some(url) => url.text.clone(),
            None => format!("{admin_base_url}/admin/api/{api_version}/graphql.json"),
        };
        // Plain http is meant for the sandbox on loopback; anywhere else it would carry the
        // Admin API token across the network unencrypted.
        for (key, url) in [
            ("admin_base_url", &base_override),
            ("graphql_endpoint", &graphql_override),
        ] {
            if let Some(url) = url
                && !url.https
                && !url.loopback
            {
                self.warn(
                    join(p, key),
                    "plain http to a host other than loopback sends the Admin API token unencrypted",
                );
            }
        }

        let credentials = self.credentials(t, p);
        let webhook_secrets = self.webhook_secrets(t, p);
        let requests_per_second = self.integer(t, p, "requests_per_second", 1..=1000, 4) as u32;
        let notify_customer = self.boolean(t, p, "notify_customer", true);

        ShopConfig {
            domain,
            api_version,
            credentials,
            webhook_secrets,
            admin_base_url,
            graphql_endpoint,
            requests_per_second,
            notify_customer,
        }
    }

    fn credentials(&mut self, t: &Table, p: &str) -> ShopCredentials {
        // Resolve every secret that is present first, so that a file with both kinds of
        // credentials still reports a missing token file or unset variable in the same run.
        let access_token = t
            .get("access_token")
            .map(|v| self.secret(v, &join(p, "access_token")));
        let client_id = t.get("client_id").map(|v| {
            let path = join(p, "client_id");
            match self.string(v, &path) {
                Some("") => {
                    self.error(path, "must not be empty");
                    None
                }
                Some(id) => Some(id.to_owned()),
                None => None,
            }
        });
        let client_secret = t
            .get("client_secret")
            .map(|v| self.secret(v, &join(p, "client_secret")));

        match (access_token, client_id, client_secret) {
            (None, None, None) => {
                self.warn(
                    p,
                    "no Admin API credentials: the shop can receive webhooks but not be synced",
                );
                ShopCredentials::None
            }
            (Some(token), None, None) => token
                .map(ShopCredentials::AccessToken)
                .unwrap_or(ShopCredentials::None),
            (None, Some(id), Some(secret)) => match (id, secret) {
                (Some(client_id), Some(client_secret)) => ShopCredentials::ClientCredentials {
                    client_id,
                    client_secret,
                },
                _ => ShopCredentials::None,
            },
            (None, Some(_), None) => {
                self.error(
                    join(p, "client_secret"),
                    "missing required key (client_id is set, and the grant needs both)",
                );
                ShopCredentials::None
            }
            (None, None, Some(_)) => {
                self.error(
                    join(p, "client_id"),
                    "missing required key (client_secret is set, and the grant needs both)",
                );
                ShopCredentials::None
            }
            (Some(_), _, _) => {
                self.error(
                    p,
                    "set either access_token or client_id + client_secret, not both",
                );
                ShopCredentials::None
            }
        }
    }

    fn webhook_secrets(&mut self, t: &Table, p: &str) -> Vec<Secret> {
        let path = join(p, "webhook_secrets");
        match t.get("webhook_secrets") {
            None => {
                self.error(
                    path,
                    "missing required key: list the current webhook secret (then any older ones)",
                );
                Vec::new()
            }
            Some(Value::Array(items)) if items.is_empty() => {
                self.error(path, "must list at least one secret, the current one first");
                Vec::new()
            }
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.secret(item, &format!("{path}[{i}]")))
                .collect(),
            Some(other) => {
                self.type_error(
                    &path,
                    "an array of secrets such as [{ env = \"...\" }]",
                    other,
                );
                Vec::new()
            }
        }
    }

    /// The `[[suppliers]]` array; absent means no suppliers. Each table is walked on its own
    /// first. The checks that relate suppliers to each other (duplicate names, backups, a
    /// supplier nobody can reach) need every name, so they run afterwards over the results.
    fn suppliers(&mut self, root: &Table) -> Vec<SupplierConfig> {
        let items = match root.get("suppliers") {
            None => return Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.type_error("suppliers", "an array of tables ([[suppliers]])", other);
                return Vec::new();
            }
        };
        let mut walked = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("suppliers[{i}]");
            let Value::Table(t) = item else {
                self.type_error(&p, "a table", item);
                continue;
            };
            walked.push(self.supplier(t, i));
        }
        self.supplier_names(&walked);
        self.supplier_backups(&mut walked);
        self.supplier_reach(&walked);
        walked.into_iter().map(|w| w.config).collect()
    }

    fn supplier(&mut self, t: &Table, index: usize) -> WalkedSupplier {
        let p = format!("suppliers[{index}]");
        let p = p.as_str();
        self.check_keys(t, p, SUPPLIER_KEYS);

        let name = match t.get("name") {
            None => {
                self.error(
                    join(p, "name"),
                    "missing required key: the name agents use in /webhooks/suppliers/<name>",
                );
                String::new()
            }
            Some(value) => {
                let path = join(p, "name");
                match self.string(value, &path) {
                    Some(name) => {
                        if let Err(message) = check_supplier_name(name) {
                            self.error(path, message);
                        }
                        name.to_owned()
                    }
                    None => String::new(),
                }
            }
        };

        let kind = match t.get("adapter") {
            None => {
                self.error(
                    join(p, "adapter"),
                    "missing required key: one of \"http\", \"csv\" or \"manual\"",
                );
                None
            }
            Some(value) => {
                let path = join(p, "adapter");
                match self.string(value, &path) {
                    Some(text) => {
                        let kind = AdapterKind::parse(text);
                        if kind.is_none() {
                            self.error(
                                path,
                                format!(
                                    "expected \"http\", \"csv\" or \"manual\", found \"{text}\""
                                ),
                            );
                        }
                        kind
                    }
                    None => None,
                }
            }
        };
        let adapter = match kind {
            Some(AdapterKind::Http) => AdapterConfig::Http(self.http_supplier(t, p)),
            Some(kind) => {
                // Settings the adapter would silently ignore are refused: an endpoint on a csv
                // supplier means the operator believes orders are sent somewhere they are not.
                for key in ["endpoint", "secrets", "request_timeout_secs"] {
                    if t.contains_key(key) {
                        self.error(
                            join(p, key),
                            format!(
                                "only the http adapter uses `{key}`; remove it or set \
                                 adapter = \"http\" (this supplier's adapter is \"{kind}\")"
                            ),
                        );
                    }
                }
                if kind == AdapterKind::Csv {
                    AdapterConfig::Csv
                } else {
                    AdapterConfig::Manual
                }
            }
            // A placeholder: an error was recorded, so this config is never handed out.
            None => AdapterConfig::Manual,
        };

        let skus = self.sku_patterns(t, p);
        let backups = self.string_list(t, p, "backups");

        WalkedSupplier {
            index,
            config: SupplierConfig {
                name,
                adapter,
                skus,
                backups: Vec::new(),
            },
            backups,
        }
    }

    fn http_supplier(&mut self, t: &Table, p: &str) -> HttpSupplierConfig {
        let endpoint = match t.get("endpoint") {
            None => {
                self.error(
                    join(p, "endpoint"),
                    "missing required key: the http adapter needs the URL orders are POSTed to",
                );
                None
            }
            Some(_) => self.url(t, p, "endpoint"),
        };
        // The signature protects what the agent receives from tampering, not from being read,
        // and a submission carries the customer's name and address.
        if let Some(url) = &endpoint
            && !url.https
            && !url.loopback
        {
            self.warn(
                join(p, "endpoint"),
                "plain http to a host other than loopback sends customer addresses unencrypted",
            );
        }

        let path = join(p, "secrets");
        let secrets = match t.get("secrets") {
            None => {
                self.error(
                    path,
                    "missing required key: the http adapter signs with the first secret \
                     (list older ones after it during a rotation)",
                );
                Vec::new()
            }
            Some(Value::Array(items)) if items.is_empty() => {
                self.error(path, "must list at least one secret, the current one first");
                Vec::new()
            }
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.secret(item, &format!("{path}[{i}]")))
                .collect(),
            Some(other) => {
                self.type_error(
                    &path,
                    "an array of secrets such as [{ credential = \"...\" }]",
                    other,
                );
                Vec::new()
            }
        };

        let timeout = self.integer(
            t,
            p,
            "request_timeout_secs",
            1..=300,
            DEFAULT_SUPPLIER_TIMEOUT_SECS,
        );
        HttpSupplierConfig {
            endpoint: endpoint.map(|url| url.text).unwrap_or_default(),
            secrets,
            request_timeout: Duration::from_secs(timeout.unsigned_abs()),
        }
    }

    /// A supplier's `skus`: absent is an empty list (a backup-only supplier). Each pattern is
    /// checked by the router's own rules, so the config accepts exactly what routing can use.
    fn sku_patterns(&mut self, t: &Table, p: &str) -> Vec<String> {
        let mut patterns = Vec::new();
        for (i, pattern) in self.string_list(t, p, "skus") {
            match crate::suppliers::routing::check_pattern(&pattern) {
                Ok(()) => patterns.push(pattern),
                Err(message) => self.error(format!("{p}.skus[{i}]"), message),
            }
        }
        patterns
    }

    /// An optional array of strings, each with its index in the file so that later checks can
    /// name the exact element; elements of another type are reported and left out.
    fn string_list(&mut self, t: &Table, p: &str, key: &str) -> Vec<(usize, String)> {
        let path = join(p, key);
        match t.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    self.string(item, &format!("{path}[{i}]"))
                        .map(|text| (i, text.to_owned()))
                })
                .collect(),
            Some(other) => {
                self.type_error(&path, "an array of strings", other);
                Vec::new()
            }
        }
    }

    /// Reports a name used twice: shipments and webhook URLs are keyed by name, so two
    /// suppliers with one name could not be told apart.
    fn supplier_names(&mut self, walked: &[WalkedSupplier]) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for w in walked {
            let name = w.config.name.as_str();
            if name.is_empty() {
                continue;
            }
            if let Some(first) = seen.get(name) {
                self.error(
                    format!("suppliers[{}].name", w.index),
                    format!(
                        "duplicate supplier name \"{name}\": already configured in suppliers[{first}]"
                    ),
                );
            } else {
                seen.insert(name, w.index);
            }
        }
    }

    /// Checks each backup against the configured names and keeps the valid ones. A supplier
    /// listing itself is refused because it already had its try; a cycle between two suppliers
    /// (a backs up b, b backs up a) is fine, as each list only applies to its own SKUs.
    fn supplier_backups(&mut self, walked: &mut [WalkedSupplier]) {
        let names: Vec<String> = walked
            .iter()
            .map(|w| w.config.name.clone())
            .filter(|name| !name.is_empty())
            .collect();
        let known: Vec<&str> = names.iter().map(String::as_str).collect();
        for w in walked.iter_mut() {
            let mut valid: Vec<String> = Vec::new();
            for (i, backup) in std::mem::take(&mut w.backups) {
                let path = format!("suppliers[{}].backups[{i}]", w.index);
                if backup == w.config.name {
                    self.error(
                        path,
                        format!(
                            "\"{backup}\" is this supplier itself; list other suppliers to \
                             try after it"
                        ),
                    );
                } else if !known.contains(&backup.as_str()) {
                    let hint = match closest(&backup, &known) {
                        Some(name) => format!("; did you mean \"{name}\"?"),
                        None => String::new(),
                    };
                    self.error(path, format!("no supplier named \"{backup}\"{hint}"));
                } else if valid.contains(&backup) {
                    self.error(path, format!("\"{backup}\" is listed twice"));
                } else {
                    valid.push(backup);
                }
            }
            w.config.backups = valid;
        }
    }

    /// Warns about suppliers routing can never pick: one without patterns that nobody lists as
    /// a backup, and a pattern an earlier supplier already claims (the first match wins).
    fn supplier_reach(&mut self, walked: &[WalkedSupplier]) {
        for w in walked {
            let name = &w.config.name;
            let is_backup = walked
                .iter()
                .any(|other| other.index != w.index && other.config.backups.contains(name));
            if w.config.skus.is_empty() && !is_backup {
                self.warn(
                    format!("suppliers[{}].skus", w.index),
                    format!(
                        "no SKU patterns, and no supplier lists \"{name}\" as a backup: \
                         it receives nothing"
                    ),
                );
            }
        }
        let mut claimed: HashMap<String, usize> = HashMap::new();
        for w in walked {
            for (i, pattern) in w.config.skus.iter().enumerate() {
                let folded = pattern.to_lowercase();
                match claimed.get(&folded) {
                    Some(first) if *first != w.index => self.warn(
                        format!("suppliers[{}].skus[{i}]", w.index),
                        format!(
                            "`{pattern}` is also a pattern of suppliers[{first}], which comes \
                             first and so receives these SKUs"
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        claimed.insert(folded, w.index);
                    }
                }
            }
        }
    }

    /// Validates a secret table and resolves its value; returns `None` after recording a problem.
    fn secret(&mut self, value: &Value, path: &str) -> Option<Secret> {
        let Value::Table(t) = value else {
            self.type_error(
                path,
                "a secret such as { file = \"...\" }, { env = \"...\" } or { credential = \"...\" }",
                value,
            );
            return None;
        };
        self.check_keys(t, path, SECRET_KEYS);
        let kinds: Vec<&str> = SECRET_KEYS
            .iter()
            .copied()
            .filter(|kind| t.contains_key(*kind))
            .collect();
        let kind = match kinds.as_slice() {
            [kind] => *kind,
            [] => {
                self.error(
                    path,
                    "a secret needs exactly one of `file`, `env`, `credential` or `value`",
                );
                return None;
            }
            several => {
                let names: Vec<String> = several.iter().map(|k| format!("`{k}`")).collect();
                self.error(
                    path,
                    format!(
                        "a secret takes exactly one source, found {}",
                        names.join(" and ")
                    ),
                );
                return None;
            }
        };
        let kind_path = join(path, kind);
        let text = self.string(&t[kind], &kind_path)?;
        if text.is_empty() {
            self.error(kind_path, "must not be empty");
            return None;
        }
        let resolved = match kind {
            "file" => {
                let file = self.base_dir.join(text);
                read_secret_file(&file).map(|value| Secret {
                    source: SecretSource::File(file),
                    value,
                })
            }
            "env" => self.env_secret(text),
            "credential" => self.credential_secret(text),
            _ => {
                self.warn(path, "inline secret: for tests and demos only");
                Ok(Secret::inline(text))
            }
        };
        match resolved {
            Ok(secret) => Some(secret),
            Err(message) => {
                self.error(path, message);
                None
            }
        }
    }

    fn env_secret(&self, name: &str) -> Result<Secret, String> {
        if name.contains(['=', '\0']) {
            return Err(format!("`{name}` is not a valid environment variable name"));
        }
        let value = (self.env.var)(name)
            .ok_or_else(|| format!("environment variable {name} is not set"))?
            .into_string()
            .map_err(|_| format!("environment variable {name} is not valid UTF-8"))?;
        if value.is_empty() {
            return Err(format!("environment variable {name} is empty"));
        }
        let mut value = value;
        let secret = SecretString::from(value.as_str());
        value.zeroize();
        Ok(Secret {
            source: SecretSource::Env(name.to_owned()),
            value: secret,
        })
    }

    fn credential_secret(&self, name: &str) -> Result<Secret, String> {
        // A credential name is a file name inside the credentials directory; anything that could
        // walk out of it is refused rather than silently read.
        if name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(format!("`{name}` is not a valid credential name"));
        }
        let dir = self.env.credentials_dir.ok_or_else(|| {
            format!(
                "credential {name} cannot be read: CREDENTIALS_DIRECTORY is not set \
                 (systemd sets it for a unit with LoadCredential={name}:...; from a shell, run \
                 as root with CREDENTIALS_DIRECTORY=/etc/shipgate/credentials)"
            )
        })?;
        let value = read_secret_file(&dir.join(name))
            .map_err(|message| format!("credential {name}: {message}"))?;
        Ok(Secret {
            source: SecretSource::Credential(name.to_owned()),
            value,
        })
    }

    /// Reports keys the contract does not know, suggesting the closest known one, because a
    /// silently ignored typo (`acess_token`) is the hardest kind of config mistake to spot.
    fn check_keys(&mut self, t: &Table, path: &str, known: &[&str]) {
        for key in t.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let message = match closest(key, known) {
                Some(suggestion) => format!("unknown key; did you mean `{suggestion}`?"),
                None => "unknown key".to_owned(),
            };
            self.error(join(path, key), message);
        }
    }

    /// A sub-table of `root`; absent is `None`, the wrong type is reported and also `None`.
    fn section<'t>(&mut self, root: &'t Table, key: &str) -> Option<&'t Table> {
        match root.get(key)? {
            Value::Table(t) => Some(t),
            other => {
                self.type_error(key, "a table", other);
                None
            }
        }
    }

    fn type_error(&mut self, path: &str, expected: &str, found: &Value) {
        self.error(
            path,
            format!("expected {expected}, found {}", describe(found)),
        );
    }

    fn string<'v>(&mut self, value: &'v Value, path: &str) -> Option<&'v str> {
        match value {
            Value::String(s) => Some(s),
            other => {
                self.type_error(path, "a string", other);
                None
            }
        }
    }

    /// An integer key with a default and an allowed range; bad values are reported and replaced
    /// by the default so the walk can continue. Callers may cast the result to any type that
    /// holds `range`.
    fn integer(
        &mut self,
        t: &Table,
        parent: &str,
        key: &str,
        range: RangeInclusive<i64>,
        default: i64,
    ) -> i64 {
        let Some(value) = t.get(key) else {
            return default;
        };
        let path = join(parent, key);
        let Value::Integer(n) = value else {
            self.type_error(&path, "an integer", value);
            return default;
        };
        if !range.contains(n) {
            self.error(
                path,
                format!(
                    "must be between {} and {}, found {n}",
                    range.start(),
                    range.end()
                ),
            );
            return default;
        }
        *n
    }

    fn boolean(&mut self, t: &Table, parent: &str, key: &str, default: bool) -> bool {
        match t.get(key) {
            None => default,
            Some(Value::Boolean(b)) => *b,
            Some(other) => {
                self.type_error(&join(parent, key), "a boolean", other);
                default
            }
        }
    }

    fn socket_addr(
        &mut self,
        t: &Table,
        parent: &str,
        key: &str,
        default: SocketAddr,
    ) -> SocketAddr {
        let Some(value) = t.get(key) else {
            return default;
        };
        let path = join(parent, key);
        let Some(text) = self.string(value, &path) else {
            return default;
        };
        match text.parse() {
            Ok(addr) => addr,
            Err(_) => {
                self.error(
                    path,
                    format!(
                        "`{text}` is not a socket address; expected an IP address and port \
                         such as `{default}` (host names are not resolved)"
                    ),
                );
                default
            }
        }
    }

    /// A non-empty path, resolved against the config file's folder when relative.
    fn path_value(&mut self, value: &Value, path: &str) -> Option<PathBuf> {
        let text = self.string(value, path)?;
        if text.is_empty() {
            self.error(path, "must not be empty");
            return None;
        }
        Some(self.base_dir.join(text))
    }

    fn url(&mut self, t: &Table, parent: &str, key: &str) -> Option<HttpUrl> {
        let value = t.get(key)?;
        let path = join(parent, key);
        let text = self.string(value, &path)?;
        match parse_http_url(text) {
            Ok(url) => Some(url),
            Err(message) => {
                self.error(path, message);
                None
            }
        }
    }
}

/// A supplier as walked, before the checks that need every supplier's name.
struct WalkedSupplier {
    /// Position in the `[[suppliers]]` array, for key paths.
    index: usize,
    /// The supplier, with `backups` still empty until they are checked.
    config: SupplierConfig,
    /// The backups as written, each with its index in the array.
    backups: Vec<(usize, String)>,
}

/// Checks a supplier name. It becomes a URL path segment and a key of shipment records, so it
/// is held to a small alphabet that needs no escaping anywhere and no case folding.
fn check_supplier_name(name: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-';
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.len() > MAX_SUPPLIER_NAME_LEN {
        return Err(format!(
            "\"{name}\" is {} bytes long; a supplier name has at most {MAX_SUPPLIER_NAME_LEN}",
            name.len()
        ));
    }
    let lower = name.to_ascii_lowercase();
    if lower != name && lower.bytes().all(allowed) {
        return Err(format!("\"{name}\" must be lowercase: \"{lower}\""));
    }
    if !name.bytes().all(allowed) {
        return Err(format!(
            "\"{name}\" may only contain a-z, 0-9, `_` and `-`, as it becomes part of the URL \
             /webhooks/suppliers/<name>"
        ));
    }
    Ok(())
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(ms.unsigned_abs())
}

/// Whether two listeners would fight over one port: the same port on the same address, or on
/// any address when one of them binds the wildcard address.
fn listeners_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Reads a secret file, trimming one trailing newline because editors and `echo` add one that is
/// never part of the token. Messages name the file but never its content.
fn read_secret_file(path: &Path) -> Result<SecretString, String> {
    let shown = path.display();
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read secret file {shown}: {e}"))?;
    let mut bytes = Vec::new();
    let read = file
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read secret file {shown}: {e}"));
    if let Err(message) = read {
        bytes.zeroize();
        return Err(message);
    }
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        bytes.zeroize();
        return Err(format!(
            "secret file {shown} is larger than {MAX_SECRET_FILE_BYTES} bytes; is it the right file?"
        ));
    }
    let mut text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            e.into_bytes().zeroize();
            return Err(format!("secret file {shown} is not valid UTF-8"));
        }
    };
    let trimmed = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    let result = if trimmed.is_empty() {
        Err(format!("secret file {shown} is empty"))
    } else {
        Ok(SecretString::from(trimmed))
    };
    text.zeroize();
    result
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// Appends `key` to a key path, quoting it the way TOML would when it is not a bare key.
fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// The known key closest to a misspelt one, if it is close enough to be a plausible typo.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let normalized = key.to_ascii_lowercase().replace('-', "_");
    known
        .iter()
        .map(|candidate| (edit_distance(&normalized, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 4).clamp(1, 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Optimal-string-alignment distance: Levenshtein plus adjacent transpositions, the most common
/// typing slip (`lsiten`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

fn is_api_version(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 7
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && matches!(&b[5..], b"01" | b"04" | b"07" | b"10")
}

/// A DNS host name in lowercase: dot-separated labels of letters, digits and inner hyphens.
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Checks a shop domain. Shopify identifies shops by their `.myshopify.com` name, so any other
/// host is only accepted for a shop whose `admin_base_url` points somewhere else (the sandbox).
fn check_domain(domain: &str, has_base_override: bool) -> Result<(), String> {
    if domain.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if domain.contains("://") || domain.contains('/') {
        return Err(format!(
            "`{domain}` must be a bare host name such as `example.myshopify.com`, \
             without scheme or path"
        ));
    }
    if domain.contains(':') {
        return Err(format!("`{domain}` must be a host name without a port"));
    }
    if domain.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "`{domain}` must be lowercase: `{}`",
            domain.to_ascii_lowercase()
        ));
    }
    if !is_host_name(domain) {
        return Err(format!("`{domain}` is not a valid host name"));
    }
    if !has_base_override && !domain.ends_with(".myshopify.com") {
        return Err(format!(
            "`{domain}` must end in `.myshopify.com` (set admin_base_url to use another host)"
        ));
    }
    Ok(())
}

/// An http(s) URL that passed validation.
#[derive(Debug)]
struct HttpUrl {
    text: String,
    https: bool,
    loopback: bool,
}

/// Validates an http or https URL without pulling in a URL parser: scheme, a host (name, IPv4 or
/// bracketed IPv6), an optional numeric port and an optional path. Messages do not repeat the
/// URL, since a URL with user info could carry a password.
fn parse_http_url(text: &str) -> Result<HttpUrl, String> {
    let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err("expected an http:// or https:// URL".to_owned());
    };
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a URL must not contain whitespace".to_owned());
    }
    if rest.contains(['?', '#']) {
        return Err("the URL must not have a query or fragment".to_owned());
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(
            "the URL must not contain a user name or password; credentials belong in a secret"
                .to_owned(),
        );
    }
    let (port, loopback) = if let Some(inner) = authority.strip_prefix('[') {
        let (ip, after) = inner
            .split_once(']')
            .ok_or("the URL has an unterminated IPv6 address")?;
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| "the URL has an invalid IPv6 address".to_owned())?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("the URL has text after its IPv6 address")?,
            ),
        };
        (port, ip.is_loopback())
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let host = host.to_ascii_lowercase();
        if !is_host_name(&host) {
            return Err("the URL has no valid host name".to_owned());
        }
        let loopback =
            host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        (port, loopback)
    };
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err("the URL has an invalid port".to_owned());
    }
    Ok(HttpUrl {
        text: text.to_owned(),
        https,
        loopback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Parses with a private set of environment variables and credentials directory, so tests
    /// never touch the process environment that parallel tests share.
    fn parse_with(
        text: &str,
        base: &Path,
        vars: &[(&str, &str)],
        credentials_dir: Option<&Path>,
    ) -> Result<Loaded, ConfigErrors> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        let lookup = move |name: &str| vars.get(name).cloned();
        let env = SecretEnv {
            var: &lookup,
            credentials_dir,
        };
        parse(text, base, &env)
    }

    fn errors(result: Result<Loaded, ConfigErrors>) -> Vec<Problem> {
        match result {
            Ok(loaded) => panic!("expected errors, got {:?}", loaded.config),
            Err(e) => e.problems,
        }
    }

    fn paths(problems: &[Problem]) -> BTreeSet<&str> {
        problems.iter().map(|p| p.path.as_str()).collect()
    }

    fn message_at<'p>(problems: &'p [Problem], path: &str) -> &'p str {
        &problems
            .iter()
            .find(|p| p.path == path)
            .unwrap_or_else(|| panic!("no problem at {path}: {problems:?}"))
            .message
    }

    const MINIMAL: &str = r#"
        [store]
        path = "data"
        [[shops]]
        domain = "example.myshopify.com"
        webhook_secrets = [{ env = "WH" }]
    "#;

    #[test]
    fn full_valid_file_parses_with_all_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token.txt"), "shpat_file_token\n").unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(creds.join("admin_token"), "admin-secret").unwrap();
        let text = r#"
            [server]
            listen = "127.0.0.1:9000"
            body_limit = 4096
            header_read_timeout_ms = 2000
            body_read_timeout_ms = 3000
            shutdown_grace_ms = 0
            [admin]
            listen = "127.0.0.1:9001"
            token = { credential = "admin_token" }
            [store]
            path = "/srv/shipgate"
            cache_capacity_mb = 128
            flush_interval_ms = 50
            [compliance]
            export_dir = "exports"
            [log]
            format = "json"
            level = "info,shipgate=debug"
            [[shops]]
            domain = "one.myshopify.com"
            api_version = "2025-07"
            access_token = { file = "token.txt" }
            webhook_secrets = [{ env = "WH_ONE" }, { env = "WH_ONE_OLD" }]
            requests_per_second = 10
            notify_customer = false
            [[shops]]
            domain = "sandbox.local"
            client_id = "client-abc"
            client_secret = { env = "CS_TWO" }
            webhook_secrets = [{ env = "WH_TWO" }]
            admin_base_url = "http://127.0.0.1:9999/"
            graphql_endpoint = "http://127.0.0.1:9999/custom/graphql.json"
        "#;
        let vars = [
            ("WH_ONE", "wh-one"),
            ("WH_ONE_OLD", "wh-one-old"),
            ("CS_TWO", "cs-two"),
            ("WH_TWO", "wh-two"),
        ];
        let loaded = parse_with(text, dir.path(), &vars, Some(&creds)).unwrap();
        assert_eq!(loaded.warnings, vec![]);
        let c = loaded.config;

        assert_eq!(c.server.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.server.body_limit, 4096);
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.server.body_read_timeout, Duration::from_secs(3));
        assert_eq!(c.server.shutdown_grace, Duration::ZERO);
        assert_eq!(c.admin.listen, "127.0.0.1:9001".parse().unwrap());
        let token = c.admin.token.as_ref().unwrap();
        assert_eq!(token.expose(), "admin-secret");
        assert_eq!(
            token.source(),
            &SecretSource::Credential("admin_token".into())
        );
        assert_eq!(c.store.path, PathBuf::from("/srv/shipgate"));
        assert_eq!(c.store.cache_capacity_bytes, 128 * 1024 * 1024);
        assert_eq!(c.store.flush_interval, Duration::from_millis(50));
        assert_eq!(c.compliance.export_dir, dir.path().join("exports"));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "info,shipgate=debug");

        assert_eq!(c.shops.len(), 2);
        let one = &c.shops[0];
        assert_eq!(one.domain, "one.myshopify.com");
        assert_eq!(one.api_version, "2025-07");
        match &one.credentials {
            ShopCredentials::AccessToken(s) => {
                assert_eq!(s.expose(), "shpat_file_token");
                assert_eq!(
                    s.source(),
                    &SecretSource::File(dir.path().join("token.txt"))
                );
            }
            other => panic!("unexpected credentials {other:?}"),
        }
        let wh: Vec<&str> = one.webhook_secrets.iter().map(Secret::expose).collect();
        assert_eq!(wh, ["wh-one", "wh-one-old"]);
        assert_eq!(
            one.webhook_secrets[0].source(),
            &SecretSource::Env("WH_ONE".into())
        );
        assert_eq!(one.admin_base_url, "https://one.myshopify.com");
        assert_eq!(
            one.graphql_endpoint,
            "https://one.myshopify.com/admin/api/2025-07/graphql.json"
        );
        assert_eq!(
            one.oauth_token_url(),
            "https://one.myshopify.com/admin/oauth/access_token"
        );
        assert_eq!(one.requests_per_second, 10);
        assert!(!one.notify_customer);

        let two = &c.shops[1];
        assert_eq!(two.domain, "sandbox.local");
        assert_eq!(two.api_version, DEFAULT_API_VERSION);
        match &two.credentials {
            ShopCredentials::ClientCredentials {
                client_id,
                client_secret,
            } => {
                assert_eq!(client_id, "client-abc");
                assert_eq!(client_secret.expose(), "cs-two");
            }
            other => panic!("unexpected credentials {other:?}"),
        }
        assert_eq!(two.admin_base_url, "http://127.0.0.1:9999");
        assert_eq!(
            two.oauth_token_url(),
            "http://127.0.0.1:9999/admin/oauth/access_token"
        );
        assert_eq!(
            two.graphql_endpoint,
            "http://127.0.0.1:9999/custom/graphql.json"
        );
        assert_eq!(two.requests_per_second, 4);
        assert!(two.notify_customer);

        assert!(c.shop("SANDBOX.local").is_some());
        assert_eq!(
            c.shop("One.MyShopify.com").unwrap().domain,
            "one.myshopify.com"
        );
        assert!(c.shop("three.myshopify.com").is_none());
    }

    #[test]
    fn minimal_file_gets_every_default() {
        let base = Path::new("/etc/shipgate");
        let loaded = parse_with(MINIMAL, base, &[("WH", "w")], None).unwrap();
        let c = &loaded.config;
        assert_eq!(c.server.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.server.body_limit, 2 * 1024 * 1024);
        assert_eq!(c.server.header_read_timeout, Duration::from_millis(5000));
        assert_eq!(c.server.body_read_timeout, Duration::from_millis(10000));
        assert_eq!(c.server.shutdown_grace, Duration::from_millis(10000));
        assert_eq!(c.admin.listen, "127.0.0.1:8081".parse().unwrap());
        assert!(c.admin.token.is_none());
        assert_eq!(c.store.path, PathBuf::from("/etc/shipgate/data"));
        assert_eq!(c.store.cache_capacity_bytes, 64 * 1024 * 1024);
        assert_eq!(c.store.flush_interval, Duration::from_millis(500));
        assert_eq!(
            c.compliance.export_dir,
            PathBuf::from("/etc/shipgate/data/exports")
        );
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.log.level, "info");
        let shop = &c.shops[0];
        assert_eq!(shop.api_version, "2026-10");
        assert!(matches!(shop.credentials, ShopCredentials::None));
        assert_eq!(shop.admin_base_url, "https://example.myshopify.com");
        assert_eq!(
            shop.graphql_endpoint,
            "https://example.myshopify.com/admin/api/2026-10/graphql.json"
        );
        assert_eq!(shop.requests_per_second, 4);
        assert!(shop.notify_customer);

        // Missing admin token and missing shop credentials are allowed, but said out loud.
        assert_eq!(
            paths(&loaded.warnings),
            BTreeSet::from(["admin.token", "shops[0]"])
        );
        assert!(
            message_at(&loaded.warnings, "shops[0]").contains(
                "no Admin API credentials: the shop can receive webhooks but not be synced"
            )
        );
    }

    #[test]
    fn several_mistakes_are_all_reported_with_their_key_paths() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
            shop = 1
            [server]
            listen = "localhost:8080"
            body_limit = "2MiB"
            [admin]
            token = { env = "SHIPGATE_CFG_TEST_A", file = "admin.token" }
            [store]
            path = "/var/lib/shipgate"
            cache_capacity_mb = 0
            [log]
            format = "xml"
            [[shops]]
            domain = "one.myshopify.com"
            acess_token = { value = "not-resolved" }
            [[shops]]
            domain = "two.myshopify.com"
            api_version = "2026-03"
            access_token = { file = "missing.token" }
            client_id = "abc"
            client_secret = { value = "cs-inline" }
            webhook_secrets = [
                { value = "wh-inline" },
                { env = "SHIPGATE_CFG_TEST_UNSET_9f3c2a" },
                { file = "x", env = "Y" },
                { credentail = "z" },
            ]
            [[shops]]
            domain = "one.myshopify.com"
            webhook_secrets = [{ file = "missing.secret" }]
        "#;
        // Through the public entry point: the unset variable name is unique to this test, and no
        // secret here depends on CREDENTIALS_DIRECTORY, so the process environment cannot
        // change the outcome.
        let problems = errors(Config::from_toml_str(text, dir.path()));
        let expected = BTreeSet::from([
            "shop",
            "server.listen",
            "server.body_limit",
            "admin.token",
            "store.cache_capacity_mb",
            "log.format",
            "shops[0].acess_token",
            "shops[0].webhook_secrets",
            "shops[1].api_version",
            "shops[1].access_token",
            "shops[1]",
            "shops[1].webhook_secrets[1]",
            "shops[1].webhook_secrets[2]",
            "shops[1].webhook_secrets[3].credentail",
            "shops[1].webhook_secrets[3]",
            "shops[2].domain",
            "shops[2].webhook_secrets[0]",
        ]);
        assert_eq!(paths(&problems), expected, "{problems:#?}");

        assert_eq!(
            message_at(&problems, "shops[0].acess_token"),
            "unknown key; did you mean `access_token`?"
        );
        assert_eq!(
            message_at(&problems, "shop"),
            "unknown key; did you mean `shops`?"
        );
        assert_eq!(
            message_at(&problems, "server.body_limit"),
            "expected an integer, found a string"
        );
        assert!(message_at(&problems, "server.listen").contains("localhost:8080"));
        assert!(message_at(&problems, "admin.token").contains("`file` and `env`"));
        assert_eq!(
            message_at(&problems, "store.cache_capacity_mb"),
            "must be between 1 and 65536, found 0"
        );
        assert_eq!(
            message_at(&problems, "shops[1]"),
            "set either access_token or client_id + client_secret, not both"
        );
        assert!(message_at(&problems, "shops[1].access_token").contains("missing.token"));
        assert_eq!(
            message_at(&problems, "shops[1].webhook_secrets[1]"),
            "environment variable SHIPGATE_CFG_TEST_UNSET_9f3c2a is not set"
        );
        assert!(
            message_at(&problems, "shops[2].domain").contains("already configured in shops[0]")
        );
        assert!(message_at(&problems, "shops[2].webhook_secrets[0]").contains("missing.secret"));
        assert!(
            message_at(&problems, "shops[1].webhook_secrets[3].credentail")
                .contains("did you mean `credential`?")
        );
        // No message repeats a secret value.
        for problem in &problems {
            assert!(!problem.message.contains("cs-inline"), "{problem}");
            assert!(!problem.message.contains("not-resolved"), "{problem}");
        }
    }

    #[test]
    fn config_errors_display_one_problem_per_line() {
        let err = ConfigErrors {
            problems: vec![
                Problem::new("server.listen", "bad"),
                Problem::new("shops[0].domain", "missing required key"),
                Problem::new("", "cannot read config file /x"),
            ],
        };
        assert_eq!(
            err.to_string(),
            "server.listen: bad\nshops[0].domain: missing required key\ncannot read config file /x"
        );
    }

    #[test]
    fn empty_file_reports_the_required_keys() {
        let problems = errors(parse_with("", Path::new("/"), &[], None));
        assert_eq!(paths(&problems), BTreeSet::from(["store.path", "shops"]));
        assert_eq!(message_at(&problems, "store.path"), "missing required key");
    }

    #[test]
    fn syntax_error_becomes_a_problem_with_its_position() {
        let text = "[server]\nlisten = \"0.0.0.0:8080\"\nbody_limit = = 3\n";
        let problems = errors(parse_with(text, Path::new("/"), &[], None));
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].path.starts_with("line 3, column "),
            "{problems:?}"
        );
        assert!(!problems[0].message.is_empty());
    }

    #[test]
    fn unreadable_file_is_a_problem_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let problems = Config::load(&missing).unwrap_err().problems;
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "");
        assert!(problems[0].message.contains("nope.toml"));
    }

    #[test]
    fn load_resolves_relative_paths_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wh.secret"), "whsec\r\n").unwrap();
        let file = dir.path().join("shipgate.toml");
        std::fs::write(
            &file,
            r#"
            [store]
            path = "state"
            [compliance]
            export_dir = "out/exports"
            [[shops]]
            domain = "example.myshopify.com"
            webhook_secrets = [{ file = "wh.secret" }]
            "#,
        )
        .unwrap();
        let config = Config::load(&file).unwrap().config;
        assert_eq!(config.store.path, dir.path().join("state"));
        assert_eq!(config.compliance.export_dir, dir.path().join("out/exports"));
        assert_eq!(config.shops[0].webhook_secrets[0].expose(), "whsec");
    }

    #[test]
    fn inline_secret_is_accepted_with_a_warning() {
        let text = MINIMAL.replace(r#"{ env = "WH" }"#, r#"{ value = "inline-wh" }"#);
        let loaded = parse_with(&text, Path::new("/"), &[], None).unwrap();
        assert_eq!(
            loaded.config.shops[0].webhook_secrets[0].expose(),
            "inline-wh"
        );
        assert_eq!(
            loaded.config.shops[0].webhook_secrets[0].source(),
            &SecretSource::Inline
        );
        assert_eq!(
            message_at(&loaded.warnings, "shops[0].webhook_secrets[0]"),
            "inline secret: for tests and demos only"
        );
    }

    #[test]
    fn debug_output_never_contains_secret_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "PLANTED-file-7c1d\n").unwrap();
        let text = r#"
            [admin]
            token = { value = "PLANTED-inline-4e2a" }
            [store]
            path = "s"
            [[shops]]
            domain = "example.myshopify.com"
            access_token = { file = "tok" }
            webhook_secrets = [{ env = "WH" }]
            [[shops]]
            domain = "other.myshopify.com"
            client_id = "id"
            client_secret = { env = "CS" }
            webhook_secrets = [{ credential = "wh" }]
        "#;
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(creds.join("wh"), "PLANTED-cred-9a0b").unwrap();
        let vars = [("WH", "PLANTED-env-3f6e"), ("CS", "PLANTED-env-5d8c")];
        let loaded = parse_with(text, dir.path(), &vars, Some(&creds)).unwrap();
        let debug = format!("{:?} {:#?}", loaded, loaded.config);
        assert!(!debug.contains("PLANTED"), "{debug}");
        assert!(debug.contains("Secret(env WH, redacted)"), "{debug}");
        assert!(debug.contains("Secret(credential wh, redacted)"), "{debug}");
        assert!(debug.contains("Secret(inline, redacted)"), "{debug}");
        assert_eq!(
            format!("{:?}", Secret::inline("PLANTED")),
            "Secret(inline, redacted)"
        );
        // The values are still there for the code that needs them.
        assert_eq!(
            loaded.config.shops[1].webhook_secrets[0].expose(),
            "PLANTED-cred-9a0b"
        );
    }

    #[test]
    fn secret_files_lose_exactly_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&[u8], &str)] = &[
            (b"tok", "tok"),
            (b"tok\n", "tok"),
            (b"tok\r\n", "tok"),
            (b"tok\n\n", "tok\n"),
            (b" tok \n", " tok "),
        ];
        for (i, (content, expected)) in cases.iter().enumerate() {
            let file = dir.path().join(format!("s{i}"));
            std::fs::write(&file, content).unwrap();
            let secret = read_secret_file(&file).unwrap();
            assert_eq!(secret.expose_secret(), *expected, "case {i}");
        }
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let err = read_secret_file(&dir.path().join("empty")).unwrap_err();
        assert!(err.contains("is empty"), "{err}");
        std::fs::write(dir.path().join("bin"), [0xff, 0xfe]).unwrap();
        let err = read_secret_file(&dir.path().join("bin")).unwrap_err();
        assert!(err.contains("not valid UTF-8"), "{err}");
        std::fs::write(dir.path().join("big"), vec![b'a'; 70 * 1024]).unwrap();
        let err = read_secret_file(&dir.path().join("big")).unwrap_err();
        assert!(err.contains("larger than"), "{err}");
    }

    #[test]
    fn credentials_come_from_the_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wh"), "cred-wh\n").unwrap();
        std::fs::write(dir.path().join("blank"), "").unwrap();
        let text = MINIMAL.replace(
            r#"[{ env = "WH" }]"#,
            r#"[{ credential = "wh" }, { credential = "absent" }, { credential = "blank" }, { credential = "../wh" }]"#,
        );
        let problems = errors(parse_with(&text, Path::new("/"), &[], Some(dir.path())));
        assert_eq!(
            paths(&problems),
            BTreeSet::from([
                "shops[0].webhook_secrets[1]",
                "shops[0].webhook_secrets[2]",
                "shops[0].webhook_secrets[3]",
            ])
        );
        assert!(message_at(&problems, "shops[0].webhook_secrets[1]").contains("absent"));
        assert!(message_at(&problems, "shops[0].webhook_secrets[2]").contains("empty"));
        assert!(
            message_at(&problems, "shops[0].webhook_secrets[3]")
                .contains("not a valid credential name")
        );

        let text = MINIMAL.replace(r#"{ env = "WH" }"#, r#"{ credential = "wh" }"#);
        let loaded = parse_with(&text, Path::new("/"), &[], Some(dir.path())).unwrap();
        let secret = &loaded.config.shops[0].webhook_secrets[0];
        assert_eq!(secret.expose(), "cred-wh");
        assert_eq!(secret.source(), &SecretSource::Credential("wh".into()));

        let problems = errors(parse_with(&text, Path::new("/"), &[], None));
        assert!(
            message_at(&problems, "shops[0].webhook_secrets[0]")
                .contains("CREDENTIALS_DIRECTORY is not set")
        );
    }

    #[test]
    fn secret_tables_must_name_exactly_one_known_source() {
        let text = MINIMAL.replace(
            r#"[{ env = "WH" }]"#,
            r#"["plain", {}, { env = "WH", value = "v" }, { env = "" }, { env = 3 }, { env = "EMPTY" }]"#,
        );
        let problems = errors(parse_with(&text, Path::new("/"), &[("EMPTY", "")], None));
        let p = "shops[0].webhook_secrets";
        assert!(message_at(&problems, &format!("{p}[0]")).starts_with("expected a secret such as"));
        assert!(message_at(&problems, &format!("{p}[0]")).ends_with("found a string"));
        assert!(message_at(&problems, &format!("{p}[1]")).contains("exactly one of"));
        assert!(message_at(&problems, &format!("{p}[2]")).contains("`env` and `value`"));
        assert_eq!(
            message_at(&problems, &format!("{p}[3].env")),
            "must not be empty"
        );
        assert_eq!(
            message_at(&problems, &format!("{p}[4].env")),
            "expected a string, found an integer"
        );
        assert_eq!(
            message_at(&problems, &format!("{p}[5]")),
            "environment variable EMPTY is empty"
        );
    }

    #[test]
    fn shop_credentials_rules() {
        let base = Path::new("/");
        let with =
            |extra: &str| MINIMAL.replace("webhook_secrets", &format!("{extra}\nwebhook_secrets"));

        let problems = errors(parse_with(
            &with(r#"client_id = "id""#),
            base,
            &[("WH", "w")],
            None,
        ));
        assert_eq!(paths(&problems), BTreeSet::from(["shops[0].client_secret"]));

        let text = with(r#"client_secret = { env = "CS" }"#);
        let problems = errors(parse_with(&text, base, &[("WH", "w"), ("CS", "c")], None));
        assert_eq!(paths(&problems), BTreeSet::from(["shops[0].client_id"]));

        let text = with("client_id = \"\"\nclient_secret = { env = \"CS\" }");
        let problems = errors(parse_with(&text, base, &[("WH", "w"), ("CS", "c")], None));
        assert_eq!(
            message_at(&problems, "shops[0].client_id"),
            "must not be empty"
        );

        let text = with(r#"access_token = { env = "AT" }"#);
        let loaded = parse_with(&text, base, &[("WH", "w"), ("AT", "tok")], None).unwrap();
        assert!(matches!(
            &loaded.config.shops[0].credentials,
            ShopCredentials::AccessToken(s) if s.expose() == "tok"
        ));
        assert!(!paths(&loaded.warnings).contains("shops[0]"));
    }

    #[test]
    fn webhook_secrets_are_required_and_non_empty() {
        let base = Path::new("/");
        let text = MINIMAL.replace(r#"[{ env = "WH" }]"#, "[]");
        let problems = errors(parse_with(&text, base, &[], None));
        assert_eq!(
            paths(&problems),
            BTreeSet::from(["shops[0].webhook_secrets"])
        );
        let text = MINIMAL.replace(r#"[{ env = "WH" }]"#, r#"{ env = "WH" }"#);
        let problems = errors(parse_with(&text, base, &[("WH", "w")], None));
        assert!(message_at(&problems, "shops[0].webhook_secrets").starts_with("expected an array"));
    }

    #[test]
    fn api_versions_are_quarterly() {
        for good in ["2026-10", "2025-01", "2024-04", "2023-07"] {
            assert!(is_api_version(good), "{good}");
        }
        for bad in [
            "2026-03",
            "2026-1",
            "26-10",
            "2026-10-01",
            "unstable",
            "2026_10",
            "２０２６-10",
        ] {
            assert!(!is_api_version(bad), "{bad}");
        }
    }

    #[test]
    fn shop_domains_are_checked() {
        assert!(check_domain("example.myshopify.com", false).is_ok());
        assert!(check_domain("shop.example.com", true).is_ok());
        assert!(check_domain("127.0.0.1", true).is_ok());
        let err = check_domain("shop.example.com", false).unwrap_err();
        assert!(err.contains("admin_base_url"), "{err}");
        let err = check_domain("Example.myshopify.com", false).unwrap_err();
        assert!(err.contains("`example.myshopify.com`"), "{err}");
        for bad in [
            "",
            "https://example.myshopify.com",
            "example.myshopify.com/admin",
            "example.myshopify.com:443",
            ".myshopify.com",
            "-x.myshopify.com",
            "ex ample.myshopify.com",
        ] {
            assert!(check_domain(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_checked() {
        for good in [
            "https://example.myshopify.com",
            "http://127.0.0.1:9999",
            "http://localhost:9999/",
            "http://[::1]:9999/sandbox",
            "https://Shop.Example.com/admin/api/2026-10/graphql.json",
        ] {
            assert!(parse_http_url(good).is_ok(), "{good}");
        }
        for bad in [
            "example.myshopify.com",
            "ftp://example.com",
            "https://",
            "https://user:pw@example.com",
            "https://example.com:99999",
            "https://example.com?x=1",
            "https://exa mple.com",
            "http://[::1",
        ] {
            assert!(parse_http_url(bad).is_err(), "{bad}");
        }
        let err = parse_http_url("https://user:hunter2@example.com").unwrap_err();
        assert!(!err.contains("hunter2"));
        assert!(parse_http_url("http://127.0.0.1:1").unwrap().loopback);
        assert!(parse_http_url("http://[::1]:1").unwrap().loopback);
        assert!(!parse_http_url("http://10.0.0.1:1").unwrap().loopback);
    }

    #[test]
    fn plain_http_to_a_remote_host_is_a_warning() {
        let text = MINIMAL.replace(
            "webhook_secrets",
            "admin_base_url = \"http://10.1.2.3:8080\"\nwebhook_secrets",
        );
        let loaded = parse_with(&text, Path::new("/"), &[("WH", "w")], None).unwrap();
        assert!(message_at(&loaded.warnings, "shops[0].admin_base_url").contains("unencrypted"));
        assert_eq!(
            loaded.config.shops[0].graphql_endpoint,
            "http://10.1.2.3:8080/admin/api/2026-10/graphql.json"
        );
    }

    #[test]
    fn value_checks_for_server_admin_and_log() {
        let text = format!(
            "{MINIMAL}\n{}",
            r#"
            [server]
            listen = "0.0.0.0:8080"
            body_limit = 1023
            header_read_timeout_ms = 1.5
            [admin]
            listen = "127.0.0.1:8080"
            [log]
            level = "info,[[[="
            "#
        );
        // The appended tables come after [[shops]] in the text, which TOML allows.
        let problems = errors(parse_with(&text, Path::new("/"), &[("WH", "w")], None));
        assert_eq!(
            paths(&problems),
            BTreeSet::from([
                "server.body_limit",
                "server.header_read_timeout_ms",
                "admin.listen",
                "log.level",
            ]),
            "{problems:#?}"
        );
        assert_eq!(
            message_at(&problems, "server.header_read_timeout_ms"),
            "expected an integer, found a float"
        );
        assert!(message_at(&problems, "admin.listen").contains("conflicts with server.listen"));
    }

    #[test]
    fn an_unreadable_listen_address_is_not_also_reported_as_a_conflict() {
        let text = format!(
            "{MINIMAL}\n[server]\nlisten = \"localhost:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"\n"
        );
        let problems = errors(parse_with(&text, Path::new("/"), &[("WH", "w")], None));
        assert_eq!(
            paths(&problems),
            BTreeSet::from(["server.listen"]),
            "{problems:#?}"
        );
    }

    #[test]
    fn listener_conflicts_point_at_the_key_that_was_written() {
        let base = Path::new("/");
        let vars = [("WH", "w")];
        let text = format!("{MINIMAL}\n[server]\nlisten = \"127.0.0.1:8081\"\n");
        let problems = errors(parse_with(&text, base, &vars, None));
        assert_eq!(paths(&problems), BTreeSet::from(["server.listen"]));

        // Different ports, or the same port on two distinct specific addresses, are fine.
        let text = format!(
            "{MINIMAL}\n[server]\nlisten = \"10.0.0.1:8081\"\n[admin]\nlisten = \"127.0.0.1:8081\"\n"
        );
        assert!(parse_with(&text, base, &vars, None).is_ok());

        // A reachable admin API with a token is allowed but flagged.
        let text =
            format!("{MINIMAL}\n[admin]\nlisten = \"0.0.0.0:8081\"\ntoken = {{ env = \"TOK\" }}\n");
        let loaded = parse_with(&text, base, &[("WH", "w"), ("TOK", "t")], None).unwrap();
        assert!(message_at(&loaded.warnings, "admin.listen").contains("firewall"));
    }

    #[test]
    fn key_paths_quote_unusual_keys_and_suggest_close_ones() {
        assert_eq!(join("", "server"), "server");
        assert_eq!(join("shops[0]", "a.b"), "shops[0].\"a.b\"");
        assert_eq!(closest("lsiten", SERVER_KEYS), Some("listen"));
        assert_eq!(
            closest("header_read_timeout", SERVER_KEYS),
            Some("header_read_timeout_ms")
        );
        assert_eq!(closest("Access-Token", SHOP_KEYS), Some("access_token"));
        assert_eq!(closest("colour", SHOP_KEYS), None);
    }

    #[test]
    fn shipped_example_config_loads_without_problems() {
        let text = include_str!("../systemd/shipgate.toml");
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        std::fs::create_dir(&creds).unwrap();
        for name in [
            "admin_token",
            "example_access_token",
            "example_webhook_secret",
            "example_webhook_secret_old",
            "second_client_secret",
            "second_webhook_secret",
            "acme_secret",
        ] {
            std::fs::write(creds.join(name), format!("value-of-{name}\n")).unwrap();
        }
        let loaded = parse_with(text, dir.path(), &[], Some(&creds))
            .unwrap_or_else(|e| panic!("example config does not load:\n{e}"));
        assert_eq!(loaded.warnings, vec![], "example config has warnings");
        let c = loaded.config;

        // The example spells out the defaults, so it must agree with the minimal file.
        let defaults = parse_with(MINIMAL, Path::new("/"), &[("WH", "w")], None)
            .unwrap()
            .config;
        assert_eq!(c.server.listen, defaults.server.listen);
        assert_eq!(c.server.body_limit, defaults.server.body_limit);
        assert_eq!(
            c.server.header_read_timeout,
            defaults.server.header_read_timeout
        );
        assert_eq!(
            c.server.body_read_timeout,
            defaults.server.body_read_timeout
        );
        assert_eq!(c.server.shutdown_grace, defaults.server.shutdown_grace);
        assert_eq!(c.admin.listen, defaults.admin.listen);
        assert_eq!(
            c.store.cache_capacity_bytes,
            defaults.store.cache_capacity_bytes
        );
        assert_eq!(c.store.flush_interval, defaults.store.flush_interval);
        assert_eq!(c.log.format, defaults.log.format);
        assert_eq!(c.log.level, defaults.log.level);

        assert_eq!(c.admin.token.unwrap().expose(), "value-of-admin_token");
        assert_eq!(c.store.path, PathBuf::from("/var/lib/shipgate"));
        assert_eq!(
            c.compliance.export_dir,
            PathBuf::from("/var/lib/shipgate/exports")
        );
        assert_eq!(c.shops.len(), 2);
        assert!(matches!(
            c.shops[0].credentials,
            ShopCredentials::AccessToken(_)
        ));
        assert_eq!(c.shops[0].webhook_secrets.len(), 2);
        assert!(matches!(
            c.shops[1].credentials,
            ShopCredentials::ClientCredentials { .. }
        ));
        assert_eq!(
            c.shops[1].graphql_endpoint,
            format!(
                "{}/admin/api/{}/graphql.json",
                c.shops[1].admin_base_url, c.shops[1].api_version
            )
        );

        // The example shows one supplier of each adapter and spells out the workflow defaults.
        assert_eq!(c.workflow, defaults.workflow);
        let kinds: Vec<(&str, AdapterKind)> = c
            .suppliers
            .iter()
            .map(|s| (s.name.as_str(), s.adapter_kind()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("acme", AdapterKind::Http),
                ("bravo", AdapterKind::Csv),
                ("charlie", AdapterKind::Manual),
            ]
        );
        let AdapterConfig::Http(http) = &c.suppliers[0].adapter else {
            panic!("acme is an http supplier");
        };
        assert_eq!(http.secrets[0].expose(), "value-of-acme_secret");
        assert_eq!(
            http.request_timeout,
            Duration::from_secs(DEFAULT_SUPPLIER_TIMEOUT_SECS as u64)
        );
        assert_eq!(c.suppliers[0].backups, ["bravo", "charlie"]);
        assert!(c.suppliers[1].skus.is_empty());
    }

    const SUPPLIERS: &str = r#"
        [[suppliers]]
        name = "acme"
        adapter = "http"
        endpoint = "https://agent.example/shipgate/orders"
        secrets = [{ env = "ACME" }, { env = "ACME_OLD" }]
        skus = ["MUG-*", "TEE-??-RED"]
        backups = ["bravo", "charlie"]
        request_timeout_secs = 5
        [[suppliers]]
        name = "bravo"
        adapter = "csv"
        [[suppliers]]
        name = "charlie"
        adapter = "manual"
        skus = ["SAMPLE-*"]
        backups = ["acme"]
    "#;

    fn with_suppliers(suppliers: &str) -> String {
        format!("{MINIMAL}\n{suppliers}")
    }

    const SUPPLIER_VARS: &[(&str, &str)] = &[
        ("WH", "w"),
        ("ACME", "acme-secret-9d2e"),
        ("ACME_OLD", "acme-old-secret-4b7f"),
    ];

    #[test]
    fn suppliers_and_workflow_parse_with_all_values() {
        let text = format!(
            "{}\n[workflow]\nhold_on_exceptions = false\nnotify_merchant = true\nroute_orders_created_after = \"2026-11-01T00:00:00Z\"\nno_acceptance_business_days = 4\nstalled_business_days = 7\n",
            with_suppliers(SUPPLIERS)
        );
        let loaded = parse_with(&text, Path::new("/"), SUPPLIER_VARS, None).unwrap();
        assert!(
            !loaded
                .warnings
                .iter()
                .any(|w| w.path.starts_with("suppliers")),
            "{:?}",
            loaded.warnings
        );
        let c = loaded.config;
        assert_eq!(
            c.workflow,
            WorkflowConfig {
                hold_on_exceptions: false,
                notify_merchant: true,
                notify_customer: true,
                route_orders_created_after: Some(
                    crate::order::Timestamp::parse("2026-11-01T00:00:00Z").unwrap()
                ),
                no_acceptance_business_days: 4,
                stalled_business_days: 7,
            }
        );
        assert_eq!(c.suppliers.len(), 3);

        let acme = c.supplier("acme").unwrap();
        assert_eq!(acme.adapter_kind(), AdapterKind::Http);
        let AdapterConfig::Http(http) = &acme.adapter else {
            panic!("acme is an http supplier");
        };
        assert_eq!(http.endpoint, "https://agent.example/shipgate/orders");
        let secrets: Vec<&str> = http.secrets.iter().map(Secret::expose).collect();
        assert_eq!(secrets, ["acme-secret-9d2e", "acme-old-secret-4b7f"]);
        assert_eq!(http.secrets[0].source(), &SecretSource::Env("ACME".into()));
        assert_eq!(http.request_timeout, Duration::from_secs(5));
        assert_eq!(acme.skus, ["MUG-*", "TEE-??-RED"]);
        assert_eq!(acme.backups, ["bravo", "charlie"]);

        let bravo = c.supplier("bravo").unwrap();
        assert!(matches!(bravo.adapter, AdapterConfig::Csv));
        assert!(bravo.skus.is_empty() && bravo.backups.is_empty());
        // A cycle (acme backs up charlie, charlie backs up acme) is fine.
        let charlie = c.supplier("charlie").unwrap();
        assert!(matches!(charlie.adapter, AdapterConfig::Manual));
        assert_eq!(charlie.backups, ["acme"]);
        // Names are exact: a look-alike in a webhook URL names no supplier.
        assert!(c.supplier("ACME").is_none());

        // The loaded config routes as written.
        let router = crate::suppliers::routing::Router::from_config(&c);
        let route = router.route(Some("tee-xl-red")).unwrap();
        assert_eq!(route.supplier, "acme");
        assert_eq!(route.backups, ["bravo", "charlie"]);
        assert_eq!(router.route(Some("SAMPLE-1")).unwrap().supplier, "charlie");
    }

    #[test]
    fn deliveries_are_kept_sixty_days_unless_configured() {
        let vars = [("WH", "w")];
        let loaded = parse_with(MINIMAL, Path::new("/"), &vars, None).unwrap();
        assert_eq!(
            loaded.config.store.delivery_retention,
            Some(Duration::from_secs(60 * 24 * 3600))
        );
        let with = |days: &str| {
            MINIMAL.replace(
                "path = \"data\"",
                &format!("path = \"data\"\ndelivery_retention_days = {days}"),
            )
        };
        let kept = parse_with(&with("0"), Path::new("/"), &vars, None).unwrap();
        assert_eq!(kept.config.store.delivery_retention, None, "0 keeps them");
        let problems = errors(parse_with(&with("3"), Path::new("/"), &vars, None));
        assert!(
            message_at(&problems, "store.delivery_retention_days").contains("at least 7 days"),
            "{problems:?}"
        );
    }

    #[test]
    fn suppliers_and_workflow_are_optional_with_defaults() {
        let loaded = parse_with(MINIMAL, Path::new("/"), &[("WH", "w")], None).unwrap();
        assert!(loaded.config.suppliers.is_empty());
        assert_eq!(
            loaded.config.workflow,
            WorkflowConfig {
                hold_on_exceptions: true,
                notify_merchant: false,
                notify_customer: true,
                route_orders_created_after: None,
                no_acceptance_business_days: 3,
                stalled_business_days: 5,
            }
        );

        let text = with_suppliers(
            r#"
            [[suppliers]]
            name = "acme"
            adapter = "http"
            endpoint = "http://127.0.0.1:9000/orders"
            secrets = [{ env = "ACME" }]
            skus = ["*"]
            "#,
        );
        let loaded = parse_with(&text, Path::new("/"), SUPPLIER_VARS, None).unwrap();
        let AdapterConfig::Http(http) = &loaded.config.suppliers[0].adapter else {
            panic!("acme is an http supplier");
        };
        assert_eq!(http.request_timeout, Duration::from_secs(20));
        assert!(loaded.config.suppliers[0].backups.is_empty());
    }

    #[test]
    fn tracking_providers_parse_and_their_mistakes_are_named() {
        let good = with_suppliers(
            r#"
            [[tracking]]
            provider = "aftership"
            secrets = [{ env = "ACME" }, { env = "ACME_OLD" }]
            [[tracking]]
            provider = "17track"
            secrets = [{ env = "ACME" }]
            "#,
        );
        let config = parse_with(&good, Path::new("/"), SUPPLIER_VARS, None)
            .unwrap()
            .config;
        assert_eq!(config.tracking.len(), 2);
        assert_eq!(config.tracking[0].provider, "aftership");
        assert_eq!(
            config.tracking[0].secrets[1].expose(),
            "acme-old-secret-4b7f"
        );

        let bad = with_suppliers(
            r#"
            [[tracking]]
            provider = "fedex-direct"
            secrets = [{ env = "ACME" }]
            [[tracking]]
            provider = "aftership"
            [[tracking]]
            provider = "aftership"
            secrets = [{ env = "ACME" }]
            colour = "red"
            [[tracking]]
            secrets = [{ env = "ACME" }]
            "#,
        );
        let problems = errors(parse_with(&bad, Path::new("/"), SUPPLIER_VARS, None));
        assert_eq!(
            paths(&problems),
            BTreeSet::from([
                "tracking[0].provider",
                "tracking[1].secrets",
                "tracking[2].provider",
                "tracking[2].colour",
                "tracking[3].provider",
            ]),
            "{problems:#?}"
        );
        assert!(message_at(&problems, "tracking[0].provider").contains("unknown provider"));
        assert!(message_at(&problems, "tracking[2].provider").contains("configured twice"));
        assert!(message_at(&problems, "tracking[1].secrets").contains("unsigned"));
    }

    #[test]
    fn supplier_mistakes_are_all_reported_with_their_key_paths() {
        let text = with_suppliers(
            r#"
            [[suppliers]]
            name = "acme"
            adapter = "http"
            skus = ["MUG-*", "", 7]
            backups = ["bravoo", "acme", "charlie", "charlie"]
            request_timeout_secs = 0
            [[suppliers]]
            name = "bravo"
            adapter = "csv"
            endpoint = "https://agent.example/orders"
            secrets = [{ env = "ACME" }]
            request_timeout_secs = 5
            skus = ["TEE-*"]
            [[suppliers]]
            name = "acme"
            adapter = "manual"
            skus = "CAP-*"
            [[suppliers]]
            name = "Charlie"
            adapter = "ftp"
            skus = ["HAT-*"]
            [[suppliers]]
            name = "charlie"
            adapter = "http"
            endpoint = "agent.example/orders"
            secrets = []
            skus = ["SOCK-*"]
            backup = ["acme"]
            [[suppliers]]
            adapter = "manual"
            skus = ["BAG-*"]
            [[suppliers]]
            name = "a-very-long-supplier-name-over-32"
            skus = ["BOX-*"]
            [workflow]
            hold_on_exceptions = "yes"
            notify_merchnat = true
            "#,
        );
        let problems = errors(parse_with(&text, Path::new("/"), SUPPLIER_VARS, None));
        let expected = BTreeSet::from([
            "suppliers[0].endpoint",
            "suppliers[0].secrets",
            "suppliers[0].skus[1]",
            "suppliers[0].skus[2]",
            "suppliers[0].backups[0]",
            "suppliers[0].backups[1]",
            "suppliers[0].backups[3]",
            "suppliers[0].request_timeout_secs",
            "suppliers[1].endpoint",
            "suppliers[1].secrets",
            "suppliers[1].request_timeout_secs",
            "suppliers[2].name",
            "suppliers[2].skus",
            "suppliers[3].name",
            "suppliers[3].adapter",
            "suppliers[4].endpoint",
            "suppliers[4].secrets",
            "suppliers[4].backup",
            "suppliers[5].name",
            "suppliers[6].name",
            "suppliers[6].adapter",
            "workflow.hold_on_exceptions",
            "workflow.notify_merchnat",
        ]);
        assert_eq!(paths(&problems), expected, "{problems:#?}");

        assert_eq!(
            message_at(&problems, "suppliers[0].backups[0]"),
            "no supplier named \"bravoo\"; did you mean \"bravo\"?"
        );
        assert!(message_at(&problems, "suppliers[0].backups[1]").contains("this supplier itself"));
        assert!(message_at(&problems, "suppliers[0].backups[3]").contains("listed twice"));
        assert!(message_at(&problems, "suppliers[0].endpoint").starts_with("missing required key"));
        assert!(message_at(&problems, "suppliers[0].secrets").starts_with("missing required key"));
        assert!(message_at(&problems, "suppliers[0].skus[1]").contains("empty pattern"));
        assert_eq!(
            message_at(&problems, "suppliers[0].skus[2]"),
            "expected a string, found an integer"
        );
        assert_eq!(
            message_at(&problems, "suppliers[0].request_timeout_secs"),
            "must be between 1 and 300, found 0"
        );
        for key in ["endpoint", "secrets", "request_timeout_secs"] {
            let message = message_at(&problems, &format!("suppliers[1].{key}"));
            assert!(
                message.starts_with(&format!("only the http adapter uses `{key}`")),
                "{message}"
            );
            assert!(message.contains("\"csv\""), "{message}");
        }
        assert_eq!(
            message_at(&problems, "suppliers[2].name"),
            "duplicate supplier name \"acme\": already configured in suppliers[0]"
        );
        assert!(message_at(&problems, "suppliers[2].skus").starts_with("expected an array"));
        assert_eq!(
            message_at(&problems, "suppliers[3].name"),
            "\"Charlie\" must be lowercase: \"charlie\""
        );
        assert_eq!(
            message_at(&problems, "suppliers[3].adapter"),
            "expected \"http\", \"csv\" or \"manual\", found \"ftp\""
        );
        assert!(message_at(&problems, "suppliers[4].endpoint").contains("http://"));
        assert!(message_at(&problems, "suppliers[4].secrets").contains("at least one"));
        assert_eq!(
            message_at(&problems, "suppliers[4].backup"),
            "unknown key; did you mean `backups`?"
        );
        assert!(message_at(&problems, "suppliers[5].name").starts_with("missing required key"));
        assert!(message_at(&problems, "suppliers[6].name").contains("at most 32"));
        assert!(message_at(&problems, "suppliers[6].adapter").starts_with("missing required key"));
        assert_eq!(
            message_at(&problems, "workflow.notify_merchnat"),
            "unknown key; did you mean `notify_merchant`?"
        );
    }

    #[test]
    fn supplier_names_use_a_url_safe_alphabet() {
        for good in ["acme", "a", "agent_2", "cn-shenzhen-01", &"x".repeat(32)] {
            assert_eq!(check_supplier_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Acme",
            "acme agent",
            "acme/eu",
            "acmé",
            "a.b",
            &"x".repeat(33),
        ] {
            assert!(check_supplier_name(bad).is_err(), "{bad}");
        }
        assert!(
            check_supplier_name("acme/eu")
                .unwrap_err()
                .contains("/webhooks/suppliers/")
        );
    }

    #[test]
    fn a_supplier_nobody_can_reach_is_a_warning() {
        let text = with_suppliers(
            r#"
            [[suppliers]]
            name = "acme"
            adapter = "manual"
            skus = ["MUG-*"]
            backups = ["bravo"]
            [[suppliers]]
            name = "bravo"
            adapter = "csv"
            [[suppliers]]
            name = "idle"
            adapter = "manual"
            skus = []
            [[suppliers]]
            name = "late"
            adapter = "manual"
            skus = ["mug-*", "TEE-*"]
            "#,
        );
        let loaded = parse_with(&text, Path::new("/"), SUPPLIER_VARS, None).unwrap();
        let supplier_warnings: Vec<&Problem> = loaded
            .warnings
            .iter()
            .filter(|w| w.path.starts_with("suppliers"))
            .collect();
        assert_eq!(
            supplier_warnings
                .iter()
                .map(|w| w.path.as_str())
                .collect::<Vec<_>>(),
            ["suppliers[2].skus", "suppliers[3].skus[0]"],
            "{supplier_warnings:?}"
        );
        assert!(message_at(&loaded.warnings, "suppliers[2].skus").contains("receives nothing"));
        assert!(
            message_at(&loaded.warnings, "suppliers[3].skus[0]")
                .contains("also a pattern of suppliers[0]")
        );

        // A supplier that lists only itself is still unreachable: that backup is refused.
        let text = with_suppliers(
            r#"
            [[suppliers]]
            name = "solo"
            adapter = "manual"
            backups = ["solo"]
            "#,
        );
        let problems = errors(parse_with(&text, Path::new("/"), SUPPLIER_VARS, None));
        assert_eq!(
            paths(&problems),
            BTreeSet::from(["suppliers[0].backups[0]"])
        );
    }

    #[test]
    fn plain_http_supplier_endpoint_off_loopback_is_a_warning() {
        let text = with_suppliers(
            r#"
            [[suppliers]]
            name = "acme"
            adapter = "http"
            endpoint = "http://agent.example/orders"
            secrets = [{ env = "ACME" }]
            skus = ["*"]
            "#,
        );
        let loaded = parse_with(&text, Path::new("/"), SUPPLIER_VARS, None).unwrap();
        assert!(message_at(&loaded.warnings, "suppliers[0].endpoint").contains("unencrypted"));
    }

    #[test]
    fn supplier_secrets_never_appear_in_problems_or_the_summary() {
        let text = with_suppliers(
            r#"
            [[suppliers]]
            name = "acme"
            adapter = "http"
            endpoint = "https://agent.example/orders"
            secrets = [{ value = "PLANTED-supplier-7c1d" }, { env = "ACME" }]
            skus = ["MUG-*"]
            "#,
        );
        let loaded = parse_with(&text, Path::new("/"), SUPPLIER_VARS, None).unwrap();
        assert!(message_at(&loaded.warnings, "suppliers[0].secrets[0]").contains("inline"));
        let summary = loaded.config.summary();
        let debug = format!("{:?}", loaded.config);
        for shown in [&summary, &debug] {
            assert!(!shown.contains("PLANTED"), "{shown}");
            assert!(!shown.contains("acme-secret-9d2e"), "{shown}");
        }
    }

    #[test]
    fn summary_lists_every_supplier_in_routing_order() {
        let loaded = parse_with(
            &with_suppliers(SUPPLIERS),
            Path::new("/"),
            SUPPLIER_VARS,
            None,
        )
        .unwrap();
        assert_eq!(
            loaded.config.summary(),
            "1 shop, 3 suppliers\n  \
             supplier acme (http https://agent.example/shipgate/orders, timeout 5s, secrets: \
             env ACME, env ACME_OLD) skus: MUG-* TEE-??-RED; backups: bravo, charlie\n  \
             supplier bravo (csv) skus: none; backups: none\n  \
             supplier charlie (manual) skus: SAMPLE-*; backups: acme"
        );
        let loaded = parse_with(MINIMAL, Path::new("/"), &[("WH", "w")], None).unwrap();
        assert_eq!(loaded.config.summary(), "1 shop, 0 suppliers");
    }
}
