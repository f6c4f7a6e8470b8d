//! The running daemon: the store, the listeners and the workers, started and stopped together.
//!
//! Start-up order: open the store, bind both listeners, start the workers; only then is the
//! daemon ready. Shutdown follows mini-redis: one cancellation token tells every task to stop, the
//! listeners close first so no new delivery is accepted, in-flight requests finish, every task is
//! awaited through the tracker, and the store is flushed and closed last.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::collections::HashMap;

use crate::admin::AdminState;
use crate::clock::Clock;
use crate::config::{Config, ShopCredentials};
use crate::health::{self, Heartbeats, supervised};
use crate::http::{HttpSettings, serve};
use crate::intake::shopify::Verifier;
use crate::intake::{Intake, IntakeCounters, IntakeMode, IntakeSettings};
use crate::mirror::{self, MirrorHandle, MirrorSettings, ScanReport};
use crate::processor::{self, ProcessorSettings};
use crate::shopify::client::{ClientSettings, ShopifyClient};
use crate::store::{Durability, Store, StoreOptions};
use crate::suppliers::routing::Router;
use crate::workflow::sender::{Sender, SenderSettings};
use crate::workflow::{Workflow, WorkflowSettings};

/// Switches that are not configuration: they exist for tests and benchmarks only.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether durable writes are flushed (always, outside the crash test).
    pub durability: Durability,
    /// Whether the intake stores deliveries (always, outside the benchmark).
    pub intake: IntakeMode,
    /// Whether the delivery processor runs.
    pub processor: bool,
    /// Whether the order mirror (fetcher and poller per shop) runs.
    pub mirror: bool,
    /// Retry and pacing of the Shopify clients (tests shorten the backoff).
    pub client: ClientSettings,
    /// The clock that schedules retries and waits (tests use a manual one).
    pub clock: Clock,
    /// Retry pacing of the outbox.
    pub sender: SenderSettings,
    /// Whether the outbox sender runs (tests that drive a sender themselves switch it off).
    pub outbox: bool,
    /// Whether the daemon talks to systemd: READY once started, the watchdog while the workers
    /// beat, STOPPING on shutdown. Only `shipgate run` sets it, so that a daemon started inside a
    /// test or the demo never speaks on a `NOTIFY_SOCKET` its parent process inherited.
    pub service_manager: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Flush,
            intake: IntakeMode::Durable,
            processor: true,
            mirror: true,
            client: ClientSettings::default(),
            clock: Clock::system(),
            sender: SenderSettings::default(),
            outbox: true,
            service_manager: false,
        }
    }
}

/// A started daemon.
pub struct Daemon {
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    store: Store,
    counters: Arc<IntakeCounters>,
    shops: Arc<HashMap<String, ShopSync>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    ready: Arc<AtomicBool>,
    workflow: Workflow,
    sender: Sender,
    service_manager: bool,
}

/// One shop's Admin API client and mirror.
#[derive(Clone)]
pub struct ShopSync {
    /// The shop's GraphQL client (its stats and budget view).
    pub client: ShopifyClient,
    /// The plain HTTP client (bulk operation results are downloaded with it).
    pub http: reqwest::Client,
    /// The shop's mirror tasks.
    pub mirror: MirrorHandle,
}

impl Daemon {
    /// Opens the store, binds the listeners and starts the workers.
    pub async fn start(config: &Config, options: Options) -> anyhow::Result<Daemon> {
        let store = Store::open(
            &config.store.path,
            &StoreOptions {
                cache_capacity_bytes: config.store.cache_capacity_bytes,
                flush_interval: config.store.flush_interval,
                durability: options.durability,
            },
        )
        .with_context(|| format!("opening the store at {}", config.store.path.display()))?;
        if options.durability == Durability::UnsafeNoFlush {
            tracing::warn!("flushing is switched off: acknowledged deliveries can be lost");
        }
        let public = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding the public listener {}", config.server.listen))?;
        let admin = TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("binding the admin listener {}", config.admin.listen))?;
        let public_addr = public.local_addr()?;
        let admin_addr = admin.local_addr()?;

        let counters = Arc::new(IntakeCounters::default());
        let shops = config.shops.iter().map(|shop| {
            let verifier =
                Verifier::new(shop.webhook_secrets.iter().map(|s| s.expose().as_bytes()));
            (shop.domain.clone(), verifier)
        });
        let intake = Intake::new(
            store.clone(),
            shops,
            IntakeSettings {
                body_limit: config.server.body_limit,
                body_read_timeout: config.server.body_read_timeout,
                mode: options.intake,
            },
            counters.clone(),
        );
        let http = HttpSettings {
            header_read_timeout: config.server.header_read_timeout,
            grace: config.server.shutdown_grace,
        };
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let ready = Arc::new(AtomicBool::new(false));
        let heartbeats = Heartbeats::default();
        let workflow = Workflow::new(
            store.clone(),
            options.clock.clone(),
            Arc::new(Router::from_config(config)),
            WorkflowSettings::from_config(&config.workflow),
        );
        let http_client = reqwest::Client::builder()
            .user_agent(concat!("shipgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        // Suppliers get their own client: a followed redirect would turn a POST into a GET
        // whose 2xx looks like an accepted message.
        let supplier_http = reqwest::Client::builder()
            .user_agent(concat!("shipgate/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .context("building the supplier HTTP client")?;
        let adapters = crate::suppliers::adapters(config, &supplier_http)?;
        let intake = intake.with_suppliers(crate::suppliers::inbound_secrets(config), {
            let workflow = workflow.clone();
            Arc::new(
                move |supplier: &str, event: &crate::suppliers::SupplierEvent| {
                    workflow
                        .validate_event(supplier, event)
                        .map_err(|e| match e {
                            crate::workflow::WorkflowError::Store(e) => {
                                crate::intake::suppliers::EventRefusal::Unavailable(e)
                            }
                            other => crate::intake::suppliers::EventRefusal::DoesNotFit(
                                other.to_string(),
                            ),
                        })
                },
            )
        });
        let intake = intake.with_tracking(config.tracking.iter().map(|t| {
            (
                t.provider.clone(),
                t.secrets
                    .iter()
                    .map(|s| s.expose().as_bytes().to_vec())
                    .collect(),
            )
        }));
        tasks.spawn(serve(public, intake.router(), http, cancel.clone()));
        if options.processor {
            tasks.spawn(supervised(
                heartbeats.register("delivery processor"),
                processor::run(
                    store.clone(),
                    ProcessorSettings {
                        export_dir: config.compliance.export_dir.clone(),
                        workflow: Some(workflow.clone()),
                    },
                    cancel.clone(),
                ),
            ));
        }
        let mut shops = HashMap::new();
        if options.mirror {
            let http = http_client.clone();
            let settings = MirrorSettings {
                poll_interval: config.sync.poll_interval,
                poll_overlap: config.sync.poll_overlap,
                initial_lookback: config.sync.initial_lookback,
            };
            for shop in &config.shops {
                if matches!(shop.credentials, ShopCredentials::None) {
                    continue;
                }
                let client = ShopifyClient::new(
                    http.clone(),
                    shop,
                    ClientSettings {
                        requests_per_second: shop.requests_per_second,
                        ..options.client.clone()
                    },
                );
                let mirror = mirror::spawn(
                    &tasks,
                    &heartbeats,
                    store.clone(),
                    client.clone(),
                    settings.clone(),
                    cancel.clone(),
                );
                if let Some(every) = config.sync.reconcile_interval {
                    tasks.spawn(supervised(
                        heartbeats.register(format!("daily reconciliation {}", shop.domain)),
                        crate::reconcile::run_periodically(
                            store.clone(),
                            client.clone(),
                            http.clone(),
                            every,
                            options.clock.clone(),
                            cancel.clone(),
                        ),
                    ));
                }
                shops.insert(
                    shop.domain.clone(),
                    ShopSync {
                        client,
                        http: http.clone(),
                        mirror,
                    },
                );
            }
        }
        let shops = Arc::new(shops);
        if options.processor {
            tasks.spawn(supervised(
                heartbeats.register("workflow planner"),
                crate::workflow::run_planner(workflow.clone(), cancel.clone()),
            ));
            tasks.spawn(supervised(
                heartbeats.register("workflow timers"),
                crate::workflow::run_timers(workflow.clone(), cancel.clone()),
            ));
            if let Some(retention) = config.store.delivery_retention {
                tasks.spawn(supervised(
                    heartbeats.register("delivery retention"),
                    run_retention(store.clone(), retention, cancel.clone()),
                ));
            }
        }
        let clients = shops
            .iter()
            .map(|(domain, sync)| (domain.clone(), sync.client.clone()))
            .collect();
        let sender = Sender::new(workflow.clone(), adapters, clients, options.sender.clone());
        if options.processor && options.outbox {
            let sender = sender.clone();
            let cancel = cancel.clone();
            tasks.spawn(supervised(
                heartbeats.register("outbox sender"),
                async move {
                    if let Err(crashed) = sender.run(cancel).await {
                        tracing::error!(%crashed, "outbox sender stopped");
                    }
                },
            ));
        }
        tasks.spawn(serve(
            admin,
            crate::admin::router(AdminState {
                ready: ready.clone(),
                heartbeats: heartbeats.clone(),
                store: store.clone(),
                counters: counters.clone(),
                shops: shops.clone(),
                shop_domains: Arc::new(config.shops.iter().map(|s| s.domain.clone()).collect()),
                token: config.admin.token.clone(),
                operations: crate::views::Operations::new(workflow.clone(), config),
            }),
            http,
            cancel.clone(),
        ));
        ready.store(true, Ordering::SeqCst);
        tracing::info!(%public_addr, %admin_addr, shops = config.shops.len(), "shipgate ready");
        if options.service_manager {
            // READY goes out before the watchdog task exists, so systemd can never hear a ping
            // from a service it does not yet consider started.
            health::notify_ready();
            tasks.spawn(health::watchdog(heartbeats.clone(), cancel.clone()));
        }
        tasks.close();
        Ok(Daemon {
            public_addr,
            admin_addr,
            store,
            counters,
            shops,
            cancel,
            tasks,
            ready,
            workflow,
            sender,
            service_manager: options.service_manager,
        })
    }

    /// An outbox sender like the daemon's own (for tests that run it themselves, with the
    /// daemon's sender switched off by `Options::outbox`).
    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    /// The supplier workflow.
    pub fn workflow(&self) -> &Workflow {
        &self.workflow
    }

    /// Where webhooks are received.
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// Where the admin API, health and metrics are served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The daemon's store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The intake's answer counters.
    pub fn counters(&self) -> &IntakeCounters {
        &self.counters
    }

    /// Waits until every stored delivery has been processed.
    pub async fn wait_idle(&self) {
        self.store.inbox_empty().await
    }

    /// A shop's client and mirror, if the shop has Admin API credentials.
    pub fn shop_sync(&self, shop: &str) -> Option<&ShopSync> {
        self.shops.get(shop)
    }

    /// Brings a shop's mirror up to date now: processes the stored deliveries, scans Shopify
    /// for changed orders, and waits until every triggered order was fetched.
    pub async fn sync_now(&self, shop: &str) -> anyhow::Result<ScanReport> {
        let sync = self
            .shops
            .get(shop)
            .with_context(|| format!("{shop} is not synced (no credentials configured)"))?;
        mirror::sync_now(&self.store, &sync.mirror, shop)
            .await
            .map_err(|e| anyhow::anyhow!("syncing {shop}: {e}"))
    }

    /// Stops intake, lets in-flight requests finish, stops the workers, flushes and closes the
    /// store.
    pub async fn stop(self) -> anyhow::Result<()> {
        if self.service_manager {
            health::notify_stopping();
        }
        self.ready.store(false, Ordering::SeqCst);
        self.cancel.cancel();
        self.tasks.wait().await;
        self.store.flush().await.context("final flush")?;
        self.store.close();
        tracing::info!("shipgate stopped");
        Ok(())
    }
}

/// Deletes processed deliveries older than the retention window, at start and every six hours,
/// so that the store does not keep every webhook's payload (customer data included) for ever.
async fn run_retention(
    store: Store,
    retention: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
    loop {
        let cutoff = crate::delivery::now_ms().saturating_sub(retention.as_millis() as u64);
        match store.prune_deliveries(cutoff) {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "deliveries past the retention window deleted"),
            Err(e) => tracing::warn!(error = %e, "the retention could not delete old deliveries"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}
