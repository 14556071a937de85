//! `halley serve`: settings from their defaults, a TOML file, `HALLEY_*`
//! variables and flags (each over the one before), then the server until
//! SIGINT/SIGTERM (SIGHUP reloads the TLS certificate); or, with
//! `--print-config`, the merged settings as TOML.
//!
//! The flags are not declared here: they are built from halley-server's
//! descriptors ([`halley_server::config::settings`]), where each setting is
//! declared once with its type, default and help. clap reads flags and
//! variables; `ArgMatches::value_source` tells which one gave a value, so
//! errors and `--print-config` can name it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use halley_server::config::{settings, Setting, Shape};
use halley_server::{Config, Server};

/// The settings that exist only in the file, as arrays of tables.
const FILE_ONLY_TABLES: [&str; 5] = ["overflow", "history", "lazy", "qos", "remote-adapter"];

const AFTER_HELP: &str = "\
Each setting is a flag, an environment variable HALLEY_<NAME> (the flag name in upper snake \
case: --max-interval is HALLEY_MAX_INTERVAL) and a key of the TOML file (max-interval = 10000; \
--jwt-hs256-secret is hs256-secret in a [jwt] table, --webhook-url is url in [webhook]). \
Precedence: defaults < file < environment < flags. --print-config shows the result and where \
each value came from.

Per-channel rules exist only in the file, as arrays of tables: [[overflow]] (pattern, policy), \
[[history]] (pattern, max-messages, max-age-ms), [[lazy]] (pattern, max-lazy-timeout), [[qos]] \
(pattern, max-frequency, mode, key) and [[remote-adapter]] (name, channels, connect or listen, \
ping-interval-ms, snapshot-length). See README.md and docs/adapters.md.";

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(&'static str),
    Flag(&'static str),
}

impl Origin {
    /// For errors: "the environment variable HALLEY_TIMEOUT".
    fn describe(&self, setting: &Setting) -> String {
        match self {
            Origin::Default => "its default".into(),
            Origin::File(path) => format!(
                "the config file {}, key {}",
                path.display(),
                setting.toml_path()
            ),
            Origin::Env(var) => format!("the environment variable {var}"),
            Origin::Flag(name) => format!("the flag --{name}"),
        }
    }
}

/// The comments of `--print-config`: `default`, `env HALLEY_TIMEOUT`.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::Flag(name) => write!(f, "flag --{name}"),
        }
    }
}

/// The values a flag or variable gave one setting.
#[derive(Debug, Clone)]
struct Given {
    setting: &'static Setting,
    values: Vec<String>,
    origin: Origin,
}

/// What `halley serve` was given; [`ServeArgs::load`] merges it.
#[derive(Debug, Clone, Default)]
pub struct ServeArgs {
    config: Option<PathBuf>,
    print_config: bool,
    /// The settings set by a flag or a variable, in declaration order.
    given: Vec<Given>,
}

impl clap::Args for ServeArgs {
    fn augment_args(cmd: Command) -> Command {
        let cmd = cmd
            .after_help(AFTER_HELP)
            .arg(
                Arg::new("config")
                    .long("config")
                    .env("HALLEY_CONFIG")
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("TOML file with settings (keys are the flag names without --)"),
            )
            .arg(
                Arg::new("print-config")
                    .long("print-config")
                    .action(ArgAction::SetTrue)
                    .help(
                        "Print the merged settings as TOML, each with where it came from, \
                         and exit without serving (secrets are masked)",
                    ),
            );
        settings()
            .iter()
            .fold(cmd, |cmd, setting| cmd.arg(flag(setting)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// The flag (and variable) of one setting, with its real default in the help.
fn flag(setting: &'static Setting) -> Arg {
    let arg = Arg::new(setting.name.as_str())
        .long(setting.name.as_str())
        .env(setting.env.as_str())
        .value_name(setting.value_name)
        .help(format!(
            "{} [default: {}]",
            setting.help,
            setting.default_text()
        ))
        .hide_env_values(setting.secret)
        .visible_aliases(setting.aliases.iter().copied());
    let arg = match setting.shape {
        Shape::One => arg.action(ArgAction::Set).allow_negative_numbers(true),
        Shape::Switch => arg
            .action(ArgAction::Set)
            .num_args(0..=1)
            .default_missing_value("true"),
        Shape::List => arg.action(ArgAction::Append).value_delimiter(','),
    };
    match setting.table {
        Some("jwt") => {
            arg.help_heading("JWT Metadata Adapter, TOML [jwt] (any of these turns it on)")
        }
        Some("webhook") => {
            arg.help_heading("Webhook Metadata Adapter, TOML [webhook] (any of these turns it on)")
        }
        _ => arg,
    }
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Vec::new();
        for setting in settings() {
            let origin = match matches.value_source(&setting.name) {
                Some(ValueSource::CommandLine) => Origin::Flag(&setting.name),
                Some(ValueSource::EnvVariable) => Origin::Env(&setting.env),
                _ => continue,
            };
            let values = matches
                .get_many::<String>(&setting.name)
                .map(|values| values.cloned().collect())
                .unwrap_or_default();
            given.push(Given {
                setting,
                values,
                origin,
            });
        }
        Ok(ServeArgs {
            config: matches.get_one::<PathBuf>("config").cloned(),
            print_config: matches.get_flag("print-config"),
            given,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// The merged settings and where each came from.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// By setting name; absent: the default.
    origins: HashMap<&'static str, Origin>,
    /// The file and its array-of-table settings, for `--print-config`.
    file: Option<(PathBuf, toml::Table)>,
}

impl Loaded {
    pub fn origin(&self, name: &str) -> &Origin {
        self.origins.get(name).unwrap_or(&Origin::Default)
    }
}

impl ServeArgs {
    /// The merged settings alone (the tests' shorthand for [`Self::load`]).
    #[cfg(test)]
    pub fn into_config(self) -> anyhow::Result<Config> {
        Ok(self.load()?.config)
    }

    /// Defaults < file < environment < flags, validated; errors name where
    /// the faulty value came from.
    pub fn load(&self) -> anyhow::Result<Loaded> {
        let mut origins = HashMap::new();
        let (mut config, file) = match &self.config {
            Some(path) => {
                let (config, raw) = read_file(path)?;
                for setting in settings() {
                    if in_file(&raw, setting) {
                        origins.insert(setting.name.as_str(), Origin::File(path.clone()));
                    }
                }
                let tables = raw
                    .into_iter()
                    .filter(|(key, _)| FILE_ONLY_TABLES.contains(&key.as_str()))
                    .collect();
                (config, Some((path.clone(), tables)))
            }
            None => (Config::default(), None),
        };
        // Variables first, then flags: a flag wins over a variable of the
        // same setting (clap gives only one of them per setting anyway).
        let by_rank = |given: &&Given| matches!(given.origin, Origin::Flag(_));
        let (flags, vars): (Vec<&Given>, Vec<&Given>) = self.given.iter().partition(by_rank);
        for given in vars.into_iter().chain(flags) {
            let setting = given.setting;
            setting
                .apply(&mut config, &given.values)
                .map_err(|e| anyhow!("{}: {e}", given.origin.describe(setting)))?;
            origins.insert(setting.name.as_str(), given.origin.clone());
        }
        let loaded = Loaded {
            config,
            origins,
            file,
        };
        loaded.config.validate().map_err(|e| {
            // Validation speaks of settings by name; say where the value came from.
            let culprit = settings()
                .iter()
                .filter(|s| e.starts_with(&format!("{} ", s.name)))
                .max_by_key(|s| s.name.len());
            match culprit.map(|s| (s, loaded.origin(&s.name))) {
                Some((_, Origin::Default)) | None => anyhow!(e),
                Some((setting, origin)) => anyhow!("{e} (from {})", origin.describe(setting)),
            }
        })?;
        Ok(loaded)
    }
}

/// The file as [`Config`] and as a raw table (to know which keys it sets).
fn read_file(path: &Path) -> anyhow::Result<(Config, toml::Table)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    // toml's errors quote the offending line, key and value included.
    let config = toml::from_str::<Config>(&text)
        .with_context(|| format!("config file {}", path.display()))?;
    let raw = text
        .parse::<toml::Table>()
        .with_context(|| format!("config file {}", path.display()))?;
    Ok((config, raw))
}

fn in_file(raw: &toml::Table, setting: &Setting) -> bool {
    let table = match setting.table {
        Some(name) => match raw.get(name) {
            Some(toml::Value::Table(table)) => table,
            _ => return false,
        },
        None => raw,
    };
    let aliases = setting.aliases.iter().copied();
    std::iter::once(setting.key.as_str())
        .chain(aliases)
        .any(|key| table.contains_key(key))
}

/// `--print-config`: TOML that `--config` reads back, each scalar with its
/// origin in a comment and secrets masked.
pub fn print_config(loaded: &Loaded) -> String {
    use std::fmt::Write;
    let config = &loaded.config;
    let mut out = String::from(
        "# halley serve --print-config: the merged settings (load them with --config).\n\
         # Each comment says where the value came from; secrets are masked.\n",
    );
    let section = |out: &mut String, table: Option<&str>| {
        for setting in settings().iter().filter(|s| s.table == table) {
            let origin = loaded.origin(&setting.name);
            let _ = match setting.value(config, true) {
                Some(shown) => writeln!(out, "{} = {} # {origin}", setting.key, shown.toml),
                None => writeln!(
                    out,
                    "# {} is unset ({}) # {origin}",
                    setting.key, setting.unset
                ),
            };
        }
    };
    section(&mut out, None);
    for (table, set) in [
        ("jwt", config.jwt.is_some()),
        ("webhook", config.webhook.is_some()),
    ] {
        if set {
            let _ = writeln!(out, "\n[{table}]");
            section(&mut out, Some(table));
        } else {
            let _ = writeln!(out, "\n# [{table}] is not set");
        }
    }
    match &loaded.file {
        Some((path, tables)) if !tables.is_empty() => {
            let _ = writeln!(
                out,
                "\n# Per-channel rules, from the file {}",
                path.display()
            );
            out.push_str(&toml::to_string(tables).expect("a TOML table serializes"));
        }
        _ => {
            let _ = writeln!(
                out,
                "\n# No per-channel rules ([[{}]]: file only)",
                FILE_ONLY_TABLES.join("]], [[")
            );
        }
    }
    out
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let loaded = args.load()?;
    if args.print_config {
        print!("{}", print_config(&loaded));
        return Ok(());
    }
    let config = loaded.config;
    // The Metadata Adapter's settings are checked by building it (a key
    // file to read, a URL to parse, a secret too short): before anything
    // binds, and reported as what they are, not as a failure to start.
    config
        .metadata_adapter()
        .map_err(|e| anyhow!("invalid configuration: {e}"))?;
    crate::init_logs(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listen = config.listen;
        let server = Server::bind(config)
            .await
            .with_context(|| format!("starting the server on {listen}"))?;
        let (drain, stop) = signals();
        reload_on_sighup(server.tls().cloned());
        server
            .run_with_drain(
                async {
                    // Dropped unsent when SIGINT stops at once: no drain.
                    if drain.await.is_err() {
                        std::future::pending::<()>().await;
                    }
                },
                async {
                    let _ = stop.await;
                },
            )
            .await?;
        Ok(())
    })
}

/// The first SIGTERM drains (see `halley_server::server`); a second one,
/// or SIGINT (Ctrl-C) at any time, stops at once.
fn signals() -> (
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (drain_tx, drain) = tokio::sync::oneshot::channel();
    let (stop_tx, stop) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        #[cfg(not(unix))]
        let mut terminate = None;
        tokio::select! {
            _ = sigterm(&mut terminate) => {
                let _ = drain_tx.send(());
                tokio::select! {
                    _ = sigterm(&mut terminate) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = stop_tx.send(());
    });
    (drain, stop)
}

/// SIGHUP reads the TLS certificate and key again (`tls-cert`, `tls-key`);
/// without TLS it only says there is nothing to reload (rather than ending
/// the process, SIGHUP's default).
#[cfg(unix)]
fn reload_on_sighup(tls: Option<std::sync::Arc<halley_server::transport::tls::PublicTls>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match &tls {
                // Logs its own outcome.
                Some(tls) => {
                    tracing::info!("SIGHUP: reloading the TLS certificate");
                    let _ = tls.reload();
                }
                None => tracing::info!("SIGHUP: nothing to reload (no tls-cert)"),
            }
        }
    });
}

#[cfg(not(unix))]
fn reload_on_sighup(_: Option<std::sync::Arc<halley_server::transport::tls::PublicTls>>) {}

#[cfg(unix)]
async fn sigterm(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn sigterm(_: &mut Option<()>) {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};
    use halley_server::state::throttle::Mode;

    /// `halley serve ARGS...` as the binary parses it (flags; the tests
    /// that need variables run the binary, in tests/config.rs).
    fn parse(args: &[&str]) -> ServeArgs {
        let cmd = ServeArgs::augment_args(Command::new("serve"));
        let matches = cmd
            .try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))
            .unwrap();
        ServeArgs::from_arg_matches(&matches).unwrap()
    }

    fn with_file(file: &Path, args: &[&str]) -> ServeArgs {
        let mut all = vec!["--config", file.to_str().unwrap()];
        all.extend_from_slice(args);
        parse(&all)
    }

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
        let args = with_file(&file, &["--timeout", "7000"]);
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
        std::fs::write(&file, "api-keys = [\"from-file-0123456789\"]\n").unwrap();
        let args = with_file(&file, &[]);
        assert_eq!(
            args.into_config().unwrap().api_keys,
            ["from-file-0123456789"]
        );
        let (a, b) = ("key-a-0123456789", "key-b-0123456789");
        let args = with_file(&file, &["--api-keys", a, "--api-key", b]);
        assert_eq!(args.into_config().unwrap().api_keys, [a, b], "flags win");
        let args = parse(&["--api-keys", " "]);
        assert!(args.into_config().is_err(), "an empty key is refused");
        // The README's spelling, `api-key`, is accepted in the file too.
        std::fs::write(&file, "api-key = [\"key-k-0123456789\"]\n").unwrap();
        assert_eq!(
            with_file(&file, &[]).into_config().unwrap().api_keys,
            ["key-k-0123456789"]
        );
        // A short key is refused, with the rule.
        std::fs::write(&file, "api-key = [\"k\"]\n").unwrap();
        let error = with_file(&file, &[]).into_config().unwrap_err().to_string();
        assert!(error.contains("shorter than 16 characters"), "{error}");
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
        let args = with_file(&file, &["--max-publish-rate", "5"]);
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
            let args = with_file(&file, &[]);
            assert!(args.into_config().is_err(), "{why}");
        }
        for flags in [
            ["--max-bandwidth", "0"],
            ["--max-publish-rate", "0"],
            ["--max-publish-rate", "-1"],
        ] {
            let args = parse(&flags);
            assert!(args.into_config().is_err(), "{flags:?}");
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
        let args = with_file(&file, &[]);
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
        let args = with_file(&file, &[]);
        assert!(args.into_config().is_err());
        let args = parse(&["--path", "cometd"]);
        assert!(args.into_config().is_err());
    }

    #[test]
    fn help_shows_each_real_default_and_variable() {
        let cmd = ServeArgs::augment_args(Command::new("serve"));
        let defaults = Config::default();
        for setting in settings() {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(setting.name.as_str()))
                .unwrap_or_else(|| panic!("--{} is a flag", setting.name));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(setting.env.as_str())
            );
            let help = arg.get_help().unwrap().to_string();
            let default = match setting.value(&defaults, false) {
                Some(shown) if !shown.text.is_empty() && setting.table.is_none() => shown.text,
                _ => setting.default_text(),
            };
            assert!(
                help.ends_with(&format!("[default: {default}]")),
                "--{}: {help}",
                setting.name
            );
        }
        let help = cmd.clone().render_long_help().to_string();
        assert!(help.contains("[env: HALLEY_TIMEOUT=]"), "{help}");
        assert!(help.contains("exist only in the file"), "{help}");
        let overflow = help.split("--max-queue ").nth(1).unwrap();
        assert!(
            !overflow[..200].contains("oldest are dropped"),
            "the policy decides what is dropped: {overflow}"
        );
    }

    #[test]
    fn precedence_and_origins_default_file_flag() {
        let dir = std::env::temp_dir().join(format!("halley-config-origin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("halley.toml");
        std::fs::write(
            &file,
            "timeout = 5000\nmax-interval = 3000\n[jwt]\nhs256-secret = \"s\"\n",
        )
        .unwrap();
        let loaded = with_file(&file, &["--timeout", "7000", "--jwt-issuer", "me"])
            .load()
            .unwrap();
        assert_eq!(loaded.config.timeout, 7000);
        assert_eq!(loaded.origin("timeout"), &Origin::Flag("timeout"));
        assert_eq!(loaded.config.max_interval, 3000);
        assert_eq!(loaded.origin("max-interval"), &Origin::File(file.clone()));
        assert_eq!(loaded.config.interval, 0);
        assert_eq!(loaded.origin("interval"), &Origin::Default);
        let jwt = loaded.config.jwt.as_ref().unwrap();
        assert_eq!(jwt.hs256_secret.as_deref(), Some("s"), "file, kept");
        assert_eq!(
            jwt.issuer.as_deref(),
            Some("me"),
            "flag, added to the file's table"
        );
        assert_eq!(loaded.origin("jwt-hs256-secret"), &Origin::File(file));
    }

    #[test]
    fn errors_name_their_source() {
        let error = parse(&["--timeout", "xyz"]).load().unwrap_err().to_string();
        assert!(
            error.contains("the flag --timeout") && error.contains("xyz"),
            "{error}"
        );
        let error = parse(&["--path", "cometd"]).load().unwrap_err().to_string();
        assert!(error.contains("(from the flag --path)"), "{error}");
        let dir = std::env::temp_dir().join(format!("halley-config-errors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "timeout = \"soon\"\n").unwrap();
        let error = format!("{:#}", with_file(&file, &[]).load().unwrap_err());
        assert!(
            error.contains("bad.toml") && error.contains("timeout"),
            "{error}"
        );
        std::fs::write(&file, "max-batch-messages = 0\n").unwrap();
        let error = with_file(&file, &[]).load().unwrap_err().to_string();
        assert!(
            error.contains("bad.toml, key max-batch-messages"),
            "{error}"
        );
    }

    #[test]
    fn print_config_round_trips_and_masks_secrets() {
        let dir = std::env::temp_dir().join(format!("halley-config-print-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("halley.toml");
        std::fs::write(
            &file,
            "max-interval = 3000\nmax-publish-rate = 2.5\n\
             [webhook]\nurl = \"http://auth.internal/check\"\nactions = [\"subscribe\"]\n\
             [[qos]]\npattern = \"/stocks/*\"\nmax-frequency = 10\nkey = \"symbol\"\n\
             [[overflow]]\npattern = \"/chat/**\"\npolicy = \"disconnect\"\n",
        )
        .unwrap();
        let first = with_file(&file, &["--timeout", "7000", "--path", "/b \"x\""])
            .load()
            .unwrap();
        let printed = print_config(&first);
        assert!(
            printed.contains("timeout = 7000 # flag --timeout\n"),
            "{printed}"
        );
        assert!(
            printed.contains(&format!("max-interval = 3000 # file {}\n", file.display())),
            "{printed}"
        );
        assert!(printed.contains("interval = 0 # default\n"), "{printed}");
        assert!(
            printed.contains("# max-bandwidth is unset (unlimited) # default\n"),
            "{printed}"
        );
        let again = dir.join("printed.toml");
        std::fs::write(&again, &printed).unwrap();
        let second = with_file(&again, &[]).load().unwrap();
        assert_eq!(
            format!("{:?}", second.config),
            format!("{:?}", first.config),
            "--print-config reads back as the same settings:\n{printed}"
        );

        let keys = "key-one-0123456789,key-two-0123456789";
        let secret = parse(&["--api-keys", keys, "--jwt-hs256-secret", "hush"])
            .load()
            .unwrap();
        let printed = print_config(&secret);
        assert!(
            !printed.contains("key-one") && !printed.contains("hush"),
            "{printed}"
        );
        assert!(
            printed.contains("api-keys = [\"********\", \"********\"] # flag --api-keys\n"),
            "{printed}"
        );
        assert!(
            printed.contains("\n[jwt]\nhs256-secret = \"********\""),
            "{printed}"
        );
    }
}
