//! The command line: `shipgate run`, `config check`, `version`, `demo`, and the operator
//! commands (`orders`, `reconcile`, `exceptions`, `supplier`, `shipments`, `outbox`, and the
//! physical evidence: `check record`, `pack record`, `parcel label`, `parcel accept`).
//!
//! Every command exits 0 on success and non-zero with a one-line reason (per problem, for
//! `config check`) on failure: 1 for a runtime failure, 2 for a configuration that does not load.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::daemon::{Daemon, Options};
use crate::store::Durability;

/// The environment variable that switches flushing off. It exists only so the crash test can
/// show that it finds losses without flushing; never set it in production.
pub const UNSAFE_NO_FLUSH_ENV: &str = "SHIPGATE_UNSAFE_NO_FLUSH";

#[derive(Debug, Parser)]
#[command(
    name = "shipgate",
    version,
    about = "Fulfils Shopify orders only after the carrier has the parcel and a physical check is recorded"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    Run {
        /// The configuration file.
        #[arg(
            long,
            env = "SHIPGATE_CONFIG",
            default_value = "/etc/shipgate/shipgate.toml"
        )]
        config: PathBuf,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run the self-contained sandbox demo on loopback and check every outcome.
    Demo,
    /// Compare Shopify with the mirror and report every drift class; --repair fixes what can be.
    Reconcile {
        #[command(flatten)]
        common: Common,
        /// Only this shop (default: every shop with Admin API credentials).
        #[arg(long)]
        shop: Option<String>,
        /// Only orders updated since (YYYY-MM-DD or RFC 3339); default: the last 59 days, all
        /// that Shopify shows an app with the read_orders scope.
        #[arg(long)]
        since: Option<String>,
        /// Fix what can be fixed safely, and say what was done.
        #[arg(long)]
        repair: bool,
    },
    /// Connected shops.
    Shops {
        #[command(subcommand)]
        command: ShopsCommand,
    },
    /// Mirrored orders.
    Orders {
        #[command(subcommand)]
        command: OrdersCommand,
    },
    /// Exceptions of the supplier workflow: what stops an order, and the decisions it allows.
    Exceptions {
        #[command(subcommand)]
        command: ExceptionsCommand,
    },
    /// Suppliers: CSV sheets for agents, and events entered by hand.
    Supplier {
        #[command(subcommand)]
        command: SupplierCommand,
    },
    /// Shipments: lines, evidence, derived status and outbound effects.
    Shipments {
        #[command(subcommand)]
        command: ShipmentsCommand,
    },
    /// The outbox: effects sent, or to be sent, to suppliers and Shopify.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Physical checks of shipments (SPEC 3.1), entered by an operator.
    Check {
        #[command(subcommand)]
        command: CheckCommand,
    },
    /// How shipments were packed into parcels, entered by an operator.
    Pack {
        #[command(subcommand)]
        command: PackCommand,
    },
    /// Parcels: their labels, and the carrier's acceptance recorded by hand with evidence.
    Parcel {
        #[command(subcommand)]
        command: ParcelCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
enum ExceptionsCommand {
    /// List exceptions, oldest first: the open ones, or all with --all.
    List {
        #[command(flatten)]
        common: Common,
        /// Closed exceptions too.
        #[arg(long)]
        all: bool,
        /// Only this kind.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(
            crate::workflow::model::ExceptionKind::ALL.map(|k| k.name())
        ))]
        kind: Option<String>,
        /// Only this shop.
        #[arg(long)]
        shop: Option<String>,
    },
    /// Show one exception: its subject, the decisions it allows, past decisions, its Shopify
    /// hold, and the order's shipments with their status.
    Show {
        #[command(flatten)]
        common: Common,
        /// The exception (EX-…).
        id: String,
    },
    /// Take a decision on an open exception. With the daemon stopped, the decision is recorded
    /// in the store, and the messages and Shopify hold releases it calls for are sent when the
    /// daemon starts.
    Decide {
        #[command(flatten)]
        common: Common,
        /// The exception (EX-…).
        id: String,
        /// The decision (`exceptions show` lists those the exception allows).
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(
            crate::workflow::model::Decision::NAMES
        ))]
        decision: String,
        /// The supplier to route or reroute to (reroute without it takes the next backup).
        #[arg(long)]
        supplier: Option<String>,
        /// The day to wait until (YYYY-MM-DD), for wait.
        #[arg(long)]
        until: Option<String>,
        /// Why, for the record.
        #[arg(long)]
        note: Option<String>,
        /// Who decides (default: $USER, or `operator`).
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SupplierCommand {
    /// Write the CSV sheet of the shipments waiting for a supplier (docs/suppliers.md section
    /// 4), to stdout or to a file readable only by its owner, since it holds addresses.
    Export {
        #[command(flatten)]
        target: ConfigArg,
        /// The supplier, as named in the configuration.
        supplier: String,
        /// Write to this file (mode 0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Import a supplier's sheet of events. Every row is checked first: one bad row refuses
    /// the whole file, with the row numbers. Importing the same file again records nothing new.
    Import {
        #[command(flatten)]
        common: Common,
        /// The supplier, as named in the configuration.
        supplier: String,
        /// The CSV file.
        file: PathBuf,
        /// Who imports (default: $USER, or `operator`).
        #[arg(long)]
        by: Option<String>,
    },
    /// Record one supplier event by hand: the JSON of docs/suppliers.md section 3. An event
    /// without `id` gets `manual-<unix ms>-<random>`, so running the command twice records it
    /// twice: give an `id` to make a retry safe. An event without `occurred_at` happened now.
    #[command(group(clap::ArgGroup::new("input").required(true)))]
    Event {
        #[command(flatten)]
        target: ConfigArg,
        /// The supplier, as named in the configuration.
        supplier: String,
        /// The event's JSON.
        #[arg(long = "json", value_name = "EVENT", group = "input")]
        event: Option<String>,
        /// A file holding the event's JSON.
        #[arg(long, group = "input")]
        file: Option<PathBuf>,
        /// Who records it (default: $USER, or `operator`).
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ShipmentsCommand {
    /// Show one shipment: lines, evidence timeline, status, exceptions and outbound effects.
    Show {
        #[command(flatten)]
        common: Common,
        /// The shipment (SG-…).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// List outbound effects, newest first, with state, attempts, next attempt and last error.
    List {
        #[command(flatten)]
        common: Common,
        /// Only effects refused for good.
        #[arg(long)]
        failed: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
enum CheckCommand {
    /// Record a physical check of a shipment, for its supplier: the JSON check record of
    /// docs/suppliers.md section 3 (`inspector`, `checked_at`, `lines`, `result`, …). A check
    /// that does not fit the shipment is refused with every reason; a failed one opens a
    /// "check failed" exception. Recording the same file again records nothing new.
    Record {
        #[command(flatten)]
        common: Common,
        /// The shipment (SG-…).
        shipment: String,
        /// The check record's JSON.
        #[arg(long)]
        file: PathBuf,
        /// Who records it (default: $USER, or `operator`).
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum PackCommand {
    /// Record how a shipment was packed: one parcel with --parcel and --line, or several
    /// with --file. Recording the same packing again records nothing new.
    #[command(group(clap::ArgGroup::new("packing").required(true).args(["parcel", "file"])))]
    Record {
        #[command(flatten)]
        common: Common,
        /// The shipment (SG-…).
        shipment: String,
        /// The parcel's id (as on its label or the packing list).
        #[arg(long, requires = "lines")]
        parcel: Option<String>,
        /// LINE=QUANTITY: the line item (its id, or its SKU when only one line has it) and
        /// how many of it are in the parcel. Repeat for each line.
        #[arg(long = "line", value_name = "LINE=QTY", requires = "parcel")]
        lines: Vec<String>,
        /// The parcel's weight in grams.
        #[arg(long, conflicts_with = "file")]
        weight_grams: Option<i64>,
        /// The parcel's size in centimetres, LxWxH (e.g. 30x20x10).
        #[arg(long, value_name = "LxWxH", conflicts_with = "file")]
        dimensions_cm: Option<String>,
        /// A photo of the packed parcel: sha256:<64 hex>[=URL or file name]. Repeatable.
        #[arg(long = "photo", value_name = "SHA256[=URL]", conflicts_with = "file")]
        photos: Vec<String>,
        /// A JSON file with the parcels, as the `packed` event of docs/suppliers.md section 3
        /// writes them: {"parcels": [{"parcel_id", "lines": [{"line_id", "quantity"}], …}]}.
        #[arg(long, conflicts_with = "lines")]
        file: Option<PathBuf>,
        /// Who records it (default: $USER, or `operator`).
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ParcelCommand {
    /// Record a parcel's label: carrier and tracking number. Carrier events that arrived for
    /// the number before the label are brought in.
    Label {
        #[command(flatten)]
        common: Common,
        /// The shipment (SG-…).
        shipment: String,
        /// The parcel (may be left out when the shipment has one parcel).
        #[arg(long)]
        parcel: Option<String>,
        /// The carrier, as Shopify spells it where it can (UPS, USPS, DHL Express, …).
        #[arg(long)]
        carrier: String,
        /// The tracking number.
        #[arg(long)]
        number: String,
        /// The tracking page, for carriers Shopify does not know.
        #[arg(long)]
        url: Option<String>,
        /// Who records it (default: $USER, or `operator`).
        #[arg(long)]
        by: Option<String>,
    },
    /// Record, by hand, that the carrier accepted a parcel: a manual carrier scan resting on
    /// evidence (the SHA-256 of the carrier's receipt or a photo of the handover). The
    /// acceptance rule judges it like any carrier scan. A number no label carries yet is
    /// kept until a label arrives.
    Accept {
        #[command(flatten)]
        common: Common,
        /// The tracking number.
        number: String,
        /// When the carrier took the parcel, RFC 3339 with its offset
        /// (2026-11-25T10:00:00+08:00).
        #[arg(long)]
        at: String,
        /// Where, as the receipt says.
        #[arg(long)]
        location: Option<String>,
        /// sha256:<64 hex>[=URL or file name] of the receipt or photo. Required; repeatable.
        #[arg(long = "evidence", value_name = "SHA256[=URL]")]
        evidence: Vec<String>,
        /// What shows the carrier has the parcel. Required.
        #[arg(long)]
        note: Option<String>,
        /// The carrier (default: the one the label names).
        #[arg(long)]
        carrier: Option<String>,
        /// Who records it (default: $USER, or `operator`).
        #[arg(long)]
        by: Option<String>,
    },
}

/// The configuration file alone, for commands whose output has one format.
#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The configuration file (to find the admin API, or the store when the daemon is stopped).
    #[arg(
        long,
        env = "SHIPGATE_CONFIG",
        default_value = "/etc/shipgate/shipgate.toml"
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum ShopsCommand {
    /// Subscribe the shops' webhooks (orders, fulfillment orders, app/uninstalled) to shipgate's
    /// public endpoint through the Admin API. Existing subscriptions are left as they are.
    Subscribe {
        #[command(flatten)]
        common: Common,
        /// The public HTTPS address Shopify delivers to, e.g. https://shipgate.example.com/webhooks/shopify.
        #[arg(long)]
        url: String,
        /// Only this shop.
        #[arg(long)]
        shop: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum OrdersCommand {
    /// List mirrored orders, newest change first.
    List {
        #[command(flatten)]
        common: Common,
        /// Only this shop.
        #[arg(long)]
        shop: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one order: by name (#1001 or 1001), numeric id or gid.
    Show {
        #[command(flatten)]
        common: Common,
        /// The order.
        order: String,
        /// The shop (needed when several shops could have the name).
        #[arg(long)]
        shop: Option<String>,
    },
}

/// Options every operator command takes.
#[derive(Debug, clap::Args)]
struct Common {
    /// The configuration file (to find the admin API, or the store when the daemon is stopped).
    #[arg(
        long,
        env = "SHIPGATE_CONFIG",
        default_value = "/etc/shipgate/shipgate.toml"
    )]
    config: PathBuf,
    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a configuration file: list every problem with its key, exit non-zero if any.
    Check {
        /// The configuration file.
        #[arg(
            long,
            env = "SHIPGATE_CONFIG",
            default_value = "/etc/shipgate/shipgate.toml"
        )]
        config: PathBuf,
    },
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("shipgate {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => config_check(&config),
        Command::Run { config } => run(&config),
        Command::Reconcile {
            common,
            shop,
            since,
            repair,
        } => match runtime().and_then(|rt| {
            rt.block_on(reconcile(
                &common,
                shop.as_deref(),
                since.as_deref(),
                repair,
            ))
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed(e),
        },
        Command::Shops {
            command: ShopsCommand::Subscribe { common, url, shop },
        } => {
            match runtime().and_then(|rt| rt.block_on(subscribe(&common, &url, shop.as_deref()))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failed(e),
            }
        }
        Command::Orders { command } => {
            match runtime().and_then(|rt| rt.block_on(orders(command))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failed(e),
            }
        }
        Command::Exceptions { command } => operate(exceptions(command)),
        Command::Supplier { command } => operate(supplier(command)),
        Command::Shipments { command } => operate(shipments(command)),
        Command::Outbox { command } => operate(outbox(command)),
        Command::Check { command } => operate(check(command)),
        Command::Pack { command } => operate(pack(command)),
        Command::Parcel { command } => operate(parcel(command)),
        Command::Demo => match runtime().and_then(|rt| rt.block_on(crate::demo::run())) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => fail(&format!("demo failed: {e:#}")),
        },
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("shipgate: {reason}");
    ExitCode::from(1)
}

/// A configuration an operator command could not load: exit code 2, as for `run`.
#[derive(Debug)]
struct Unloadable(String);

impl std::fmt::Display for Unloadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unloadable {}

/// Loads the configuration for an operator command; every problem is named with the file, one
/// per line, as `config check` names them.
fn load_for_command(path: &Path) -> anyhow::Result<Config> {
    Config::load(path)
        .map(|loaded| loaded.config)
        .map_err(|errors| {
            anyhow::Error::new(Unloadable(
                errors
                    .problems
                    .iter()
                    .map(|problem| format!("{}: {problem}", path.display()))
                    .collect::<Vec<_>>()
                    .join("\nshipgate: "),
            ))
        })
}

/// Reports a failed command: exit code 2 when its configuration did not load, else 1.
fn failed(e: anyhow::Error) -> ExitCode {
    let code = if e.downcast_ref::<Unloadable>().is_some() {
        2
    } else {
        1
    };
    eprintln!("shipgate: {e:#}");
    ExitCode::from(code)
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    match Config::load(path) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("shipgate: warning: {warning}");
            }
            Ok(loaded.config)
        }
        Err(errors) => {
            for problem in &errors.problems {
                eprintln!("shipgate: {}: {problem}", path.display());
            }
            Err(ExitCode::from(2))
        }
    }
}

fn config_check(path: &Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            println!("{}: ok, {}", path.display(), config.summary());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::telemetry::init(&config.log.format, &config.log.level);
    let durability = if std::env::var_os(UNSAFE_NO_FLUSH_ENV).is_some_and(|v| v == "1") {
        Durability::UnsafeNoFlush
    } else {
        Durability::Flush
    };
    let options = Options {
        durability,
        service_manager: true,
        ..Options::default()
    };
    let result = runtime().and_then(|rt| rt.block_on(run_until_signal(&config, options)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

async fn run_until_signal(config: &Config, options: Options) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Install the handlers before announcing readiness, so a stop sent right after is not lost.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // With `options.service_manager` set, the daemon tells systemd it is ready once it started.
    let daemon = Daemon::start(config, options).await?;
    // One line on stdout that scripts and tests read to find the bound ports.
    println!(
        "shipgate ready public={} admin={}",
        daemon.public_addr(),
        daemon.admin_addr()
    );
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    daemon.stop().await
}

/// Where an operator command gets its answers: the running daemon's admin API, or the store.
enum Source {
    Api {
        client: reqwest::Client,
        base: String,
        token: String,
    },
    Store(crate::store::Store, Vec<String>),
}

impl Source {
    /// The admin API when the daemon answers there, else the store opened directly.
    async fn connect(config: &Config) -> anyhow::Result<Source> {
        let mut addr = config.admin.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let token = config
                .admin
                .token
                .as_ref()
                .map(|t| t.expose().to_string())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "the daemon runs but [admin] token is not configured, so its API is closed"
                    )
                })?;
            return Ok(Source::Api {
                client: reqwest::Client::new(),
                base: format!("http://{addr}"),
                token,
            });
        }
        let store = crate::store::Store::open(
            &config.store.path,
            &crate::store::StoreOptions {
                cache_capacity_bytes: config.store.cache_capacity_bytes,
                ..Default::default()
            },
        )
        .with_context(|| {
            format!(
                "the daemon's admin API at {addr} does not answer, and the store cannot be opened"
            )
        })?;
        let shops = config.shops.iter().map(|s| s.domain.clone()).collect();
        Ok(Source::Store(store, shops))
    }

    async fn get<T: serde::de::DeserializeOwned>(
        client: &reqwest::Client,
        url: String,
        token: &str,
    ) -> anyhow::Result<T> {
        let response = client.get(url).bearer_auth(token).send().await?;
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        Ok(response.json().await?)
    }
}

/// The error for an admin API answer that is not a success: its own message, and for a refused
/// token what to check.
async fn refusal(response: reqwest::Response) -> anyhow::Error {
    let status = response.status();
    let url = response.url().clone();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let said = body["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("the admin API answered {status}"));
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return anyhow::anyhow!(
            "{said}: the daemon at {} does not take the [admin] token of this configuration \
             (is it the file the running daemon was started with?)",
            url.origin().ascii_serialization()
        );
    }
    anyhow::anyhow!("{said}")
}

fn shops_filter(all: &[String], shop: Option<&str>) -> anyhow::Result<Vec<String>> {
    match shop {
        None => Ok(all.to_vec()),
        Some(s) => {
            let s = s.to_ascii_lowercase();
            anyhow::ensure!(all.contains(&s), "shop {s} is not configured");
            Ok(vec![s])
        }
    }
}

async fn orders(command: OrdersCommand) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let common = match &command {
        OrdersCommand::List { common, .. } | OrdersCommand::Show { common, .. } => common,
    };
    let config = load_for_command(&common.config)?;
    let source = Source::connect(&config).await?;
    match &command {
        OrdersCommand::List { shop, limit, .. } => {
            let orders: Vec<crate::views::OrderSummary> = match &source {
                Source::Api {
                    client,
                    base,
                    token,
                } => {
                    let mut url = format!("{base}/api/orders?limit={limit}");
                    if let Some(shop) = shop {
                        url.push_str(&format!("&shop={shop}"));
                    }
                    Source::get(client, url, token).await?
                }
                Source::Store(store, all) => {
                    crate::views::list_orders(store, &shops_filter(all, shop.as_deref())?, *limit)?
                }
            };
            if common.json {
                println!("{}", serde_json::to_string_pretty(&orders)?);
            } else {
                print!("{}", crate::views::orders_table(&orders));
            }
        }
        OrdersCommand::Show { order, shop, .. } => {
            let found: crate::views::OrderView = match &source {
                Source::Api {
                    client,
                    base,
                    token,
                } => {
                    let mut url = reqwest::Url::parse(&format!("{base}/api/order"))?;
                    url.query_pairs_mut().append_pair("order", order);
                    if let Some(shop) = shop {
                        url.query_pairs_mut().append_pair("shop", shop);
                    }
                    Source::get(client, url.to_string(), token).await?
                }
                Source::Store(store, all) => {
                    let mut found = None;
                    for shop in shops_filter(all, shop.as_deref())? {
                        if let Some(o) = crate::views::show_order(store, &shop, order)? {
                            found = Some(o);
                            break;
                        }
                    }
                    found.with_context(|| format!("no mirrored order {order}"))?
                }
            };
            if common.json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else {
                print!("{}", crate::views::order_text(&found));
            }
        }
    }
    Ok(())
}

async fn reconcile(
    common: &Common,
    shop: Option<&str>,
    since: Option<&str>,
    repair: bool,
) -> anyhow::Result<()> {
    use crate::reconcile::{self, Progress, ReconcileOptions, ReconcileReport};
    let config = load_for_command(&common.config)?;
    let since_ts = Some(match since {
        Some(text) => reconcile::parse_since(text).map_err(anyhow::Error::msg)?,
        None => reconcile::default_since(),
    });
    let synced: Vec<&crate::config::ShopConfig> = config
        .shops
        .iter()
        .filter(|s| !matches!(s.credentials, crate::config::ShopCredentials::None))
        .filter(|s| shop.is_none_or(|want| s.domain.eq_ignore_ascii_case(want)))
        .collect();
    anyhow::ensure!(
        !synced.is_empty(),
        "no shop to reconcile: {}",
        match shop {
            Some(s)
                if config
                    .shops
                    .iter()
                    .any(|c| c.domain.eq_ignore_ascii_case(s)) =>
                format!("{s} is not configured with Admin API credentials"),
            Some(s) => format!(
                "{s} is not in the configuration (configured: {})",
                config
                    .shops
                    .iter()
                    .map(|c| c.domain.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "no shop has Admin API credentials".to_string(),
        }
    );
    let mut reports: Vec<ReconcileReport> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    match Source::connect(&config).await? {
        Source::Api {
            client,
            base,
            token,
        } => {
            for shop in &synced {
                eprintln!("reconciling {} through the running daemon…", shop.domain);
                let mut url =
                    reqwest::Url::parse(&format!("{base}/api/shops/{}/reconcile", shop.domain))?;
                if let Some(since) = since {
                    url.query_pairs_mut().append_pair("since", since);
                }
                url.query_pairs_mut()
                    .append_pair("repair", if repair { "true" } else { "false" })
                    .append_pair("progress", "true");
                match reconcile_through(&client, url, &token, &shop.domain).await {
                    Ok(report) => reports.push(report),
                    // The other shops are still reconciled; the failure is reported at the end.
                    Err(e) => failed.push(format!("{}: {e:#}", shop.domain)),
                }
            }
        }
        Source::Store(store, _) => {
            // Repair fetches orders: run the shop's mirror for the duration of the command.
            let http = reqwest::Client::builder()
                .user_agent(concat!("shipgate/", env!("CARGO_PKG_VERSION")))
                .build()?;
            let tasks = tokio_util::task::TaskTracker::new();
            let cancel = tokio_util::sync::CancellationToken::new();
            let heartbeats = crate::health::Heartbeats::default();
            for shop in &synced {
                let client = crate::shopify::client::ShopifyClient::new(
                    http.clone(),
                    shop,
                    crate::shopify::client::ClientSettings {
                        requests_per_second: shop.requests_per_second,
                        ..Default::default()
                    },
                );
                if repair {
                    crate::mirror::spawn(
                        &tasks,
                        &heartbeats,
                        store.clone(),
                        client.clone(),
                        crate::mirror::MirrorSettings {
                            poll_interval: config.sync.poll_interval,
                            poll_overlap: config.sync.poll_overlap,
                            initial_lookback: config.sync.initial_lookback,
                        },
                        cancel.clone(),
                    );
                }
                let domain = shop.domain.clone();
                let progress = move |p: Progress| eprintln!("{domain}: {p}");
                let options = ReconcileOptions {
                    since: since_ts.clone(),
                    repair,
                    ..Default::default()
                };
                match reconcile::reconcile(&store, &client, &http, &options, &progress).await {
                    Ok(report) => reports.push(report),
                    Err(e) => failed.push(format!("{}: {e:#}", shop.domain)),
                }
            }
            cancel.cancel();
            tasks.close();
            tasks.wait().await;
            store.flush().await?;
            store.close();
        }
    }
    if common.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for report in &reports {
            print!("{}", report.to_text());
        }
    }
    // The reports made are printed first: one shop's failure does not hide the others'.
    anyhow::ensure!(
        failed.is_empty(),
        "reconciling failed for {}",
        failed.join("; ")
    );
    Ok(())
}

/// Runs one shop's reconciliation through the daemon's admin API, printing its progress lines
/// as they come (NDJSON, see `admin::reconcile_streamed`), and returns the report.
async fn reconcile_through(
    client: &reqwest::Client,
    url: reqwest::Url,
    token: &str,
    domain: &str,
) -> anyhow::Result<crate::reconcile::ReconcileReport> {
    let mut response = client.post(url).bearer_auth(token).send().await?;
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let value: serde_json::Value = serde_json::from_slice(&line)
                .context("the daemon sent a reconcile line that is not JSON")?;
            if let Some(text) = value["text"].as_str() {
                eprintln!("{domain}: {text}");
            } else if let Some(error) = value["error"].as_str() {
                anyhow::bail!("{error}");
            } else if !value["report"].is_null() {
                return Ok(serde_json::from_value(value["report"].clone())?);
            }
        }
    }
    anyhow::bail!("the daemon ended the reconciliation without a report")
}

async fn subscribe(common: &Common, url: &str, shop: Option<&str>) -> anyhow::Result<()> {
    use crate::shopify::client::{ClientSettings, ShopifyClient, ShopifyError};
    use crate::shopify::convert::{SUBSCRIBED_TOPICS, webhook_subscription_variables};
    use crate::shopify::ops::WebhookSubscriptionCreate;
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--url `{url}` is not a URL"))?;
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    anyhow::ensure!(
        parsed.scheme() == "https" || loopback,
        "--url must be https: Shopify only delivers webhooks over HTTPS"
    );
    let config = load_for_command(&common.config)?;
    let http = reqwest::Client::new();
    let mut rows = Vec::new();
    let mut any = false;
    for shop_config in config
        .shops
        .iter()
        .filter(|s| shop.is_none_or(|want| s.domain.eq_ignore_ascii_case(want)))
    {
        any = true;
        if matches!(
            shop_config.credentials,
            crate::config::ShopCredentials::None
        ) {
            anyhow::bail!("{} has no Admin API credentials", shop_config.domain);
        }
        let client = ShopifyClient::new(
            http.clone(),
            shop_config,
            ClientSettings {
                requests_per_second: shop_config.requests_per_second,
                ..ClientSettings::default()
            },
        );
        for topic in SUBSCRIBED_TOPICS {
            let variables = webhook_subscription_variables(topic, url);
            let outcome = match client.run::<WebhookSubscriptionCreate>(variables, 1).await {
                Ok(_) => "subscribed".to_string(),
                // Shopify refuses a second subscription of a topic to the same address.
                Err(ShopifyError::UserErrors { errors, .. })
                    if errors
                        .iter()
                        .any(|e| e.message.contains("already been taken")) =>
                {
                    "already subscribed".to_string()
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("{}: {topic}", shop_config.domain));
                }
            };
            rows.push(
                serde_json::json!({"shop": shop_config.domain, "topic": topic, "result": outcome}),
            );
        }
    }
    anyhow::ensure!(any, "shop {} is not configured", shop.unwrap_or("(none)"));
    if common.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for row in &rows {
            println!(
                "{:<36} {:<36} {}",
                row["shop"].as_str().unwrap_or(""),
                row["topic"].as_str().unwrap_or(""),
                row["result"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// Runs an operator command to its exit code.
fn operate(command: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    match runtime().and_then(|rt| rt.block_on(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(e),
    }
}

/// The name recorded for an operator: `--by`, else `$USER`, else `operator`.
fn operator_name(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "operator".to_string())
}

/// Where the supplier workflow's commands are answered: the running daemon's admin API, or the
/// workflow over the store opened directly. Both end in [`crate::views::Operations`], so both
/// give the same answer.
enum Ops {
    Api {
        client: reqwest::Client,
        base: reqwest::Url,
        token: String,
    },
    Local(crate::views::Operations),
}

impl Ops {
    async fn connect(path: &Path) -> anyhow::Result<Ops> {
        let config = load_for_command(path)?;
        Ok(match Source::connect(&config).await? {
            Source::Api {
                client,
                base,
                token,
            } => Ops::Api {
                client,
                base: reqwest::Url::parse(&base)?,
                token,
            },
            Source::Store(store, _) => {
                // Built like the daemon builds it, so that a decision or an event taken here
                // plans and records exactly what it would have through the daemon.
                let workflow = crate::workflow::Workflow::new(
                    store,
                    crate::clock::Clock::system(),
                    std::sync::Arc::new(crate::suppliers::routing::Router::from_config(&config)),
                    crate::workflow::WorkflowSettings::from_config(&config.workflow),
                );
                Ops::Local(crate::views::Operations::new(workflow, &config))
            }
        })
    }

    /// Runs `work` through the daemon's admin API, or on the store when the daemon is stopped,
    /// and closes the store afterwards (flushing what the work wrote) whatever its result.
    async fn with<T>(
        config: &Path,
        work: impl AsyncFnOnce(&Ops) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let ops = Ops::connect(config).await?;
        let result = work(&ops).await;
        ops.close().await?;
        result
    }

    /// Whether the command works on the store because the daemon is stopped.
    fn is_local(&self) -> bool {
        matches!(self, Ops::Local(_))
    }

    /// Flushes what a store-direct command wrote and closes the store, so that nothing of it
    /// is lost when the process exits.
    async fn close(self) -> anyhow::Result<()> {
        if let Ops::Local(ops) = self {
            let store = ops.workflow().store();
            store.flush().await.context("flushing the store")?;
            store.close();
        }
        Ok(())
    }

    /// An admin API address: `segments` are escaped one by one, so an id cannot change the path.
    fn url(base: &reqwest::Url, segments: &[&str], query: &[(&str, &str)]) -> reqwest::Url {
        let mut url = base.clone();
        url.path_segments_mut()
            .expect("an http base URL")
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends a request to the admin API; a refusal becomes its one-line reason.
    async fn send(
        request: reqwest::RequestBuilder,
        token: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let response = request
            .bearer_auth(token)
            .send()
            .await
            .context("the daemon's admin API did not answer")?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(refusal(response).await)
    }

    async fn json<T: serde::de::DeserializeOwned>(
        request: reqwest::RequestBuilder,
        token: &str,
    ) -> anyhow::Result<T> {
        Ok(Self::send(request, token).await?.json().await?)
    }
}

/// Prints a value as JSON for scripts.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn now_ms() -> i64 {
    crate::clock::Clock::system().now_ms()
}

/// Says on stderr (stdout stays the command's answer) that a change waits for the daemon.
fn note_stopped_daemon(ops: &Ops, what: &str) {
    if ops.is_local() {
        eprintln!(
            "shipgate: the daemon is not running: {what} is recorded in the store, and what it calls for is sent when the daemon starts"
        );
    }
}

async fn exceptions(command: ExceptionsCommand) -> anyhow::Result<()> {
    let common = match &command {
        ExceptionsCommand::List { common, .. }
        | ExceptionsCommand::Show { common, .. }
        | ExceptionsCommand::Decide { common, .. } => common,
    };
    Ops::with(&common.config, async |ops| {
        exceptions_on(ops, &command).await
    })
    .await
}

async fn exceptions_on(ops: &Ops, command: &ExceptionsCommand) -> anyhow::Result<()> {
    use crate::views::{self, DecideRequest, ExceptionDetail, ExceptionFilter, ExceptionRow};
    match command {
        ExceptionsCommand::List {
            common,
            all,
            kind,
            shop,
        } => {
            let filter = ExceptionFilter {
                all: *all,
                kind: kind.clone(),
                shop: shop.clone(),
            };
            let mut query = vec![("all", if *all { "true" } else { "false" })];
            if let Some(kind) = kind {
                query.push(("kind", kind));
            }
            if let Some(shop) = shop {
                query.push(("shop", shop));
            }
            let rows: Vec<ExceptionRow> = read(ops, &["api", "exceptions"], &query, |o| {
                o.list_exceptions(&filter)
            })
            .await?;
            if common.json {
                print_json(&rows)?;
            } else {
                print!("{}", views::exceptions_table(&rows, now_ms()));
            }
        }
        ExceptionsCommand::Show { common, id } => {
            let detail: ExceptionDetail = read(ops, &["api", "exceptions", id], &[], |o| {
                o.show_exception(id)
            })
            .await?;
            if common.json {
                print_json(&detail)?;
            } else {
                print!("{}", views::exception_text(&detail));
            }
        }
        ExceptionsCommand::Decide {
            common,
            id,
            decision,
            supplier,
            until,
            note,
            by,
        } => {
            let request = DecideRequest {
                decision: decision.clone(),
                supplier: supplier.clone(),
                until: until.clone(),
                note: note.clone(),
                by: Some(operator_name(by.clone())),
            };
            let detail: ExceptionDetail = match ops {
                Ops::Api {
                    client,
                    base,
                    token,
                } => {
                    let url = Ops::url(base, &["api", "exceptions", id, "decide"], &[]);
                    Ops::json(client.post(url).json(&request), token).await?
                }
                Ops::Local(o) => o.decide(id, &request).await?,
            };
            note_stopped_daemon(ops, "the decision");
            if common.json {
                print_json(&detail)?;
            } else {
                print!("{}", views::exception_text(&detail));
            }
        }
    }
    Ok(())
}

async fn supplier(command: SupplierCommand) -> anyhow::Result<()> {
    let config = match &command {
        SupplierCommand::Export { target, .. } | SupplierCommand::Event { target, .. } => {
            &target.config
        }
        SupplierCommand::Import { common, .. } => &common.config,
    };
    // Read the input before reaching the store, so that a missing file opens nothing.
    let input = match &command {
        SupplierCommand::Import { file, .. } => {
            Some(std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?)
        }
        SupplierCommand::Event {
            event: Some(text), ..
        } => Some(text.as_bytes().to_vec()),
        SupplierCommand::Event {
            file: Some(file), ..
        } => Some(std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?),
        _ => None,
    };
    Ops::with(config, async |ops| {
        supplier_on(ops, &command, input.unwrap_or_default()).await
    })
    .await
}

async fn supplier_on(ops: &Ops, command: &SupplierCommand, input: Vec<u8>) -> anyhow::Result<()> {
    use crate::views::{EventRecorded, ImportSummary};
    match command {
        SupplierCommand::Export { supplier, out, .. } => {
            let sheet = match ops {
                Ops::Api {
                    client,
                    base,
                    token,
                } => {
                    let url = Ops::url(base, &["api", "suppliers", supplier, "export"], &[]);
                    Ops::send(client.get(url), token).await?.text().await?
                }
                Ops::Local(o) => o.export(supplier)?,
            };
            match out {
                None => print!("{sheet}"),
                Some(path) => {
                    write_private(path, sheet.as_bytes())?;
                    let rows = sheet.lines().count().saturating_sub(1);
                    eprintln!("shipgate: wrote {rows} row(s) to {}", path.display());
                }
            }
        }
        SupplierCommand::Import {
            common,
            supplier,
            file,
            by,
        } => {
            let file_name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| file.display().to_string());
            let by = operator_name(by.clone());
            let summary: ImportSummary = match ops {
                Ops::Api {
                    client,
                    base,
                    token,
                } => {
                    let url = Ops::url(
                        base,
                        &["api", "suppliers", supplier, "import"],
                        &[("file_name", &file_name), ("by", &by)],
                    );
                    let request = client
                        .post(url)
                        .header(http::header::CONTENT_TYPE, "text/csv")
                        .body(input);
                    Ops::json(request, token).await?
                }
                Ops::Local(o) => o.import(supplier, &file_name, &input, Some(&by)).await?,
            };
            note_stopped_daemon(ops, "the sheet");
            if common.json {
                print_json(&summary)?;
            } else {
                println!(
                    "{}: {} event(s) recorded, {} already recorded",
                    summary.file_name, summary.recorded, summary.already_recorded
                );
            }
        }
        SupplierCommand::Event { supplier, by, .. } => {
            let by = operator_name(by.clone());
            let recorded: EventRecorded = match ops {
                Ops::Api {
                    client,
                    base,
                    token,
                } => {
                    let url = Ops::url(
                        base,
                        &["api", "suppliers", supplier, "events"],
                        &[("by", &by)],
                    );
                    let request = client
                        .post(url)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(input);
                    Ops::json(request, token).await?
                }
                Ops::Local(o) => o.record_event(supplier, &input, Some(&by)).await?,
            };
            note_stopped_daemon(ops, "the event");
            let what = if recorded.result == "recorded" {
                "recorded"
            } else {
                "already recorded"
            };
            println!(
                "{what}: {} {} for {}",
                recorded.kind, recorded.id, recorded.shipment_id
            );
        }
    }
    Ok(())
}

/// Writes a file only its owner can read: a sheet holds customers' names and addresses. A file
/// that existed with wider permissions is narrowed before anything is written to it.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    file.set_len(0)?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

async fn shipments(command: ShipmentsCommand) -> anyhow::Result<()> {
    let ShipmentsCommand::Show { common, id } = &command;
    Ops::with(&common.config, async |ops| {
        let detail: crate::views::ShipmentDetail =
            read(ops, &["api", "shipments", id], &[], |o| o.show_shipment(id)).await?;
        if common.json {
            print_json(&detail)
        } else {
            print!("{}", crate::views::shipment_text(&detail));
            Ok(())
        }
    })
    .await
}

async fn outbox(command: OutboxCommand) -> anyhow::Result<()> {
    let OutboxCommand::List {
        common,
        failed,
        limit,
    } = &command;
    Ops::with(&common.config, async |ops| {
        let limit_text = limit.to_string();
        let query = [
            ("failed", if *failed { "true" } else { "false" }),
            ("limit", limit_text.as_str()),
        ];
        let rows: Vec<crate::views::EffectRow> = read(ops, &["api", "outbox"], &query, |o| {
            o.outbox(*failed, *limit)
        })
        .await?;
        if common.json {
            print_json(&rows)
        } else {
            print!("{}", crate::views::outbox_table(&rows));
            Ok(())
        }
    })
    .await
}

/// Reads a JSON file an operator names; the error says which file and what is wrong.
fn read_json_file(path: &Path) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", path.display()))
}

/// Posts a request to the admin API and reads the answer.
/// Reads through the daemon's admin API (`GET` of `segments` with `query`) or, with the daemon
/// stopped, from the store with `local`: the same answer either way.
async fn read<T: serde::de::DeserializeOwned>(
    ops: &Ops,
    segments: &[&str],
    query: &[(&str, &str)],
    local: impl FnOnce(&crate::views::Operations) -> Result<T, crate::views::OpError>,
) -> anyhow::Result<T> {
    match ops {
        Ops::Api {
            client,
            base,
            token,
        } => Ops::json(client.get(Ops::url(base, segments, query)), token).await,
        Ops::Local(o) => Ok(local(o)?),
    }
}

async fn post_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
    ops: &Ops,
    segments: &[&str],
    body: &B,
) -> anyhow::Result<T> {
    let Ops::Api {
        client,
        base,
        token,
    } = ops
    else {
        unreachable!("only called for the admin API");
    };
    let url = Ops::url(base, segments, &[]);
    Ops::json(client.post(url).json(body), token).await
}

/// Prints a recorded check, packing or label.
/// Records a piece of a shipment's evidence (`kind`: check, pack, label) through the daemon's
/// `POST /api/shipments/<id>/<kind>`, or on the store with `local`, and prints what was
/// recorded. Both ways go through the same door.
async fn record_evidence<R: serde::Serialize>(
    ops: &Ops,
    common: &Common,
    shipment: &str,
    kind: &str,
    request: &R,
    local: impl AsyncFnOnce(
        &crate::views::Operations,
    ) -> Result<crate::views::EvidenceRecorded, crate::views::OpError>,
) -> anyhow::Result<()> {
    let recorded = match ops {
        Ops::Api { .. } => post_json(ops, &["api", "shipments", shipment, kind], request).await?,
        Ops::Local(o) => local(o).await?,
    };
    let what = if kind == "pack" { "packing" } else { kind };
    note_stopped_daemon(ops, &format!("the {what}"));
    print_recorded(common, &recorded)
}

fn print_recorded(
    common: &Common,
    recorded: &crate::views::EvidenceRecorded,
) -> anyhow::Result<()> {
    if common.json {
        print_json(recorded)
    } else {
        print!("{}", crate::views::evidence_recorded_text(recorded));
        Ok(())
    }
}

async fn check(command: CheckCommand) -> anyhow::Result<()> {
    let CheckCommand::Record {
        common,
        shipment,
        file,
        by,
    } = &command;
    // Read the input before reaching the store, so that a missing file opens nothing.
    let request = crate::views::CheckRequest {
        check: read_json_file(file)?,
        by: Some(operator_name(by.clone())),
    };
    Ops::with(&common.config, async |ops| {
        record_evidence(ops, common, shipment, "check", &request, async |o| {
            o.record_check(shipment, &request).await
        })
        .await
    })
    .await
}

/// Reads `LINE=QTY`.
fn parcel_line(text: &str) -> anyhow::Result<crate::views::ParcelLineRequest> {
    let (line, quantity) = text
        .rsplit_once('=')
        .with_context(|| format!("--line `{text}` must be LINE=QUANTITY, e.g. KIT-1=2"))?;
    let quantity = quantity.trim().parse::<i64>().map_err(|_| {
        anyhow::anyhow!("--line `{text}`: the quantity after `=` must be a whole number")
    })?;
    anyhow::ensure!(
        !line.trim().is_empty(),
        "--line `{text}`: name the line before `=`"
    );
    Ok(crate::views::ParcelLineRequest {
        line_id: line.trim().to_string(),
        quantity,
    })
}

/// Reads `LxWxH` in centimetres.
fn dimensions(text: &str) -> anyhow::Result<[i64; 3]> {
    let parts: Vec<&str> = text.split(['x', 'X', '×']).collect();
    let bad = || {
        anyhow::anyhow!(
            "--dimensions-cm `{text}` must be LxWxH in whole centimetres, e.g. 30x20x10"
        )
    };
    anyhow::ensure!(parts.len() == 3, bad());
    let mut out = [0i64; 3];
    for (slot, part) in out.iter_mut().zip(parts) {
        *slot = part.trim().parse().map_err(|_| bad())?;
    }
    Ok(out)
}

async fn pack(command: PackCommand) -> anyhow::Result<()> {
    let PackCommand::Record {
        common,
        shipment,
        parcel,
        lines,
        weight_grams,
        dimensions_cm,
        photos,
        file,
        by,
    } = &command;
    let parcels = match (file, parcel) {
        (Some(file), _) => {
            let mut value = read_json_file(file)?;
            // The file may hold the parcels alone, or an object with `parcels` as the
            // `packed` event writes it.
            if let Some(parcels) = value.get_mut("parcels") {
                value = parcels.take();
            }
            serde_json::from_value::<Vec<crate::views::ParcelRequest>>(value)
                .map_err(|e| anyhow::anyhow!("{}: not a list of parcels: {e}", file.display()))?
        }
        (None, Some(parcel)) => vec![crate::views::ParcelRequest {
            parcel_id: parcel.clone(),
            lines: lines
                .iter()
                .map(|l| parcel_line(l))
                .collect::<anyhow::Result<_>>()?,
            weight_grams: *weight_grams,
            dimensions_cm: dimensions_cm.as_deref().map(dimensions).transpose()?,
            photos: photos.clone(),
        }],
        (None, None) => anyhow::bail!("name the parcel with --parcel, or give a --file"),
    };
    let request = crate::views::PackRequest {
        parcels,
        by: Some(operator_name(by.clone())),
    };
    Ops::with(&common.config, async |ops| {
        record_evidence(ops, common, shipment, "pack", &request, async |o| {
            o.record_packing(shipment, &request).await
        })
        .await
    })
    .await
}

async fn parcel(command: ParcelCommand) -> anyhow::Result<()> {
    let common = match &command {
        ParcelCommand::Label { common, .. } | ParcelCommand::Accept { common, .. } => common,
    };
    Ops::with(&common.config, async |ops| parcel_on(ops, &command).await).await
}

async fn parcel_on(ops: &Ops, command: &ParcelCommand) -> anyhow::Result<()> {
    match command {
        ParcelCommand::Label {
            common,
            shipment,
            parcel,
            carrier,
            number,
            url,
            by,
        } => {
            let request = crate::views::LabelRequest {
                parcel_id: parcel.clone(),
                carrier: carrier.clone(),
                tracking_number: number.clone(),
                tracking_url: url.clone(),
                by: Some(operator_name(by.clone())),
            };
            record_evidence(ops, common, shipment, "label", &request, async |o| {
                o.record_label(shipment, &request).await
            })
            .await
        }
        ParcelCommand::Accept {
            common,
            number,
            at,
            location,
            evidence,
            note,
            carrier,
            by,
        } => {
            let request = crate::views::AcceptRequest {
                at: at.clone(),
                location: location.clone(),
                evidence: evidence.clone(),
                note: note.clone().unwrap_or_default(),
                carrier: carrier.clone(),
                by: Some(operator_name(by.clone())),
            };
            let recorded: crate::views::ScanRecorded = match ops {
                Ops::Api { .. } => {
                    post_json(ops, &["api", "tracking", number, "accept"], &request).await?
                }
                Ops::Local(o) => o.accept_scan(number, &request).await?,
            };
            note_stopped_daemon(ops, "the acceptance");
            if common.json {
                print_json(&recorded)
            } else {
                print!("{}", crate::views::scan_recorded_text(&recorded));
                Ok(())
            }
        }
    }
}
