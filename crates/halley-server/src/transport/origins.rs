//! Which web pages may use this server from a browser (`allowed-origins`).
//!
//! A page on any site can open a WebSocket to any server, and include any
//! URL as a script (callback-polling): the browser sends the user's cookies
//! and does not ask the server. So without a check, any page a user visits
//! could read an internal Halley the user can reach. A browser says which
//! page asks: `Origin` on every WebSocket upgrade; for a script, `Origin`
//! rarely, but `Sec-Fetch-Site` (`cross-site`, `same-site`) and usually a
//! `Referer`. Allowed: the server's own origin (the `Origin`'s host and port
//! are the request's `Host`: the scheme is not compared, as a TLS proxy in
//! front changes it), the origins listed, or any with `*`. A request
//! without any of these headers is not from a browser page (the Node, Java
//! and Python clients) and is allowed. Refused: HTTP 403.
//!
//! Long-polling needs no check here: a cross-site `POST` of JSON is a CORS
//! request, which the browser does not let the page read without
//! `Access-Control-Allow-Origin`, which Halley never sends.

use http::header::{HOST, ORIGIN, REFERER};
use http::Request;

/// Why a request is refused: the page's origin, as far as it is known.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub String);

/// Checks the page behind a WebSocket upgrade or a callback-polling request.
pub fn check<B>(request: &Request<B>, allowed: &[String]) -> Result<(), Refused> {
    let headers = request.headers();
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
    };
    let page = match text(ORIGIN) {
        Some(origin) => origin.to_owned(),
        None => {
            let fetched_from = text(http::HeaderName::from_static("sec-fetch-site"));
            if !matches!(fetched_from, Some("cross-site" | "same-site")) {
                return Ok(());
            }
            // Another site's page for sure; which one, if its Referer says.
            text(REFERER)
                .and_then(origin_of_url)
                .unwrap_or_else(|| "another site (no Origin or Referer)".to_owned())
        }
    };
    let same_origin = text(HOST).is_some_and(|host| {
        authority(&page).is_some_and(|page_host| page_host.eq_ignore_ascii_case(host))
    });
    let listed = allowed
        .iter()
        .any(|entry| entry == "*" || entry.trim_end_matches('/').eq_ignore_ascii_case(&page));
    if same_origin || listed {
        Ok(())
    } else {
        Err(Refused(page))
    }
}

/// `host[:port]` of an origin (`scheme://host[:port]`).
fn authority(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    Some(rest.trim_end_matches('/'))
}

/// The origin (`scheme://host[:port]`) of a URL.
fn origin_of_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get("/cometd").header("host", "halley.example:8080");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn same_origin_listed_and_non_browser_requests_are_allowed() {
        let none: Vec<String> = Vec::new();
        assert_eq!(check(&request(&[]), &none), Ok(()), "no Origin: not a page");
        let own = request(&[("origin", "https://Halley.example:8080")]);
        assert_eq!(
            check(&own, &none),
            Ok(()),
            "any scheme, host case-insensitive"
        );
        let app = request(&[("origin", "https://app.example")]);
        assert_eq!(
            check(&app, &none),
            Err(Refused("https://app.example".into()))
        );
        assert_eq!(check(&app, &["https://app.example/".into()]), Ok(()));
        assert_eq!(check(&app, &["*".into()]), Ok(()));
        let other_port = request(&[("origin", "http://halley.example:9999")]);
        assert!(check(&other_port, &none).is_err());
    }

    #[test]
    fn a_cross_site_script_is_refused_by_its_fetch_metadata() {
        let none: Vec<String> = Vec::new();
        let same = request(&[("sec-fetch-site", "same-origin")]);
        assert_eq!(check(&same, &none), Ok(()));
        let cross = request(&[
            ("sec-fetch-site", "cross-site"),
            ("referer", "https://evil.example/page?x=1"),
        ]);
        assert_eq!(
            check(&cross, &none),
            Err(Refused("https://evil.example".into()))
        );
        assert_eq!(check(&cross, &["https://evil.example".into()]), Ok(()));
        let anonymous = request(&[("sec-fetch-site", "cross-site")]);
        assert!(check(&anonymous, &none).is_err());
    }
}
