//! The built-in, configuration-driven Metadata Adapter: JSON Web Tokens.
//!
//! A client presents a token at handshake, in
//! `ext.authentication.token`. Halley checks its signature (HS256 with a
//! shared secret and/or RS256 with the issuer's public key), its `exp`
//! (required) and `nbf`, and optionally `iss` and `aud`. The claims name
//! the user and what the user may do:
//!
//! ```json
//! { "sub": "ada", "exp": 1767225600,
//!   "subscribe": ["/chat/**", "/presence/*"],
//!   "publish": ["/chat/*", "/service/presence"],
//!   "limits": { "max-frequency": 10, "max-bandwidth": 65536, "max-publish-rate": 5 } }
//! ```
//!
//! A handshake without `ext.authentication` is anonymous: refused unless
//! `allow-anonymous`, and then limited to the `anonymous-subscribe` and
//! `anonymous-publish` patterns.
//!
//! The token is checked at handshake, and its `exp` (plus `leeway-s`) ends
//! the session: from then on its messages are refused with
//! `401::token_expired` and advice to handshake again (where the client
//! presents a fresh token), and a `/meta/connect` is not held past it. A
//! client may instead refresh in place, as Centrifugo's connection
//! refresh: a `/meta/connect` whose `ext.authentication.token` is a valid
//! token of the same user with a later `exp` moves the session's end to
//! it (the channels it may use stay those of the handshake's token). A
//! refused refresh (bad signature, another user, expired) ends the
//! session with `401::refresh_denied`.
//!
//! Configuration mistakes are refused when the adapter is built, before
//! the server binds: an `hs256-secret` shorter than 32 bytes (RFC 7518
//! §3.2: a key at least as long as the hash), anonymous patterns without
//! `allow-anonymous`.

use std::path::PathBuf;
#[cfg(feature = "jwt")]
use std::sync::Arc;

#[cfg(feature = "jwt")]
use halley_protocol::{ChannelName, ChannelPattern};
#[cfg(feature = "jwt")]
use jsonwebtoken::errors::ErrorKind;
#[cfg(feature = "jwt")]
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
#[cfg(feature = "jwt")]
use serde_json::value::RawValue;

#[cfg(feature = "jwt")]
use super::permissions::ChannelPermissions;
#[cfg(feature = "jwt")]
use super::{ready, Denial, HandshakeRequest, MetadataAdapter, Verdict};
#[cfg(feature = "jwt")]
use crate::state::grant::{Grant, SessionLimits};
#[cfg(feature = "jwt")]
use crate::state::session::Session;

/// TOML `[jwt]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct JwtConfig {
    /// The shared secret of HS256 tokens.
    pub hs256_secret: Option<String>,
    /// A PEM file with the RSA public key of RS256 tokens.
    pub rs256_public_key: Option<PathBuf>,
    /// The `iss` tokens must carry, if set.
    pub issuer: Option<String>,
    /// The `aud` tokens must carry, if set.
    pub audience: Option<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf` (default 30); a
    /// session ends this long after its token's `exp`.
    pub leeway_s: Option<u64>,
    /// Whether a handshake without a token is accepted.
    pub allow_anonymous: bool,
    /// What anonymous sessions may subscribe to.
    pub anonymous_subscribe: Vec<String>,
    /// Where anonymous sessions may publish.
    pub anonymous_publish: Vec<String>,
}

#[cfg(feature = "jwt")]
/// The claims Halley reads; others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    /// Required by the validation; seconds since the Unix epoch.
    exp: i64,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    limits: SessionLimits,
}

#[cfg(feature = "jwt")]
pub struct JwtAdapter {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    /// One per algorithm: the library refuses a validation listing
    /// algorithms of another family than the key's.
    hs256_validation: Validation,
    rs256_validation: Validation,
    /// `None`: anonymous handshakes are refused.
    anonymous: Option<Arc<ChannelPermissions>>,
    /// Seconds of clock skew tolerated: a token's session ends this long
    /// after its `exp`, as the token itself is accepted until then.
    leeway_s: u64,
}

/// The shortest `hs256-secret` accepted, in bytes: RFC 7518 §3.2 requires
/// an HMAC key at least as long as the hash (SHA-256: 32 bytes); a shorter
/// one can be found by trying secrets against any token the server issued.
#[cfg(feature = "jwt")]
pub const MIN_HS256_SECRET_BYTES: usize = 32;

#[cfg(feature = "jwt")]
impl JwtAdapter {
    /// Reads the keys and patterns of `config`; the error names what is wrong.
    pub fn from_config(config: &JwtConfig) -> Result<Self, String> {
        let hs256 = match config.hs256_secret.as_deref() {
            Some(secret) if secret.len() < MIN_HS256_SECRET_BYTES => {
                return Err(format!(
                    "jwt.hs256-secret is {} bytes; it must be at least {MIN_HS256_SECRET_BYTES} \
                     (RFC 7518 §3.2: a key as long as the hash; e.g. `openssl rand -hex 32`)",
                    secret.len()
                ))
            }
            Some(secret) => Some(DecodingKey::from_secret(secret.as_bytes())),
            None => None,
        };
        let rs256 = match &config.rs256_public_key {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    format!("jwt.rs256-public-key: cannot read {}: {e}", path.display())
                })?;
                Some(DecodingKey::from_rsa_pem(&pem).map_err(|e| {
                    format!(
                        "jwt.rs256-public-key: {} is not an RSA public key in PEM: {e}",
                        path.display()
                    )
                })?)
            }
            None => None,
        };
        if hs256.is_none() && rs256.is_none() {
            return Err("[jwt] needs hs256-secret and/or rs256-public-key".into());
        }
        let validation = |algorithm| {
            let mut validation = Validation::new(algorithm);
            // A configured issuer or audience is required, not merely
            // checked when present: jsonwebtoken skips the check of a claim
            // the token leaves out unless it is listed here.
            let mut required = vec!["exp", "sub"];
            if config.issuer.is_some() {
                required.push("iss");
            }
            if config.audience.is_some() {
                required.push("aud");
            }
            validation.set_required_spec_claims(&required);
            validation.validate_nbf = true;
            validation.leeway = config.leeway_s.unwrap_or(30);
            if let Some(issuer) = &config.issuer {
                validation.set_issuer(&[issuer]);
            }
            match &config.audience {
                Some(audience) => validation.set_audience(&[audience]),
                None => validation.validate_aud = false,
            }
            validation
        };
        let anonymous_patterns =
            !config.anonymous_subscribe.is_empty() || !config.anonymous_publish.is_empty();
        if anonymous_patterns && !config.allow_anonymous {
            return Err(
                "jwt.anonymous-subscribe and jwt.anonymous-publish apply to anonymous sessions, \
                 which are refused unless jwt.allow-anonymous = true: set it, or remove them"
                    .into(),
            );
        }
        let anonymous = if config.allow_anonymous {
            let permissions =
                ChannelPermissions::parse(&config.anonymous_subscribe, &config.anonymous_publish)
                    .map_err(|e| format!("jwt anonymous access: {e}"))?;
            Some(Arc::new(permissions))
        } else {
            None
        };
        Ok(JwtAdapter {
            hs256,
            rs256,
            hs256_validation: validation(Algorithm::HS256),
            rs256_validation: validation(Algorithm::RS256),
            anonymous,
            leeway_s: config.leeway_s.unwrap_or(30),
        })
    }

    /// Checks a token and turns its claims into a grant.
    fn authenticate(&self, token: &str) -> Result<Grant, Denial> {
        let claims = self.verify(token)?;
        let permissions = ChannelPermissions::parse(&claims.subscribe, &claims.publish)
            .map_err(|e| Denial::new(format!("invalid token claims: {e}")))?;
        let expires_ms = self.expires_ms(&claims);
        Ok(Grant {
            user: Some(claims.sub.into()),
            limits: claims.limits,
            attachment: Some(Arc::new(permissions)),
            expires_ms: Some(expires_ms),
        })
    }

    /// When a session on these claims ends: `exp` plus the leeway, in ms.
    fn expires_ms(&self, claims: &Claims) -> i64 {
        claims
            .exp
            .saturating_add(self.leeway_s as i64)
            .saturating_mul(1_000)
    }

    /// A token's claims, if its signature, times, issuer and audience hold.
    fn verify(&self, token: &str) -> Result<Claims, Denial> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| Denial::new(format!("malformed token: {e}")))?;
        let (key, validation) = match header.alg {
            Algorithm::HS256 => (self.hs256.as_ref(), &self.hs256_validation),
            Algorithm::RS256 => (self.rs256.as_ref(), &self.rs256_validation),
            _ => (None, &self.hs256_validation),
        };
        let key = key
            .ok_or_else(|| Denial::new(format!("token algorithm {:?} not accepted", header.alg)))?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| Denial::new(token_error(e.kind())))?
            .claims;
        if claims.sub.is_empty() {
            return Err(Denial::new("invalid token: empty sub"));
        }
        Ok(claims)
    }
}

#[cfg(feature = "jwt")]
/// The reason shown for a rejected token.
fn token_error(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "invalid token signature".into(),
        ErrorKind::InvalidIssuer => "token issuer not accepted".into(),
        ErrorKind::InvalidAudience => "token audience not accepted".into(),
        ErrorKind::InvalidAlgorithm => "token algorithm not accepted".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token lacks the {claim} claim"),
        other => format!("invalid token: {other:?}"),
    }
}

#[cfg(feature = "jwt")]
/// The permissions a session was granted (none: it may do nothing).
fn permissions(session: &Session) -> Option<&ChannelPermissions> {
    session.grant().attachment::<ChannelPermissions>()
}

#[cfg(feature = "jwt")]
impl MetadataAdapter for JwtAdapter {
    fn handshake<'a>(&'a self, request: HandshakeRequest<'a>) -> Verdict<'a, Grant> {
        let Some(authentication) = request.authentication() else {
            return ready(match &self.anonymous {
                Some(anonymous) => Ok(Grant {
                    attachment: Some(anonymous.clone()),
                    ..Grant::anonymous()
                }),
                None => Err(Denial::new(
                    "authentication required: a token in ext.authentication.token",
                )),
            });
        };
        let Some(token) = authentication.get("token").and_then(|t| t.as_str()) else {
            return ready(Err(Denial::new(
                "ext.authentication.token must be a string (a JWT)",
            )));
        };
        ready(self.authenticate(token))
    }

    fn refresh<'a>(
        &'a self,
        session: &'a Session,
        request: HandshakeRequest<'a>,
    ) -> Verdict<'a, Option<i64>> {
        let Some(token) = request
            .authentication()
            .and_then(|a| a.get("token"))
            .and_then(|t| t.as_str())
        else {
            return ready(Err(Denial::new(
                "ext.authentication.token must be a string (a JWT)",
            )));
        };
        let Some(user) = session.user() else {
            return ready(Err(Denial::new(
                "an anonymous session cannot take a token: handshake with it instead",
            )));
        };
        ready(self.verify(token).and_then(|claims| {
            if claims.sub != user {
                return Err(Denial::new(
                    "the token names another user than the session's: handshake with it instead",
                ));
            }
            // Only the end moves: the session keeps the channels its
            // handshake's token granted (a client needing others handshakes).
            Ok(Some(self.expires_ms(&claims)))
        }))
    }

    fn subscribe<'a>(
        &'a self,
        session: &'a Session,
        subscription: &'a ChannelPattern,
    ) -> Verdict<'a, ()> {
        ready(
            if permissions(session).is_some_and(|p| p.may_subscribe(subscription)) {
                Ok(())
            } else {
                Err(Denial::new(format!(
                    "{subscription} is outside the channels this {} may subscribe to",
                    who(session)
                )))
            },
        )
    }

    fn publish<'a>(
        &'a self,
        session: &'a Session,
        channel: &'a ChannelName,
        _data: &'a RawValue,
    ) -> Verdict<'a, ()> {
        ready(
            if permissions(session).is_some_and(|p| p.may_publish(channel)) {
                Ok(())
            } else {
                Err(Denial::new(format!(
                    "{channel} is outside the channels this {} may publish on",
                    who(session)
                )))
            },
        )
    }
}

#[cfg(feature = "jwt")]
fn who(session: &Session) -> &'static str {
    if session.user().is_some() {
        "token"
    } else {
        "anonymous session"
    }
}
