//! The scalar settings, each declared once.
//!
//! `settings!` below is the one table of Halley's top-level settings: an
//! entry's doc comment is its help, its type and default are those of the
//! [`Config`] field it declares, and the macro also makes its [`Setting`]
//! descriptor. From the descriptors the `halley` binary builds its flags,
//! their `--help` (with the real default), the `HALLEY_*` variables and
//! `halley serve --print-config`; TOML goes through serde, with the same
//! kebab-case names. The fields of the `[jwt]` and `[webhook]` tables keep
//! their types and defaults in [`JwtConfig`] and [`WebhookConfig`];
//! `table_settings!` declares their descriptors. Array-of-table settings
//! (`[[overflow]]`, `[[history]]`, `[[lazy]]`, `[[qos]]`,
//! `[[remote-adapter]]`) are serde structs, set in the file only.
//!
//! Names follow one rule, checked by a test:
//!
//! | declared | TOML | flag | variable |
//! |---|---|---|---|
//! | `max_interval` | `max-interval` | `--max-interval` | `HALLEY_MAX_INTERVAL` |
//! | `hs256_secret` in `[jwt]` | `[jwt] hs256-secret` | `--jwt-hs256-secret` | `HALLEY_JWT_HS256_SECRET` |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::LazyLock;

use serde::Deserialize;

use super::tables::{
    ChannelHistory, ChannelLazy, ChannelOverflow, ChannelQos, RemoteAdapterConfig,
};
use crate::metadata::jwt::JwtConfig;
use crate::metadata::webhook::{Action, WebhookConfig};
use crate::state::outbox::OverflowPolicy;

/// How a setting takes values on a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One value: `--timeout 5000`.
    One,
    /// A boolean: `--websocket` alone means true; `--websocket false`.
    Switch,
    /// Several: repeat the flag, or separate them with commas
    /// (`HALLEY_API_KEYS=a,b`).
    List,
}

/// A setting's value, shown two ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// As `--help` shows it: `/cometd`, `a, b`.
    pub text: String,
    /// As a TOML value: `"/cometd"`, `["a", "b"]`.
    pub toml: String,
}

/// What a masked secret shows instead of itself.
pub const MASK: &str = "********";

/// One value of a setting's type, read from and shown as text.
pub trait Scalar: Sized {
    /// Whether its TOML form is a string (quoted).
    const QUOTED: bool = false;
    /// Whether a flag of this type may stand alone (`--websocket`).
    const SWITCH: bool = false;
    /// The error says what was expected and what was given.
    fn parse(text: &str) -> Result<Self, String>;
    fn text(&self) -> String;
}

/// The type of a setting: a [`Scalar`], an `Option` of one (unset: none)
/// or a `Vec` of them (a list).
pub trait SettingValue: Sized {
    const SHAPE: Shape;
    /// Reads the values given for the setting (one, except for lists).
    fn parse(values: &[String]) -> Result<Self, String>;
    /// `None` when unset; `mask` shows [`MASK`] instead of each value.
    fn show(&self, mask: bool) -> Option<Shown>;
}

fn quote(text: &str) -> String {
    // A JSON string is a valid TOML basic string: the same quotes, and
    // every escape JSON writes (\" \\ \n \t \uXXXX ...) is one of TOML's.
    serde_json::to_string(text).expect("a string serializes")
}

fn show_one<T: Scalar>(value: &T, mask: bool) -> Shown {
    if mask {
        return Shown {
            text: MASK.into(),
            toml: quote(MASK),
        };
    }
    let text = value.text();
    let toml = if T::QUOTED {
        quote(&text)
    } else {
        text.clone()
    };
    Shown { text, toml }
}

fn one<T: Scalar>(values: &[String]) -> Result<T, String> {
    match values {
        [value] => T::parse(value),
        _ => Err(format!("expected one value, got {}", values.len())),
    }
}

macro_rules! setting_value {
    ($($t:ty),* $(,)?) => {$(
        impl SettingValue for $t {
            const SHAPE: Shape = if <$t as Scalar>::SWITCH { Shape::Switch } else { Shape::One };
            fn parse(values: &[String]) -> Result<Self, String> {
                one(values)
            }
            fn show(&self, mask: bool) -> Option<Shown> {
                Some(show_one(self, mask))
            }
        }
        impl SettingValue for Option<$t> {
            const SHAPE: Shape = <$t as SettingValue>::SHAPE;
            fn parse(values: &[String]) -> Result<Self, String> {
                one(values).map(Some)
            }
            fn show(&self, mask: bool) -> Option<Shown> {
                self.as_ref().map(|value| show_one(value, mask))
            }
        }
        impl SettingValue for Vec<$t> {
            const SHAPE: Shape = Shape::List;
            fn parse(values: &[String]) -> Result<Self, String> {
                values.iter().map(|value| <$t as Scalar>::parse(value)).collect()
            }
            fn show(&self, mask: bool) -> Option<Shown> {
                let shown: Vec<Shown> = self.iter().map(|value| show_one(value, mask)).collect();
                let join = |f: fn(&Shown) -> &str| shown.iter().map(f).collect::<Vec<_>>().join(", ");
                Some(Shown {
                    text: join(|s| &s.text),
                    toml: format!("[{}]", join(|s| &s.toml)),
                })
            }
        }
    )*};
}

setting_value!(
    u64,
    i64,
    usize,
    f64,
    bool,
    String,
    SocketAddr,
    PathBuf,
    OverflowPolicy,
    Action,
    AdminListen,
    LogFormat
);

fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("expected {what}, got {text:?}"))
}

impl Scalar for u64 {
    fn parse(text: &str) -> Result<Self, String> {
        number(text, "a whole number (0 or more)")
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

impl Scalar for usize {
    fn parse(text: &str) -> Result<Self, String> {
        number(text, "a whole number (0 or more)")
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

impl Scalar for i64 {
    fn parse(text: &str) -> Result<Self, String> {
        number(text, "a whole number")
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

impl Scalar for f64 {
    fn parse(text: &str) -> Result<Self, String> {
        number(text, "a number")
    }
    fn text(&self) -> String {
        // Debug keeps a decimal point (`5.0`), so TOML reads it as a float.
        format!("{self:?}")
    }
}

impl Scalar for bool {
    const SWITCH: bool = true;
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("expected true or false, got {text:?}")),
        }
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

impl Scalar for String {
    const QUOTED: bool = true;
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
    fn text(&self) -> String {
        self.clone()
    }
}

impl Scalar for PathBuf {
    const QUOTED: bool = true;
    fn parse(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
    fn text(&self) -> String {
        self.display().to_string()
    }
}

impl Scalar for SocketAddr {
    const QUOTED: bool = true;
    /// `HOST:PORT` or `PORT`, host names resolved (see [`super::listen`]).
    fn parse(text: &str) -> Result<Self, String> {
        super::listen::parse(text)
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

impl Scalar for OverflowPolicy {
    const QUOTED: bool = true;
    fn parse(text: &str) -> Result<Self, String> {
        text.trim().parse()
    }
    fn text(&self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(name)) => name,
            other => unreachable!("a unit variant serializes as a string: {other:?}"),
        }
    }
}

impl Scalar for Action {
    const QUOTED: bool = true;
    fn parse(text: &str) -> Result<Self, String> {
        use serde::de::value::{Error, StrDeserializer};
        Action::deserialize(StrDeserializer::<Error>::new(text.trim())).map_err(|e| e.to_string())
    }
    fn text(&self) -> String {
        // serde names the variants in lowercase (`rename_all`); Action has
        // no Serialize to ask.
        format!("{self:?}").to_lowercase()
    }
}

/// Where the admin listener listens (`admin-listen`): an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    Off,
    At(SocketAddr),
}

impl AdminListen {
    /// The address, unless it is off.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            AdminListen::Off => None,
            AdminListen::At(addr) => Some(addr),
        }
    }
}

impl Scalar for AdminListen {
    const QUOTED: bool = true;
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "off" => Ok(AdminListen::Off),
            other => super::listen::parse(other)
                .map(AdminListen::At)
                .map_err(|e| {
                    // The parser's "expected HOST:PORT or PORT (...)" gains `off`.
                    e.replace(super::listen::EXPECTED, "HOST:PORT, PORT or off")
                }),
        }
    }
    fn text(&self) -> String {
        match self {
            AdminListen::Off => "off".into(),
            AdminListen::At(addr) => addr.to_string(),
        }
    }
}

impl<'de> Deserialize<'de> for AdminListen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        <AdminListen as Scalar>::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Reads `listen` from the file as the flag does: `HOST:PORT` or `PORT`.
fn listen_addr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    <SocketAddr as Scalar>::parse(&text).map_err(serde::de::Error::custom)
}

/// How log lines are written (`log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

impl Scalar for LogFormat {
    const QUOTED: bool = true;
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("expected text or json, got {text:?}")),
        }
    }
    fn text(&self) -> String {
        match self {
            LogFormat::Text => "text".into(),
            LogFormat::Json => "json".into(),
        }
    }
}

/// One scalar or list setting: its names, its help, and how to set and show
/// it in a [`Config`].
pub struct Setting {
    /// The flag name: `max-interval`, `jwt-hs256-secret`.
    pub name: String,
    /// The TOML table holding it (`jwt`), or `None` at the top level.
    pub table: Option<&'static str>,
    /// Its TOML key inside `table`: `hs256-secret`.
    pub key: String,
    /// `HALLEY_` and the name in upper snake case.
    pub env: String,
    /// One line of help (the declaration's doc comment).
    pub help: &'static str,
    /// What `--help` calls its value: `MS`, `ADDR`.
    pub value_name: &'static str,
    pub shape: Shape,
    /// Masked by `--print-config`, and its variable's value kept out of `--help`.
    pub secret: bool,
    /// What leaving it unset means, shown as its default (`unlimited`).
    pub unset: &'static str,
    /// Other flag names accepted (`api-key`); the TOML key accepts them too.
    pub aliases: &'static [&'static str],
    set: fn(&mut Config, &[String]) -> Result<(), String>,
    get: fn(&Config, bool) -> Option<Shown>,
    default: fn() -> Option<Shown>,
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting").field("name", &self.name).finish()
    }
}

impl Setting {
    fn new(table: Option<&'static str>, field: &str, help: &'static str) -> Self {
        let key = field.replace('_', "-");
        let name = match table {
            Some(table) => format!("{table}-{key}"),
            None => key.clone(),
        };
        Setting {
            env: env_name(&name),
            name,
            table,
            key,
            help: help.trim(),
            value_name: "VALUE",
            shape: Shape::One,
            secret: false,
            unset: "none",
            aliases: &[],
            set: |_, _| Ok(()),
            get: |_, _| None,
            default: || None,
        }
    }

    /// Sets it in `config` from the values given (one, except for lists);
    /// the error says what is wrong with them, not where they came from.
    pub fn apply(&self, config: &mut Config, values: &[String]) -> Result<(), String> {
        (self.set)(config, values)
    }

    /// Its value in `config` (`None`: unset); `mask` hides secrets.
    pub fn value(&self, config: &Config, mask: bool) -> Option<Shown> {
        (self.get)(config, mask && self.secret)
    }

    /// Its default, as `--help` shows it.
    pub fn default_text(&self) -> String {
        match (self.default)() {
            // An empty list or string (webhook url) means unset too.
            Some(shown) if shown.text.is_empty() => self.unset.into(),
            Some(shown) => shown.text,
            None => self.unset.into(),
        }
    }

    /// Its TOML path for messages: `timeout`, `[jwt] hs256-secret`.
    pub fn toml_path(&self) -> String {
        match self.table {
            Some(table) => format!("[{table}] {}", self.key),
            None => self.key.clone(),
        }
    }
}

/// `HALLEY_` and `name` in upper snake case.
pub fn env_name(name: &str) -> String {
    format!("HALLEY_{}", name.replace('-', "_").to_uppercase())
}

/// Every scalar and list setting, top-level ones first, in declaration order.
pub fn settings() -> &'static [Setting] {
    static SETTINGS: LazyLock<Vec<Setting>> = LazyLock::new(|| {
        let mut all = top_settings();
        all.extend(jwt_settings());
        all.extend(webhook_settings());
        all
    });
    &SETTINGS
}

/// The setting named `name` (its flag name, without `--`).
pub fn setting(name: &str) -> Option<&'static Setting> {
    settings().iter().find(|s| s.name == name)
}

/// Declares [`Config`]: its scalar settings (`field: Type = default,
/// "VALUE-NAME", option = value...;`, the doc comment being the help) and
/// its table settings (serde only). Makes the struct, its `Default` and
/// `top_settings()`.
macro_rules! settings {
    (
        scalars {$(
            $(#[doc = $doc:literal])*
            $(#[serde($($serde:tt)*)])*
            $field:ident: $ty:ty = $default:expr, $value_name:literal $(, $opt:ident = $optval:expr)*;
        )*}
        tables {$(
            $(#[doc = $tdoc:literal])*
            $tfield:ident: $tty:ty;
        )*}
    ) => {
        /// The server's settings. The scalar ones are declared in
        /// `config/settings.rs` with their help and defaults; the tables
        /// are TOML-only.
        #[derive(Debug, Clone, Deserialize)]
        #[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
        pub struct Config {
            $(
                $(#[doc = $doc])*
                $(#[serde($($serde)*)])*
                pub $field: $ty,
            )*
            $(
                $(#[doc = $tdoc])*
                pub $tfield: $tty,
            )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config {
                    $($field: $default,)*
                    $($tfield: Default::default(),)*
                }
            }
        }

        fn top_settings() -> Vec<Setting> {
            vec![$({
                #[allow(unused_mut)]
                let mut setting = Setting {
                    value_name: $value_name,
                    shape: <$ty as SettingValue>::SHAPE,
                    set: |config, values| {
                        config.$field = <$ty as SettingValue>::parse(values)?;
                        Ok(())
                    },
                    get: |config, mask| config.$field.show(mask),
                    default: || Config::default().$field.show(false),
                    ..Setting::new(None, stringify!($field), concat!($($doc),*))
                };
                $(setting.$opt = $optval;)*
                setting
            }),*]
        }
    };
}

/// Declares the descriptors of the fields of an optional table of
/// [`Config`] (`[jwt]`): `field, "VALUE-NAME", option = value...;`. Types
/// and defaults are the table struct's; setting any of its fields from a
/// flag or variable creates the table, as writing it in the file does.
macro_rules! table_settings {
    ($fn_name:ident, $table:ident: $table_ty:ty {$(
        $(#[doc = $doc:literal])*
        $field:ident, $value_name:literal $(, $opt:ident = $optval:expr)*;
    )*}) => {
        fn $fn_name() -> Vec<Setting> {
            fn shape<T: SettingValue>(_: fn(&$table_ty) -> &T) -> Shape {
                T::SHAPE
            }
            vec![$({
                #[allow(unused_mut)]
                let mut setting = Setting {
                    value_name: $value_name,
                    shape: shape(|table| &table.$field),
                    set: |config, values| {
                        let table = config.$table.get_or_insert_with(Default::default);
                        table.$field = SettingValue::parse(values)?;
                        Ok(())
                    },
                    get: |config, mask| config.$table.as_ref().and_then(|t| t.$field.show(mask)),
                    default: || <$table_ty>::default().$field.show(false),
                    ..Setting::new(Some(stringify!($table)), stringify!($field), concat!($($doc),*))
                };
                $(setting.$opt = $optval;)*
                setting
            }),*]
        }
    };
}

settings! {
    scalars {
        /// Address to listen on: HOST:PORT (a host name is resolved) or a
        /// bare PORT, which listens on 127.0.0.1 (0.0.0.0:PORT: every interface).
        #[serde(deserialize_with = "listen_addr")]
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)), "ADDR";
        /// The Bayeux endpoint; every path under it is the same endpoint.
        path: String = "/cometd".into(), "PATH";
        /// Milliseconds a /meta/connect is held when nothing is queued.
        timeout: u64 = 20_000, "MS";
        /// Milliseconds a client waits between a connect reply and its next connect.
        interval: u64 = 0, "MS";
        /// Milliseconds a session survives without a connect before it expires.
        max_interval: u64 = 10_000, "MS";
        /// Sessions of one browser that may hold a long poll at once (negative: unlimited).
        max_sessions_per_browser: i64 = 1, "N";
        /// Poll interval advised to the extra sessions of a browser (multiple-clients), in milliseconds.
        multi_session_interval: u64 = 2_000, "MS";
        /// Largest request body accepted, in bytes (larger: HTTP 413).
        max_request_bytes: usize = 1024 * 1024, "BYTES";
        /// Most messages accepted in one request (more: HTTP 413).
        max_batch_messages: usize = 1_000, "N";
        /// Milliseconds a connection may take to send a request's headers,
        /// counted from when it waits for one: also how long a keep-alive
        /// connection may sit idle between requests (a held long poll is
        /// bounded by `timeout` instead). Closed when exceeded.
        header_read_timeout: u64 = 30_000, "MS";
        /// Most connections open at once (beyond: closed at once); keep it
        /// below the open-file limit (`ulimit -n`), which adapters, Redis
        /// and logs share.
        max_connections: usize = 19_000, "N";
        /// Most connections open at once from one client IP (an IPv6 /64);
        /// a NAT puts many users behind one address. Load tests from one
        /// machine raise it.
        max_connections_per_ip: usize = 1_000, "N";
        /// Handshakes per second from one client IP (an IPv6 /64), with
        /// bursts of as many; beyond it 429::handshake_rate_exceeded with
        /// advice to retry later (0: unlimited).
        handshake_rate_per_ip: f64 = 50.0, "N";
        /// Most sessions on this node; a handshake beyond it is refused
        /// with 503::sessions_exhausted and advice to retry later.
        max_sessions: usize = 100_000, "N";
        /// Most channels in one /meta/subscribe (beyond: 400::too_many_channels).
        max_channels_per_subscribe: usize = 128, "N";
        /// Most subscriptions one session may hold (beyond:
        /// 403::too_many_subscriptions).
        max_subscriptions_per_session: usize = 1_024, "N";
        /// Deepest nesting of arrays and objects in a client's published
        /// data (deeper: 400::data_too_deep).
        max_data_depth: usize = 64, "N";
        /// Most members of one /service/presence room (beyond: 400::room_full).
        max_room_members: usize = 10_000, "N";
        /// Most deliveries queued for one session; a delivery beyond it is
        /// handled by the overflow policy (overflow-policy, `[[overflow]]`).
        max_queue: usize = 10_000, "N";
        /// Most bytes of deliveries queued for one session; beyond it the
        /// overflow policy applies, as for max-queue.
        max_queue_bytes: usize = 16 * 1024 * 1024, "BYTES";
        /// What a full session outbox does with a new delivery: drop-oldest,
        /// drop-newest or disconnect, unless an `[[overflow]]` table of the
        /// file says otherwise for its channel.
        overflow_policy: OverflowPolicy = OverflowPolicy::DropOldest, "POLICY";
        /// Milliseconds a lazy message may wait at most, unless its `[[lazy]]` rule says otherwise.
        max_lazy_timeout: u64 = 5_000, "MS";
        /// Bytes of deliveries per second per session, beyond which they
        /// wait; a session's grant may set its own.
        max_bandwidth: Option<u64> = None, "BYTES", unset = "unlimited";
        /// Publishes per second per session, with bursts of as many; beyond
        /// it 429::publish_rate_exceeded. A session's grant may set its own.
        max_publish_rate: Option<f64> = None, "N", unset = "unlimited";
        /// Milliseconds between two sweeps for expired sessions.
        sweep_period: u64 = 1_000, "MS";
        /// Accept a clientId without the BAYEUX_BROWSER cookie it was issued with.
        trust_client_session: bool = false, "BOOL";
        /// Mark the BAYEUX_BROWSER cookie `Secure` (sent over HTTPS only): set
        /// it when clients reach Halley through TLS at a proxy in front (with
        /// tls-cert it is always Secure).
        cookie_secure: bool = false, "BOOL";
        /// A PEM file with the certificate chain (the server's first) to
        /// serve HTTPS and WSS with, on `listen`; needs tls-key. Both files
        /// are read again when they change and on SIGHUP.
        tls_cert: Option<PathBuf> = None, "FILE", unset = "none, plain HTTP";
        /// A PEM file with the private key of tls-cert (PKCS#8, PKCS#1 or SEC1).
        tls_key: Option<PathBuf> = None, "FILE", unset = "none";
        /// Offer callback-polling (JSONP) to clients.
        callback_polling: bool = true, "BOOL";
        /// Origins (`https://app.example`) whose pages may open a WebSocket
        /// or use callback-polling, besides the server's own; `*` allows any.
        /// Requests without an Origin (non-browser clients) are allowed.
        allowed_origins: Vec<String> = Vec::new(), "ORIGIN", unset = "the server's own origin only";
        /// Offer WebSocket to clients, on the Bayeux path (false: long-polling only).
        websocket: bool = true, "BOOL";
        /// Milliseconds a WebSocket may stay silent (no frame, no pong)
        /// before it is closed; a ping is sent after half of it.
        websocket_idle_timeout: u64 = 60_000, "MS";
        /// Keys that may use the HTTP publish API (POST /api/publish, sent
        /// as `Authorization: Bearer <key>`); `halley publish` reads the
        /// same HALLEY_API_KEYS. `api-key` is accepted too, as flag and key.
        #[serde(alias = "api-key")]
        api_keys: Vec<String> = Vec::new(), "KEY", secret = true, aliases = &["api-key"],
            unset = "none, the API is off";
        /// Failed API-key attempts a second from one client IP, after a
        /// burst of 10; beyond it every attempt from that address gets
        /// HTTP 429 until its rate allows again (0: unlimited).
        api_key_failures_per_ip: f64 = 1.0, "N";
        /// Messages per second the HTTP publish API accepts from one API
        /// key, with bursts of as many (at least max-batch-messages); a
        /// request beyond it gets HTTP 429 with Retry-After, nothing
        /// published (0: unlimited).
        api_publish_rate: f64 = 10_000.0, "N";
        /// Messages per second one remote Data Adapter may publish (each
        /// message of a snapshot counts), with bursts of as many; a line
        /// beyond it is answered with an `error` line, nothing published
        /// (0: unlimited).
        adapter_publish_rate: f64 = 10_000.0, "N";
        /// Most sessions one authenticated user may hold at once (users come
        /// from the `[jwt]` or `[webhook]` Metadata Adapter).
        max_sessions_per_user: Option<usize> = None, "N", unset = "no cap";
        /// Join the cluster on this Redis (redis://[user:password@]host:port[/db]):
        /// channels span every node of it (see docs/cluster.md).
        redis: Option<String> = None, "URL", secret = true,
            unset = "none, a single node in memory";
        /// This node's id in the cluster (its heartbeat key halley:node:<id>):
        /// letters, digits, '-', '_' and '.'.
        node_id: Option<String> = None, "ID", unset = "a random id";
        /// Address of the admin listener (/metrics, /healthz, /readyz):
        /// HOST:PORT or PORT (on 127.0.0.1), or `off`; port 0 picks a free
        /// port (logged at start).
        admin_listen: AdminListen = AdminListen::At(SocketAddr::from(([127, 0, 0, 1], 8081))), "ADDR";
        /// Milliseconds a draining node (first SIGTERM) keeps serving, not
        /// ready, so load balancers stop sending it clients.
        drain_delay: u64 = 2_000, "MS";
        /// Milliseconds over which a draining node then asks its clients,
        /// spread out, to reconnect elsewhere, before it exits.
        drain_timeout: u64 = 10_000, "MS";
        /// Log lines as `text` or `json` (one object per line).
        log_format: LogFormat = LogFormat::Text, "FORMAT";
        /// Serve the chat demo at `/` (false: 404; the Bayeux endpoint and
        /// `/halley.js` stay).
        demo: bool = true, "BOOL";
    }
    tables {
        /// Per-channel overflow policies (`[[overflow]]`); the first matching pattern wins.
        overflow: Vec<ChannelOverflow>;
        /// Channels that keep history for replay (`[[history]]`, none by
        /// default); the first matching pattern wins.
        history: Vec<ChannelHistory>;
        /// Lazy channels (`[[lazy]]`, none by default); the first matching pattern wins.
        lazy: Vec<ChannelLazy>;
        /// Rate-limited channels (`[[qos]]`, none by default); the first matching pattern wins.
        qos: Vec<ChannelQos>;
        /// Remote Data Adapters (`[[remote-adapter]]`, none by default).
        remote_adapter: Vec<RemoteAdapterConfig>;
        /// The JWT Metadata Adapter (`[jwt]`); exclusive with `webhook`.
        jwt: Option<JwtConfig>;
        /// The webhook Metadata Adapter (`[webhook]`); exclusive with `jwt`.
        webhook: Option<WebhookConfig>;
    }
}

table_settings!(jwt_settings, jwt: JwtConfig {
    /// The shared secret of HS256 tokens.
    hs256_secret, "SECRET", secret = true;
    /// A PEM file with the RSA public key of RS256 tokens.
    rs256_public_key, "FILE";
    /// The iss tokens must carry, if set.
    issuer, "ISS", unset = "any";
    /// The aud tokens must carry, if set.
    audience, "AUD", unset = "any";
    /// Seconds of clock skew tolerated on exp and nbf (a session ends
    /// this long after its token's exp).
    leeway_s, "S", unset = "30";
    /// Accept a handshake without a token.
    allow_anonymous, "BOOL";
    /// Channel patterns anonymous sessions may subscribe to.
    anonymous_subscribe, "PATTERN";
    /// Channel patterns anonymous sessions may publish on.
    anonymous_publish, "PATTERN";
});

table_settings!(webhook_settings, webhook: WebhookConfig {
    /// Where questions are POSTed (http:// or https://; required).
    url, "URL";
    /// Milliseconds to wait for the backend's answer.
    timeout_ms, "MS";
    /// Milliseconds an answer is reused (0: ask every time).
    cache_ms, "MS";
    /// Most answers cached.
    cache_entries, "N";
    /// Allow instead of deny when the backend fails.
    fail_open, "BOOL";
    /// Which questions are asked (handshake, subscribe, publish); the others are allowed.
    actions, "ACTION";
    /// Most calls to the backend waiting for their answer at once; a
    /// question beyond them is denied as undecided (retry advice).
    max_in_flight, "N";
    /// Sent as `Authorization: Bearer <secret>`, so the backend knows it is Halley.
    secret, "SECRET", secret = true;
    /// A PEM file of CA certificates trusted for an https:// url, besides the system's roots.
    ca_cert, "FILE", unset = "the system's roots only";
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_one_rule() {
        let mut names = std::collections::HashSet::new();
        for setting in settings() {
            let name = &setting.name;
            assert!(names.insert(name.clone()), "{name} declared twice");
            assert_eq!(
                setting.env,
                format!("HALLEY_{}", name.to_uppercase().replace('-', "_")),
                "{name}"
            );
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name} is kebab-case"
            );
            match setting.table {
                Some(table) => assert_eq!(*name, format!("{table}-{}", setting.key)),
                None => assert_eq!(*name, setting.key),
            }
            assert!(!setting.help.is_empty(), "{name} has help");
        }
        assert_eq!(
            setting("jwt-hs256-secret").unwrap().env,
            "HALLEY_JWT_HS256_SECRET"
        );
        assert_eq!(
            setting("jwt-hs256-secret").unwrap().toml_path(),
            "[jwt] hs256-secret"
        );
    }

    #[test]
    fn defaults_are_the_config_defaults() {
        for (name, text) in [
            ("listen", "127.0.0.1:8080"),
            ("path", "/cometd"),
            ("timeout", "20000"),
            ("max-queue-bytes", "16777216"),
            ("overflow-policy", "drop-oldest"),
            ("max-sessions-per-browser", "1"),
            ("callback-polling", "true"),
            ("max-lazy-timeout", "5000"),
            ("max-bandwidth", "unlimited"),
            ("api-keys", "none, the API is off"),
            ("webhook-url", "none"),
            ("webhook-timeout-ms", "2000"),
            ("webhook-actions", "handshake, subscribe, publish"),
            ("jwt-allow-anonymous", "false"),
            ("redis", "none, a single node in memory"),
            ("node-id", "a random id"),
        ] {
            assert_eq!(setting(name).unwrap().default_text(), text, "{name}");
        }
        // Each value shown for Config::default() reads back as itself.
        let defaults = Config::default();
        for setting in settings().iter().filter(|s| s.table.is_none()) {
            let mut config = Config::default();
            if let Some(shown) = setting.value(&defaults, false) {
                let values: Vec<String> = match setting.shape {
                    Shape::List => shown.text.split(", ").map(str::to_owned).collect(),
                    _ => vec![shown.text.clone()],
                };
                let values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
                setting.apply(&mut config, &values).unwrap();
                assert_eq!(
                    setting.value(&config, false),
                    Some(shown),
                    "{}",
                    setting.name
                );
            }
        }
    }

    #[test]
    fn values_are_parsed_with_clear_errors() {
        let mut config = Config::default();
        let set = |config: &mut Config, name: &str, values: &[&str]| {
            let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            setting(name).unwrap().apply(config, &values)
        };
        set(&mut config, "timeout", &["7000"]).unwrap();
        assert_eq!(config.timeout, 7000);
        let error = set(&mut config, "timeout", &["xyz"]).unwrap_err();
        assert!(
            error.contains("whole number") && error.contains("\"xyz\""),
            "{error}"
        );
        set(&mut config, "overflow-policy", &["disconnect"]).unwrap();
        assert_eq!(config.overflow_policy, OverflowPolicy::Disconnect);
        let error = set(&mut config, "overflow-policy", &["drop-all"]).unwrap_err();
        assert!(
            error.contains("drop-oldest, drop-newest or disconnect"),
            "{error}"
        );
        set(&mut config, "max-publish-rate", &["0.5"]).unwrap();
        assert_eq!(config.max_publish_rate, Some(0.5));
        set(&mut config, "api-keys", &["a", "b"]).unwrap();
        assert_eq!(config.api_keys, ["a", "b"]);
        assert_eq!(
            setting("api-keys")
                .unwrap()
                .value(&config, true)
                .unwrap()
                .toml,
            format!("[\"{MASK}\", \"{MASK}\"]")
        );
        assert!(set(&mut config, "websocket", &["maybe"]).is_err());
        assert!(config.jwt.is_none());
        set(&mut config, "jwt-hs256-secret", &["s3cret"]).unwrap();
        set(&mut config, "jwt-leeway-s", &["5"]).unwrap();
        let jwt = config.jwt.as_ref().expect("a jwt setting makes the table");
        assert_eq!(jwt.hs256_secret.as_deref(), Some("s3cret"));
        assert_eq!(jwt.leeway_s, Some(5));
        assert_eq!(
            setting("jwt-hs256-secret")
                .unwrap()
                .value(&config, true)
                .unwrap()
                .text,
            MASK
        );
        set(&mut config, "webhook-actions", &["subscribe"]).unwrap();
        assert_eq!(
            config.webhook.as_ref().unwrap().actions,
            [Action::Subscribe]
        );
        assert!(set(&mut config, "webhook-actions", &["connect"]).is_err());
        set(&mut config, "path", &["/a \"quoted\" path"]).unwrap();
        assert_eq!(
            setting("path").unwrap().value(&config, false).unwrap().toml,
            r#""/a \"quoted\" path""#
        );
    }
}
