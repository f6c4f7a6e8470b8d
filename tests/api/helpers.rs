//! Starting the daemon for a test: in-process (`spawn_app`) or as the real binary (`Binary`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use shipgate::config::Config;
use shipgate::daemon::{Daemon, Options};
use shipgate::sandbox::harness::{LoopbackConfig, ShopAuth, ShopSpec};
use shipgate::sandbox::webhooks::ShopifyDelivery;
use tokio::io::{AsyncBufReadExt, BufReader};

pub const SHOP: &str = "test-store.myshopify.com";
pub const OTHER_SHOP: &str = "other-store.myshopify.com";
pub const SECRET: &[u8] = b"current-secret";
pub const OLD_SECRET: &[u8] = b"previous-secret";
pub const OTHER_SECRET: &[u8] = b"other-secret";

/// A configuration for tests: loopback port 0, a store in the test's folder, two webhook-only
/// shops with inline secrets, short timeouts.
pub fn config_text(extra_server: &str) -> String {
    let mut config = LoopbackConfig::new(vec![
        ShopSpec::webhooks_only(SHOP, &[SECRET, OLD_SECRET]),
        ShopSpec::webhooks_only(OTHER_SHOP, &[OTHER_SECRET]),
    ]);
    config.admin_token = Some("test-admin-token".into());
    config.server_extra = format!(
        "body_limit = 65536\nheader_read_timeout_ms = 300\nbody_read_timeout_ms = 300\nshutdown_grace_ms = 5000\n{extra_server}"
    );
    config.toml()
}

/// The daemon running inside the test process.
pub struct TestApp {
    pub daemon: Daemon,
    pub base: String,
    pub client: reqwest::Client,
    pub config: Config,
    /// Holds the store and exports until the test ends.
    pub _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml_str(&config_text(""), dir.path())
        .expect("test config loads")
        .config;
    let daemon = Daemon::start(&config, options)
        .await
        .expect("daemon starts");
    TestApp {
        base: format!("http://{}", daemon.public_addr()),
        daemon,
        client: reqwest::Client::new(),
        config,
        _dir: dir,
    }
}

impl TestApp {
    pub async fn send(&self, delivery: &ShopifyDelivery) -> (u16, String) {
        delivery
            .send(&self.client, &self.base)
            .await
            .expect("request completes")
    }
}

/// The real `shipgate` binary, started with `run` on a config in a temporary folder.
pub struct Binary {
    pub child: tokio::process::Child,
    pub public: String,
    pub admin: String,
    logs: Option<tokio::task::JoinHandle<String>>,
}

pub fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("shipgate.toml");
    std::fs::write(&path, config_text("")).unwrap();
    path
}

impl Binary {
    /// Starts the binary and waits for its readiness line.
    pub async fn start(config: &Path, envs: &[(&str, &str)]) -> Binary {
        Self::spawn(config, envs, Stdio::inherit()).await
    }

    async fn spawn(config: &Path, envs: &[(&str, &str)], stderr: Stdio) -> Binary {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_shipgate"));
        command
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        // A test runner started by systemd hands these down; they would make the daemon talk to
        // the runner's manager (or switch its watchdog off, as WATCHDOG_PID names another pid).
        for inherited in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            command.env_remove(inherited);
        }
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the daemon prints its readiness line");
        let mut public = None;
        let mut admin = None;
        for word in line.split_whitespace() {
            if let Some(a) = word.strip_prefix("public=") {
                public = Some(format!("http://{a}"));
            }
            if let Some(a) = word.strip_prefix("admin=") {
                admin = Some(format!("http://{a}"));
            }
        }
        // Keep draining stdout so the daemon never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Binary {
            child,
            public: public.expect("public address in the readiness line"),
            admin: admin.expect("admin address in the readiness line"),
            logs: None,
        }
    }

    /// Sends SIGTERM without waiting for the exit.
    pub fn signal_term(&self) {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Starts the binary with its stderr (the logs) captured.
    pub async fn start_logging(config: &Path, envs: &[(&str, &str)]) -> Binary {
        let mut binary = Self::spawn(config, envs, Stdio::piped()).await;
        let mut stderr = binary.child.stderr.take().unwrap();
        // Read as it comes, so a chatty daemon never blocks on a full pipe.
        binary.logs = Some(tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let mut logs = String::new();
            let _ = stderr.read_to_string(&mut logs).await;
            logs
        }));
        binary
    }

    /// SIGTERM, wait for the exit, and return everything the daemon logged.
    pub async fn stop_and_collect_logs(mut self) -> String {
        self.signal_term();
        let status = self.child.wait().await.unwrap();
        let logs = self
            .logs
            .take()
            .expect("started with start_logging")
            .await
            .unwrap();
        assert!(status.success(), "exit {status}; logs:\n{logs}");
        logs
    }

    /// SIGKILL: no chance to flush or clean up.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// The daemon wired to a sandbox Shopify: the shop's Admin API and webhooks go through it.
pub struct SyncedApp {
    pub app: TestApp,
    pub sandbox: shipgate::sandbox::shopify::SandboxShopify,
}

/// How the test shop authenticates to the sandbox.
pub enum TestAuth {
    StaticToken,
    ClientCredentials,
}

/// The loopback configuration of a daemon that syncs `sandbox`'s shop. The poller waits an
/// hour: tests sync when they choose (`sync_now`, the scan), never on a timer.
pub fn synced_loopback(
    sandbox: &shipgate::sandbox::shopify::SandboxShopify,
    auth: ShopAuth,
) -> LoopbackConfig {
    let mut loopback = LoopbackConfig::new(vec![ShopSpec::synced(
        sandbox.shop(),
        &sandbox.base_url(),
        auth,
        SANDBOX_WEBHOOK_SECRET,
    )]);
    loopback.extra_sections = "[sync]\npoll_interval_secs = 3600\npoll_overlap_secs = 60".into();
    loopback
}

pub async fn spawn_synced(
    sandbox: shipgate::sandbox::shopify::SandboxConfig,
    auth: TestAuth,
) -> SyncedApp {
    use shipgate::sandbox::shopify::SandboxShopify;
    let sandbox = SandboxShopify::start(sandbox)
        .await
        .expect("sandbox starts");
    let dir = tempfile::tempdir().unwrap();
    let auth = match auth {
        TestAuth::StaticToken => ShopAuth::Token("shpat_sandbox".into()),
        TestAuth::ClientCredentials => ShopAuth::ClientCredentials {
            id: "sandbox-client".into(),
            secret: "sandbox-client-secret".into(),
        },
    };
    let config = synced_loopback(&sandbox, auth)
        .load(dir.path())
        .expect("synced config loads");
    let options = Options {
        // Real backoff would make fault-injection tests slow; the schedule is the same shape.
        client: shipgate::shopify::client::ClientSettings {
            base_backoff: std::time::Duration::from_millis(5),
            max_backoff: std::time::Duration::from_millis(100),
            max_attempts: 12,
            ..Default::default()
        },
        ..Options::default()
    };
    let daemon = Daemon::start(&config, options)
        .await
        .expect("daemon starts");
    let base = format!("http://{}", daemon.public_addr());
    sandbox.set_webhook_url(Some(format!("{base}/webhooks/shopify")));
    SyncedApp {
        app: TestApp {
            base,
            daemon,
            client: reqwest::Client::new(),
            config,
            _dir: dir,
        },
        sandbox,
    }
}

impl SyncedApp {
    /// Brings the mirror of the sandbox shop up to date now (see `Daemon::sync_now`).
    pub async fn sync(&self) -> anyhow::Result<shipgate::mirror::ScanReport> {
        self.app.daemon.sync_now(self.sandbox.shop()).await
    }
}

pub const SANDBOX_WEBHOOK_SECRET: &[u8] = b"sandbox-app-secret";

/// A sandbox configuration the synced tests start from.
pub fn sandbox_config(
    plan: shipgate::sandbox::shopify::Plan,
) -> shipgate::sandbox::shopify::SandboxConfig {
    shipgate::sandbox::shopify::SandboxConfig {
        shop: "sandbox-store.myshopify.com".into(),
        plan,
        static_tokens: vec!["shpat_sandbox".into()],
        client_id: "sandbox-client".into(),
        client_secret: "sandbox-client-secret".into(),
        webhook_secret: SANDBOX_WEBHOOK_SECRET.to_vec(),
        seed: 7,
        ..Default::default()
    }
}

/// A port free right now on loopback (the CLI must find the admin API from the config, so the
/// config cannot say port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
