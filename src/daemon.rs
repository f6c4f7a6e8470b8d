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
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::{HttpSettings, serve};
use crate::intake::shopify::Verifier;
use crate::intake::{Intake, IntakeCounters, IntakeMode, IntakeSettings};
use crate::processor::{self, ProcessorSettings};
use crate::store::{Durability, Store, StoreOptions};

/// Switches that are not configuration: they exist for tests and benchmarks only.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Whether durable writes are flushed (always, outside the crash test).
    pub durability: Durability,
    /// Whether the intake stores deliveries (always, outside the benchmark).
    pub intake: IntakeMode,
    /// Whether the delivery processor runs.
    pub processor: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Flush,
            intake: IntakeMode::Durable,
            processor: true,
        }
    }
}

/// A started daemon.
pub struct Daemon {
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    store: Store,
    counters: Arc<IntakeCounters>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    ready: Arc<AtomicBool>,
}

#[derive(Clone)]
struct AdminState {
    ready: Arc<AtomicBool>,
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
        tasks.spawn(serve(public, intake.router(), http, cancel.clone()));
        tasks.spawn(serve(
            admin,
            admin_router(AdminState {
                ready: ready.clone(),
            }),
            http,
            cancel.clone(),
        ));
        if options.processor {
            tasks.spawn(processor::run(
                store.clone(),
                ProcessorSettings {
                    export_dir: config.compliance.export_dir.clone(),
                },
                cancel.clone(),
            ));
        }
        tasks.close();
        ready.store(true, Ordering::SeqCst);
        tracing::info!(%public_addr, %admin_addr, shops = config.shops.len(), "shipgate ready");
        Ok(Daemon {
            public_addr,
            admin_addr,
            store,
            counters,
            cancel,
            tasks,
            ready,
        })
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

    /// Stops intake, lets in-flight requests finish, stops the workers, flushes and closes the
    /// store.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.ready.store(false, Ordering::SeqCst);
        self.cancel.cancel();
        self.tasks.wait().await;
        self.store.flush().await.context("final flush")?;
        self.store.close();
        tracing::info!("shipgate stopped");
        Ok(())
    }
}

fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
