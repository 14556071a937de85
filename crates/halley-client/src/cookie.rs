//! A cookie jar just big enough for Bayeux: one origin, name/value pairs.
//!
//! CometD servers identify a *browser* with the `BAYEUX_BROWSER` cookie: they
//! allow one held long poll per browser and trust a `clientId` only together
//! with the cookie it was issued with. A client that owns its jar behaves as its
//! own browser; clients sharing an `Arc<CookieJar>` behave as tabs of one.
//!
//! Why not reqwest's cookie store: it belongs to a `reqwest::Client`, and the
//! load generator wants thousands of "browsers" on one shared HTTP client.
//! Domains, paths and `Expires` dates are ignored (one server, short lives);
//! `Max-Age=0` removes a cookie.

use std::sync::{Mutex, MutexGuard};

use reqwest::header::{HeaderMap, HeaderValue, SET_COOKIE};

/// `a=1; b=2`, if there are cookies.
fn header_text(cookies: &[(String, String)]) -> Option<String> {
    if cookies.is_empty() {
        return None;
    }
    let mut out = String::new();
    for (i, (name, value)) in cookies.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    Some(out)
}

/// Cookies of one browser.
#[derive(Debug, Default)]
pub struct CookieJar {
    inner: Mutex<Jar>,
}

#[derive(Debug, Default)]
struct Jar {
    cookies: Vec<(String, String)>,
    /// The `Cookie` header for `cookies`, built on first use after a change:
    /// a long-polling client sends the same one on every request.
    header: Option<HeaderValue>,
}

impl CookieJar {
    pub fn new() -> Self {
        Self::default()
    }

    /// The jar, even if a thread panicked while holding it (the cookies are
    /// consistent after every statement that changes them).
    fn lock(&self) -> MutexGuard<'_, Jar> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of cookie `name`.
    pub fn get(&self, name: &str) -> Option<String> {
        let jar = self.lock();
        jar.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// Sets (or replaces) cookie `name`.
    pub fn insert(&self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        let mut jar = self.lock();
        match jar.cookies.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) if slot.1 == value => return,
            Some(slot) => slot.1 = value,
            None => jar.cookies.push((name, value)),
        }
        jar.header = None;
    }

    pub fn remove(&self, name: &str) {
        let mut jar = self.lock();
        jar.cookies.retain(|(n, _)| n != name);
        jar.header = None;
    }

    pub fn clear(&self) {
        let mut jar = self.lock();
        jar.cookies.clear();
        jar.header = None;
    }

    pub fn is_empty(&self) -> bool {
        self.lock().cookies.is_empty()
    }

    /// The `Cookie` request header value (`a=1; b=2`), if there are cookies.
    pub(crate) fn header_value(&self) -> Option<String> {
        header_text(&self.lock().cookies)
    }

    /// The `Cookie` header, if there are cookies: built once per change of
    /// the jar, then shared (cloning a `HeaderValue` copies no bytes). `None`
    /// too if a cookie holds bytes a header cannot (the jar only stores what
    /// came in headers, so it cannot).
    pub(crate) fn header(&self) -> Option<HeaderValue> {
        let mut jar = self.lock();
        if jar.header.is_none() {
            let text = header_text(&jar.cookies)?;
            jar.header = HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok();
        }
        jar.header.clone()
    }

    /// Applies one `Set-Cookie` header value.
    pub(crate) fn apply_set_cookie(&self, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|pair| pair.split_once('=')) else {
            return;
        };
        let (name, value) = (name.trim(), value.trim().trim_matches('"'));
        if name.is_empty() {
            return;
        }
        let expired = parts.any(|attr| {
            let attr = attr.trim();
            attr.len() > 8
                && attr[..8].eq_ignore_ascii_case("max-age=")
                && attr[8..].trim().parse::<i64>().is_ok_and(|age| age <= 0)
        });
        if expired {
            self.remove(name);
        } else {
            self.insert(name, value);
        }
    }

    /// Applies every `Set-Cookie` header of a response.
    pub(crate) fn store_response(&self, headers: &HeaderMap) {
        for value in headers.get_all(SET_COOKIE) {
            if let Ok(value) = value.to_str() {
                self.apply_set_cookie(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn stores_and_sends_cookies() {
        let jar = CookieJar::new();
        assert_eq!(jar.header_value(), None);
        jar.apply_set_cookie("BAYEUX_BROWSER=abc123; Path=/; HttpOnly");
        jar.apply_set_cookie("other=\"x\"");
        assert_eq!(jar.get("BAYEUX_BROWSER").as_deref(), Some("abc123"));
        assert_eq!(
            jar.header_value().as_deref(),
            Some("BAYEUX_BROWSER=abc123; other=x")
        );
        assert_eq!(jar.header().unwrap(), "BAYEUX_BROWSER=abc123; other=x");
        jar.apply_set_cookie("BAYEUX_BROWSER=def; Path=/");
        assert_eq!(jar.get("BAYEUX_BROWSER").as_deref(), Some("def"));
        assert_eq!(jar.header().unwrap(), "BAYEUX_BROWSER=def; other=x");
        jar.remove("other");
        assert_eq!(jar.header().unwrap(), "BAYEUX_BROWSER=def");
        jar.clear();
        assert_eq!(jar.header(), None);
    }

    #[test]
    fn max_age_zero_removes() {
        let jar = CookieJar::new();
        jar.insert("a", "1");
        jar.apply_set_cookie("a=; Max-Age=0");
        assert!(jar.is_empty());
    }

    #[test]
    fn ignores_garbage() {
        let jar = CookieJar::new();
        jar.apply_set_cookie("no-equals-sign");
        jar.apply_set_cookie("=value");
        assert!(jar.is_empty());
    }

    #[test]
    fn reads_every_set_cookie_header() {
        let jar = CookieJar::new();
        let mut headers = HeaderMap::new();
        headers.append(SET_COOKIE, HeaderValue::from_static("a=1"));
        headers.append(SET_COOKIE, HeaderValue::from_static("b=2; HttpOnly"));
        jar.store_response(&headers);
        assert_eq!(jar.header_value().as_deref(), Some("a=1; b=2"));
    }
}
