//! `halley serve`: settings from a TOML file, `HALLEY_*` variables and flags
//! (each over the one before), then the server until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use halley_server::{Config, Server};

/// Every setting is also a TOML key of the same name (`max-interval = 10000`)
/// and an environment variable (`HALLEY_MAX_INTERVAL`). Flags win over the
/// environment, which wins over the file.
///
/// Rate-limited channels exist only in the file, as `[[qos]]` tables:
/// `pattern`, `max-frequency` (updates per second per channel per session),
/// `mode` (`merge`, the default, or `distinct`) and, for merge, `key` (a
/// top-level field of `data` to conflate by). See `docs/adapters.md`.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML file with settings (keys are the flag names without `--`)
    #[arg(long, env = "HALLEY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "HALLEY_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Bayeux endpoint; every path under it is the same endpoint [default: /cometd]
    #[arg(long, env = "HALLEY_PATH", value_name = "PATH")]
    path: Option<String>,
    /// Milliseconds a /meta/connect is held when nothing is queued [default: 20000]
    #[arg(long, env = "HALLEY_TIMEOUT", value_name = "MS")]
    timeout: Option<u64>,
    /// Milliseconds clients wait between a connect reply and the next connect [default: 0]
    #[arg(long, env = "HALLEY_INTERVAL", value_name = "MS")]
    interval: Option<u64>,
    /// Milliseconds a session survives without a connect before it expires [default: 10000]
    #[arg(long, env = "HALLEY_MAX_INTERVAL", value_name = "MS")]
    max_interval: Option<u64>,
    /// Sessions of one browser that may hold a long poll at once; negative: unlimited [default: 1]
    #[arg(
        long,
        env = "HALLEY_MAX_SESSIONS_PER_BROWSER",
        value_name = "N",
        allow_negative_numbers = true
    )]
    max_sessions_per_browser: Option<i64>,
    /// Poll interval advised to a browser's extra sessions (multiple-clients), ms [default: 2000]
    #[arg(long, env = "HALLEY_MULTI_SESSION_INTERVAL", value_name = "MS")]
    multi_session_interval: Option<u64>,
    /// Largest request body accepted in bytes; larger gets HTTP 413 [default: 1048576]
    #[arg(long, env = "HALLEY_MAX_REQUEST_BYTES", value_name = "BYTES")]
    max_request_bytes: Option<usize>,
    /// Most messages in one request; more gets HTTP 413 [default: 1000]
    #[arg(long, env = "HALLEY_MAX_BATCH_MESSAGES", value_name = "N")]
    max_batch_messages: Option<usize>,
    /// Most deliveries queued per session; beyond it the oldest are dropped [default: 10000]
    #[arg(long, env = "HALLEY_MAX_QUEUE", value_name = "N")]
    max_queue: Option<usize>,
    /// Most bytes of deliveries queued per session; beyond it the oldest are dropped [default: 16777216]
    #[arg(long, env = "HALLEY_MAX_QUEUE_BYTES", value_name = "BYTES")]
    max_queue_bytes: Option<usize>,
    /// What a full session outbox does with a new delivery: drop-oldest, drop-newest or disconnect
    /// (per-channel rules: `[[overflow]]` tables in the TOML file) [default: drop-oldest]
    #[arg(long, env = "HALLEY_OVERFLOW_POLICY", value_name = "POLICY")]
    overflow_policy: Option<halley_server::state::outbox::OverflowPolicy>,
    /// Bytes of deliveries per second per session; beyond it they wait [default: unlimited]
    #[arg(long, env = "HALLEY_MAX_BANDWIDTH", value_name = "BYTES")]
    max_bandwidth: Option<u64>,
    /// Publishes per second per session (bursts of as many); beyond it 429::publish_rate_exceeded [default: unlimited]
    #[arg(long, env = "HALLEY_MAX_PUBLISH_RATE", value_name = "N")]
    max_publish_rate: Option<f64>,
    /// Milliseconds between sweeps for expired sessions [default: 1000]
    #[arg(long, env = "HALLEY_SWEEP_PERIOD", value_name = "MS")]
    sweep_period: Option<u64>,
    /// Accept a clientId without the BAYEUX_BROWSER cookie it was issued with [default: false]
    #[arg(long, env = "HALLEY_TRUST_CLIENT_SESSION", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    trust_client_session: Option<bool>,
    /// Offer callback-polling (JSONP) [default: true]
    #[arg(long, env = "HALLEY_CALLBACK_POLLING", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    callback_polling: Option<bool>,
    /// Offer WebSocket on the Bayeux path; `--websocket false` leaves long-polling [default: true]
    #[arg(long, env = "HALLEY_WEBSOCKET", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    websocket: Option<bool>,
    /// Milliseconds a WebSocket may stay silent before it is closed (pinged at half) [default: 60000]
    #[arg(long, env = "HALLEY_WEBSOCKET_IDLE_TIMEOUT", value_name = "MS")]
    websocket_idle_timeout: Option<u64>,
    /// A key that may use the HTTP publish API (POST /api/publish); repeat for several.
    /// HALLEY_API_KEYS takes a comma-separated list. None: the API is disabled
    #[arg(
        long = "api-key",
        env = "HALLEY_API_KEYS",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// Most sessions one authenticated user may hold at once (users come from the
    /// `[jwt]` or `[webhook]` Metadata Adapter) [default: no cap]
    #[arg(long, env = "HALLEY_MAX_SESSIONS_PER_USER", value_name = "N")]
    max_sessions_per_user: Option<usize>,
}

impl ServeArgs {
    /// The file's settings (or the defaults), with flags and environment over them.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<Config>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => Config::default(),
        };
        macro_rules! over {
            ($($field:ident),*) => { $(if let Some(v) = self.$field { config.$field = v; })* };
        }
        over!(
            listen,
            path,
            timeout,
            interval,
            max_interval,
            max_sessions_per_browser,
            multi_session_interval,
            max_request_bytes,
            max_batch_messages,
            max_queue,
            max_queue_bytes,
            overflow_policy,
            sweep_period,
            trust_client_session,
            callback_polling,
            websocket,
            websocket_idle_timeout
        );
        if !self.api_keys.is_empty() {
            config.api_keys = self.api_keys;
        }
        if self.max_sessions_per_user.is_some() {
            config.max_sessions_per_user = self.max_sessions_per_user;
        }
        if self.max_bandwidth.is_some() {
            config.max_bandwidth = self.max_bandwidth;
        }
        if self.max_publish_rate.is_some() {
            config.max_publish_rate = self.max_publish_rate;
        }
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listen = config.listen;
        let server = Server::bind(config)
            .await
            .with_context(|| format!("binding {listen}"))?;
        server.run(shutdown_signal()).await?;
        Ok(())
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halley_server::state::throttle::Mode;

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("halley-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("halley.toml");
        std::fs::write(
            &file,
            "timeout = 5000\nmax-interval = 3000\npath = \"/bayeux\"\n\
             [[overflow]]\npattern = \"/prices/**\"\npolicy = \"drop-newest\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            timeout: Some(7000),
            ..ServeArgs::default()
        };
        let config = args.into_config().unwrap();
        assert_eq!(config.timeout, 7000, "flag over file");
        assert_eq!(config.max_interval, 3000, "file over default");
        assert_eq!(config.path, "/bayeux");
        assert_eq!(config.interval, 0, "default");
        assert_eq!(config.overflow.len(), 1);
        assert!(config.api_keys.is_empty(), "no key: the publish API is off");
        assert_eq!(
            config.overflow[0].policy,
            halley_server::state::outbox::OverflowPolicy::DropNewest
        );
    }

    #[test]
    fn api_keys_from_file_then_flags() {
        let dir = std::env::temp_dir().join(format!("halley-config-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("halley.toml");
        std::fs::write(&file, "api-keys = [\"from-file\"]\n").unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        assert_eq!(args.into_config().unwrap().api_keys, ["from-file"]);
        let args = ServeArgs {
            config: Some(file),
            api_keys: vec!["a".into(), "b".into()],
            ..ServeArgs::default()
        };
        assert_eq!(
            args.into_config().unwrap().api_keys,
            ["a", "b"],
            "flags win"
        );
        let args = ServeArgs {
            api_keys: vec![" ".into()],
            ..ServeArgs::default()
        };
        assert!(args.into_config().is_err(), "an empty key is refused");
    }

    #[test]
    fn qos_rules_and_rates_from_file_then_flags() {
        let dir = std::env::temp_dir().join(format!("halley-config-qos-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("halley.toml");
        std::fs::write(
            &file,
            "max-bandwidth = 10000\nmax-publish-rate = 20\n\
             [[qos]]\npattern = \"/stocks/*\"\nmax-frequency = 10\nkey = \"symbol\"\n\
             [[qos]]\npattern = \"/orders\"\nmax-frequency = 0.5\nmode = \"distinct\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            max_publish_rate: Some(5.0),
            ..ServeArgs::default()
        };
        let config = args.into_config().unwrap();
        assert_eq!(config.max_bandwidth, Some(10_000));
        assert_eq!(config.max_publish_rate, Some(5.0), "flag over file");
        assert_eq!(config.qos.len(), 2);
        assert_eq!(config.qos[0].mode, Mode::Merge, "merge by default");
        assert_eq!(config.qos[0].key.as_deref(), Some("symbol"));
        assert_eq!(config.qos[1].mode, Mode::Distinct);
        assert_eq!(config.qos[1].max_frequency, 0.5);
    }

    #[test]
    fn bad_qos_values_are_refused() {
        let dir = std::env::temp_dir().join(format!("halley-config-badqos-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("halley.toml");
        for (toml, why) in [
            (
                "pattern = \"/a\"\nmax-frequency = 0",
                "non-positive frequency",
            ),
            ("pattern = \"/a\"\nmax-frequency = -2", "negative frequency"),
            (
                "pattern = \"/a\"\nmax-frequency = 1\nmode = \"fast\"",
                "unknown mode",
            ),
            ("pattern = \"a/b\"\nmax-frequency = 1", "invalid pattern"),
            (
                "pattern = \"/a\"\nmax-frequency = 1\nmode = \"distinct\"\nkey = \"k\"",
                "key without merge",
            ),
            ("pattern = \"/a\"", "no frequency"),
        ] {
            std::fs::write(&file, format!("[[qos]]\n{toml}\n")).unwrap();
            let args = ServeArgs {
                config: Some(file.clone()),
                ..ServeArgs::default()
            };
            assert!(args.into_config().is_err(), "{why}");
        }
        for (bandwidth, rate) in [(Some(0), None), (None, Some(0.0)), (None, Some(-1.0))] {
            let args = ServeArgs {
                max_bandwidth: bandwidth,
                max_publish_rate: rate,
                ..ServeArgs::default()
            };
            assert!(args.into_config().is_err(), "{bandwidth:?} {rate:?}");
        }
    }

    #[test]
    fn remote_adapter_tables_with_defaults() {
        let dir = std::env::temp_dir().join(format!("halley-config-remote-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("halley.toml");
        std::fs::write(
            &file,
            "[[remote-adapter]]\nname = \"prices\"\nchannels = [\"/stocks/*\"]\n\
             connect = \"feed.internal:7001\"\n\
             [[remote-adapter]]\nname = \"news\"\nchannels = [\"/news/**\", \"/alerts\"]\n\
             listen = \"127.0.0.1:7002\"\nping-interval-ms = 1000\nsnapshot-length = 10\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..ServeArgs::default()
        };
        let config = args.into_config().unwrap();
        let [prices, news] = &config.remote_adapter[..] else {
            panic!("two tables: {:?}", config.remote_adapter);
        };
        assert_eq!(prices.connect.as_deref(), Some("feed.internal:7001"));
        assert_eq!(prices.listen, None);
        assert_eq!(prices.ping_interval_ms, 5000, "default");
        assert_eq!(prices.snapshot_length, 1, "default");
        assert_eq!(news.channels, ["/news/**", "/alerts"]);
        assert_eq!(news.listen, Some("127.0.0.1:7002".parse().unwrap()));
        assert_eq!(news.ping_interval_ms, 1000);
        assert_eq!(news.snapshot_length, 10);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = std::env::temp_dir().join(format!("halley-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("halley.toml");
        std::fs::write(&file, "timeout_ms = 5000\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..ServeArgs::default()
        };
        assert!(args.into_config().is_err());
        let args = ServeArgs {
            path: Some("cometd".into()),
            ..ServeArgs::default()
        };
        assert!(args.into_config().is_err());
    }
}
