//! A Metadata Adapter that asks the application's backend over HTTP.
//!
//! For each handshake, subscribe and publish (those listed in `actions`)
//! Halley POSTs a JSON question to the configured `url`:
//!
//! ```json
//! {"action":"handshake","ext":{"authentication":{"token":"..."}}}
//! {"action":"subscribe","user":"ada","clientId":"...","channel":"/chat/*"}
//! {"action":"publish","user":"ada","clientId":"...","channel":"/chat/1","data":{...}}
//! ```
//!
//! and expects `200` with `{"allow": true}` (for a handshake optionally
//! `"user"` and `"limits"`) or `{"allow": false, "reason": "..."}`.
//! Answers are cached for `cache-ms` per (action, user or clientId,
//! channel), or per credentials for handshakes, so a publisher is not a
//! request per message; concurrent identical questions share one request.
//! When the backend does not answer within `timeout-ms`, answers anything
//! but 200 with that JSON, or cannot be reached, Halley *fails closed*
//! (denies, "authorization backend unavailable") unless `fail-open`. Such
//! failures are never cached. A redirect is such a failure too: Halley
//! does not follow it (the backend is configured, not discovered, and a
//! redirect could send the questions, with their credentials, elsewhere).
//!
//! At most `max-in-flight` calls wait for the backend at once (default
//! 64): a flood of handshakes with distinct credentials, which no cache
//! absorbs, must not become a flood of requests to the backend, nor pile
//! up waiting tasks. A question beyond them is denied without a verdict
//! (a handshake is told to retry later), even with `fail-open`: being busy
//! is not the backend failing, and a flood must not open the door.

#[cfg(feature = "webhook")]
use std::sync::Arc;
#[cfg(feature = "webhook")]
use std::time::Duration;

#[cfg(feature = "webhook")]
use halley_protocol::{ChannelName, ChannelPattern};
use serde::Deserialize;
#[cfg(feature = "webhook")]
use serde_json::value::RawValue;
#[cfg(feature = "webhook")]
use serde_json::{json, Value};

#[cfg(feature = "webhook")]
use super::{Denial, HandshakeRequest, MetadataAdapter, Verdict};
#[cfg(feature = "webhook")]
use crate::state::grant::{Grant, SessionLimits};
#[cfg(feature = "webhook")]
use crate::state::session::Session;

/// TOML `[webhook]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where questions are POSTed (`http://` or `https://`).
    pub url: String,
    /// Milliseconds to wait for an answer (default 2000).
    pub timeout_ms: u64,
    /// Milliseconds an answer is reused (default 30000; 0: ask every time).
    pub cache_ms: u64,
    /// Most answers cached (default 100000).
    pub cache_entries: u64,
    /// Allow instead of deny when the backend fails (default false).
    pub fail_open: bool,
    /// Which questions are asked; the others are allowed (default all three).
    pub actions: Vec<Action>,
    /// Sent as `Authorization: Bearer <secret>`, so the backend knows it is Halley.
    pub secret: Option<String>,
    /// A PEM file of CA certificates trusted for an `https://` url, besides
    /// the system's roots (a private CA, a self-signed backend).
    pub ca_cert: Option<std::path::PathBuf>,
    /// Most calls waiting for the backend at once (default 64).
    pub max_in_flight: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            timeout_ms: 2_000,
            cache_ms: 30_000,
            cache_entries: 100_000,
            fail_open: false,
            actions: vec![Action::Handshake, Action::Subscribe, Action::Publish],
            secret: None,
            ca_cert: None,
            max_in_flight: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Handshake,
    Subscribe,
    Publish,
}

#[cfg(feature = "webhook")]
impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Handshake => "handshake",
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
        }
    }
}

#[cfg(feature = "webhook")]
/// Why no answer came.
#[derive(Debug, Clone)]
enum Failure {
    /// `max-in-flight` calls wait already: not asked.
    Busy,
    /// The backend failed: why.
    Backend(String),
}

#[cfg(feature = "webhook")]
/// The backend's answer.
#[derive(Debug, Clone, Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    limits: SessionLimits,
}

#[cfg(feature = "webhook")]
pub struct WebhookAdapter {
    config: WebhookConfig,
    http: reqwest::Client,
    /// `None` when `cache-ms` is 0.
    cache: Option<moka::future::Cache<String, Arc<Answer>>>,
    /// While the backend is down every handshake fails the same way:
    /// one warning per few seconds, with the count of the others.
    failures_log: crate::state::log_throttle::LogThrottle,
    /// Permits for calls to the backend (`max-in-flight`).
    in_flight: tokio::sync::Semaphore,
}

#[cfg(feature = "webhook")]
impl WebhookAdapter {
    pub fn from_config(config: &WebhookConfig) -> Result<Self, String> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| format!("webhook.url {:?}: {e}", config.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "webhook.url {:?}: use an http:// or https:// URL",
                config.url
            ));
        }
        if config.timeout_ms == 0 {
            return Err("webhook.timeout-ms must be at least 1".into());
        }
        if config.max_in_flight == 0 {
            return Err("webhook.max-in-flight must be at least 1".into());
        }
        // https: rustls, checked against the system's roots and `ca-cert`.
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            // A 3xx is an answer other than 200: a failure, not a pointer.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &config.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| format!("webhook.ca-cert {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|certs| !certs.is_empty())
                .ok_or_else(|| {
                    format!(
                        "webhook.ca-cert {}: no PEM certificate in it",
                        path.display()
                    )
                })?;
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| format!("webhook HTTP client: {e}"))?;
        let cache = (config.cache_ms > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(config.cache_entries)
                .time_to_live(Duration::from_millis(config.cache_ms))
                .build()
        });
        Ok(WebhookAdapter {
            config: config.clone(),
            http,
            cache,
            failures_log: Default::default(),
            in_flight: tokio::sync::Semaphore::new(config.max_in_flight),
        })
    }

    fn asks(&self, action: Action) -> bool {
        self.config.actions.contains(&action)
    }

    /// The backend's answer to `question`, from the cache when it has one
    /// for `key`. `Err` is a backend failure or a full `max-in-flight`
    /// (never cached).
    async fn answer(&self, key: String, question: Value) -> Result<Arc<Answer>, Failure> {
        match &self.cache {
            Some(cache) => cache
                .try_get_with(key, async { self.ask(&question).await.map(Arc::new) })
                .await
                .map_err(|e| (*e).clone()),
            None => self.ask(&question).await.map(Arc::new),
        }
    }

    async fn ask(&self, question: &Value) -> Result<Answer, Failure> {
        // Not waited for: a question beyond the cap is refused at once
        // rather than queued behind a slow backend.
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Err(Failure::Busy);
        };
        self.call(question).await.map_err(Failure::Backend)
    }

    async fn call(&self, question: &Value) -> Result<Answer, String> {
        let mut request = self
            .http
            .post(&self.config.url)
            .header("content-type", "application/json")
            .body(question.to_string());
        if let Some(secret) = &self.config.secret {
            request = request.bearer_auth(secret);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {} ms", self.config.timeout_ms)
            } else {
                format!("unreachable: {e}")
            }
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if status != reqwest::StatusCode::OK {
            return Err(format!("answered HTTP {status}"));
        }
        serde_json::from_slice(&body)
            .map_err(|e| format!("answered something other than {{\"allow\": bool, ...}}: {e}"))
    }

    /// Turns a failure into the configured default (a full `max-in-flight`
    /// into a transient denial, whatever `fail-open` says).
    fn on_failure<T>(&self, action: Action, failure: Failure, allowed: T) -> Result<T, Denial> {
        let error = match failure {
            Failure::Busy => {
                return Err(Denial::limited(
                    format!(
                        "authorization backend busy: {} questions already wait for it (webhook.max-in-flight); retry later",
                        self.config.max_in_flight
                    ),
                    crate::state::limits::Limit::WebhookInFlight,
                ))
            }
            Failure::Backend(error) => error,
        };
        if let Some(suppressed) = self.failures_log.allow(tokio::time::Instant::now()) {
            tracing::warn!(url = %self.config.url, action = action.as_str(), %error, fail_open = self.config.fail_open, suppressed, "authorization backend failed");
        }
        if self.config.fail_open {
            Ok(allowed)
        } else {
            Err(Denial::transient("authorization backend unavailable"))
        }
    }

    /// Asks about a subscribe or publish by `session` on `channel`.
    async fn authorize(
        &self,
        action: Action,
        session: &Session,
        channel: &str,
        data: Option<&RawValue>,
    ) -> Result<(), Denial> {
        if !self.asks(action) {
            return Ok(());
        }
        let who = session.user().unwrap_or(session.client_id());
        let key = format!("{}\0{who}\0{channel}", action.as_str());
        let mut question = json!({
            "action": action.as_str(),
            "user": session.user(),
            "clientId": session.client_id(),
            "channel": channel,
        });
        if let Some(data) = data {
            question["data"] = serde_json::from_str(data.get()).unwrap_or(Value::Null);
        }
        match self.answer(key, question).await {
            Ok(answer) if answer.allow => Ok(()),
            Ok(answer) => Err(Denial::new(answer.reason.clone().unwrap_or_else(|| {
                format!(
                    "{} on {channel} refused by the application",
                    action.as_str()
                )
            }))),
            Err(error) => self.on_failure(action, error, ()),
        }
    }
}

#[cfg(feature = "webhook")]
impl MetadataAdapter for WebhookAdapter {
    fn handshake<'a>(&'a self, request: HandshakeRequest<'a>) -> Verdict<'a, Grant> {
        Box::pin(async move {
            if !self.asks(Action::Handshake) {
                return Ok(Grant::anonymous());
            }
            let key = format!(
                "handshake\0{}",
                request.authentication().unwrap_or(&Value::Null)
            );
            let question = json!({ "action": "handshake", "ext": request.ext });
            match self.answer(key, question).await {
                Ok(answer) if answer.allow => Ok(Grant {
                    user: answer
                        .user
                        .as_deref()
                        .filter(|u| !u.is_empty())
                        .map(Into::into),
                    limits: answer.limits.clone(),
                    ..Grant::anonymous()
                }),
                Ok(answer) => {
                    Err(Denial::new(answer.reason.clone().unwrap_or_else(|| {
                        "handshake refused by the application".into()
                    })))
                }
                Err(error) => self.on_failure(Action::Handshake, error, Grant::anonymous()),
            }
        })
    }

    fn subscribe<'a>(
        &'a self,
        session: &'a Session,
        subscription: &'a ChannelPattern,
    ) -> Verdict<'a, ()> {
        Box::pin(self.authorize(Action::Subscribe, session, subscription.as_str(), None))
    }

    fn publish<'a>(
        &'a self,
        session: &'a Session,
        channel: &'a ChannelName,
        data: &'a RawValue,
    ) -> Verdict<'a, ()> {
        Box::pin(self.authorize(Action::Publish, session, channel.as_str(), Some(data)))
    }
}
