//! The command line: `shipgate run`, `config check`, `version` and `demo`.
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
    /// Print the version.
    Version,
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
            Err(e) => fail(&format!("{e:#}")),
        },
        Command::Shops {
            command: ShopsCommand::Subscribe { common, url, shop },
        } => {
            match runtime().and_then(|rt| rt.block_on(subscribe(&common, &url, shop.as_deref()))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{e:#}")),
            }
        }
        Command::Orders { command } => {
            match runtime().and_then(|rt| rt.block_on(orders(command))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{e:#}")),
            }
        }
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
    let daemon = Daemon::start(config, options).await?;
    crate::health::notify_ready();
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
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            anyhow::bail!(
                "{}",
                body["error"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("the admin API answered {status}"))
            );
        }
        Ok(response.json().await?)
    }
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
    let config = Config::load(&common.config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", common.config.display()))?
        .config;
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
            let found: crate::order::OrderMirror = match &source {
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
    let config = Config::load(&common.config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", common.config.display()))?
        .config;
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
            Some(s) => format!("{s} is not configured with Admin API credentials"),
            None => "no shop has Admin API credentials".to_string(),
        }
    );
    let mut reports: Vec<ReconcileReport> = Vec::new();
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
                    .append_pair("repair", if repair { "true" } else { "false" });
                let response = client.post(url).bearer_auth(&token).send().await?;
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                if !status.is_success() {
                    anyhow::bail!(
                        "{}: {}",
                        shop.domain,
                        body["error"].as_str().unwrap_or("the admin API refused")
                    );
                }
                reports.push(serde_json::from_value(body)?);
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
                let progress = move |p: Progress| eprintln!("{domain}: {}", progress_text(&p));
                let options = ReconcileOptions {
                    since: since_ts.clone(),
                    repair,
                    ..Default::default()
                };
                reports.push(
                    reconcile::reconcile(&store, &client, &http, &options, &progress)
                        .await
                        .with_context(|| format!("reconciling {}", shop.domain))?,
                );
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
    Ok(())
}

fn progress_text(p: &crate::reconcile::Progress) -> String {
    use crate::reconcile::Progress;
    match p {
        Progress::Listing { pages, orders } => format!("listed {orders} orders in {pages} pages"),
        Progress::BulkStarted { id } => format!("bulk operation {id} started"),
        Progress::BulkPolled { status, objects } => {
            format!("bulk operation {status}, {objects} objects")
        }
        Progress::BulkDownloaded { lines } => format!("bulk result downloaded: {lines} lines"),
        Progress::Comparing { done, total } => format!("compared {done} of {total}"),
        Progress::Repairing { triggered } => format!("repairing: {triggered} orders to fetch"),
    }
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
    let config = Config::load(&common.config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", common.config.display()))?
        .config;
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
