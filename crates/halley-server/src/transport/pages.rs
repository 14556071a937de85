//! The non-Bayeux pages: the chat demo at `/`, the browser client
//! `/halley.js` with its TypeScript declarations `/halley.d.ts`, and
//! `/healthz` for load balancers and scripts.
//!
//! The files live in `crates/halley-server/web/` and are compiled into the
//! binary, so there is nothing to install or build to serve them. Their URLs
//! carry no version, so browsers must revalidate (`Cache-Control: no-cache`)
//! and get `304 Not Modified` for as long as the binary, and so the `ETag`,
//! stays the same. The client files may be loaded from any origin (CORS `*`):
//! an ES module imported across origins needs it.
//!
//! With `demo = false` the demo's files are not served (404); the client
//! files and `/healthz` stay. The demo talks to `/cometd` unless its URL
//! says `?endpoint=`: on a server whose Bayeux path is another, `/` redirects
//! to `/?endpoint=<path>` so the demo finds it by itself. Only a path of
//! this server (or a URL of its origin) is taken (`web/endpoint.js`): a
//! link must not point the demo at another server.

use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY,
    CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{Method, Request, Response, StatusCode};

use super::http::{plain, Body};
use crate::config::Config;

/// One embedded file.
struct Asset {
    path: &'static str,
    body: &'static [u8],
    content_type: &'static str,
    /// Whether pages of other origins may load it.
    cross_origin: bool,
}

const fn asset(path: &'static str, body: &'static [u8], content_type: &'static str) -> Asset {
    Asset {
        path,
        body,
        content_type,
        cross_origin: false,
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const INDEX: &[u8] = include_bytes!("../../web/index.html");

static ASSETS: &[Asset] = &[
    asset("/", INDEX, HTML),
    asset("/index.html", INDEX, HTML),
    Asset {
        cross_origin: true,
        ..asset("/halley.js", include_bytes!("../../web/halley.js"), JS)
    },
    Asset {
        cross_origin: true,
        ..asset(
            "/halley.d.ts",
            include_bytes!("../../web/halley.d.ts"),
            "application/typescript; charset=utf-8",
        )
    },
    asset("/demo.js", include_bytes!("../../web/demo.js"), JS),
    asset("/endpoint.js", include_bytes!("../../web/endpoint.js"), JS),
    asset(
        "/demo.css",
        include_bytes!("../../web/demo.css"),
        "text/css; charset=utf-8",
    ),
    asset(
        "/favicon.svg",
        include_bytes!("../../web/favicon.svg"),
        "image/svg+xml",
    ),
];

/// The demo's files (the rest are the client's).
const DEMO: &[&str] = &[
    "/",
    "/index.html",
    "/demo.js",
    "/endpoint.js",
    "/demo.css",
    "/favicon.svg",
];

/// The Bayeux path the demo uses when its URL names none.
const DEMO_DEFAULT_ENDPOINT: &str = "/cometd";

pub fn handle<B>(request: &Request<B>, config: &Config) -> Response<Body> {
    let path = request.uri().path();
    if path == "/healthz" {
        return plain(StatusCode::OK, "ok\n");
    }
    let demo_file = DEMO.contains(&path);
    if demo_file && !config.demo {
        return plain(StatusCode::NOT_FOUND, "not found (the demo is off)\n");
    }
    let names_endpoint = request
        .uri()
        .query()
        .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "endpoint"));
    if (path == "/" || path == "/index.html")
        && config.path != DEMO_DEFAULT_ENDPOINT
        && !names_endpoint
    {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("endpoint", &config.path)
            .finish();
        let target = format!("/?{query}");
        let mut response = plain(StatusCode::FOUND, "the demo's endpoint\n");
        if let Ok(location) = HeaderValue::from_str(&target) {
            response.headers_mut().insert(LOCATION, location);
        }
        return response;
    }
    let Some(index) = ASSETS.iter().position(|a| a.path == path) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let fresh = request
        .headers()
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == etag.to_str().unwrap_or_default() || tag.trim() == "*");
    let mut response = if fresh {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        Response::new(Bytes::from_static(asset.body))
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if asset.content_type.starts_with("text/html") {
        // The demo loads only its own files, talks to this server only
        // (`?endpoint=` takes a path of it: web/endpoint.js; connect-src
        // also lists ws:/wss: because older browsers do not count a
        // WebSocket to the page's own host as 'self'), and is never
        // framed (clickjacking).
        headers.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_POLICY),
        );
        headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    headers.insert(ETAG, etag.clone());
    if asset.cross_origin {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    }
    response
}

/// The Content-Security-Policy of the HTML pages.
const PAGE_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss: http: https:; \
    img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// One strong ETag per asset: a hash of its bytes (FNV-1a, 64 bits),
/// computed once.
fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let hash = asset.body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                HeaderValue::from_str(&format!("\"{hash:016x}\"")).expect("hex is a header")
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, if_none_match: Option<&str>) -> Response<Body> {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(IF_NONE_MATCH, tag);
        }
        handle(&request.body(()).unwrap(), &Config::default())
    }

    fn header(response: &Response<Body>, name: http::header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .map_or("", |v| v.to_str().unwrap())
    }

    #[test]
    fn serves_the_demo_and_the_client_with_their_types() {
        for (path, content_type) in [
            ("/", "text/html; charset=utf-8"),
            ("/halley.js", "text/javascript; charset=utf-8"),
            ("/halley.d.ts", "application/typescript; charset=utf-8"),
            ("/demo.js", "text/javascript; charset=utf-8"),
            ("/endpoint.js", "text/javascript; charset=utf-8"),
            ("/demo.css", "text/css; charset=utf-8"),
            ("/favicon.svg", "image/svg+xml"),
        ] {
            let response = get(path, None);
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(header(&response, CONTENT_TYPE), content_type, "{path}");
            assert_eq!(header(&response, CACHE_CONTROL), "no-cache", "{path}");
            assert!(header(&response, ETAG).starts_with('"'), "{path}");
        }
        assert_eq!(
            header(&get("/halley.js", None), ACCESS_CONTROL_ALLOW_ORIGIN),
            "*"
        );
        assert_eq!(header(&get("/", None), ACCESS_CONTROL_ALLOW_ORIGIN), "");
        assert_eq!(get("/nope.js", None).status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/healthz", None).status(), StatusCode::OK);
    }

    #[test]
    fn a_matching_etag_gets_304_and_a_stale_one_the_file() {
        let etag = header(&get("/halley.js", None), ETAG).to_owned();
        assert_eq!(
            get("/halley.js", Some(&etag)).status(),
            StatusCode::NOT_MODIFIED
        );
        let both = format!("\"0000000000000000\", {etag}");
        assert_eq!(
            get("/halley.js", Some(&both)).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            get("/halley.js", Some("\"0000000000000000\"")).status(),
            StatusCode::OK
        );
        assert_ne!(etag, header(&get("/demo.js", None), ETAG));
    }

    #[test]
    fn pages_may_not_be_framed_and_load_only_their_own_files() {
        let page = get("/", None);
        assert!(header(&page, CONTENT_SECURITY_POLICY).contains("frame-ancestors 'none'"));
        assert!(header(&page, CONTENT_SECURITY_POLICY).contains("default-src 'self'"));
        assert_eq!(header(&page, X_FRAME_OPTIONS), "DENY");
        assert_eq!(header(&page, X_CONTENT_TYPE_OPTIONS), "nosniff");
        let script = get("/halley.js", None);
        assert_eq!(header(&script, X_CONTENT_TYPE_OPTIONS), "nosniff");
    }

    #[test]
    fn other_methods_are_405() {
        let request = Request::post("/halley.js").body(()).unwrap();
        let response = handle(&request, &Config::default());
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header(&response, ALLOW), "GET, HEAD");
    }

    #[test]
    fn without_the_demo_its_files_are_404_and_the_client_stays() {
        let config = Config {
            demo: false,
            ..Config::default()
        };
        for &path in DEMO {
            let response = handle(&Request::get(path).body(()).unwrap(), &config);
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
        for path in ["/halley.js", "/healthz"] {
            let response = handle(&Request::get(path).body(()).unwrap(), &config);
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
    }

    #[test]
    fn on_another_bayeux_path_the_demo_is_sent_its_endpoint() {
        let config = Config {
            path: "/x/bayeux".into(),
            ..Config::default()
        };
        let response = handle(&Request::get("/").body(()).unwrap(), &config);
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(header(&response, LOCATION), "/?endpoint=%2Fx%2Fbayeux");
        let named = Request::get("/?endpoint=%2Fx%2Fbayeux").body(()).unwrap();
        assert_eq!(handle(&named, &config).status(), StatusCode::OK);
        assert_eq!(
            get("/", None).status(),
            StatusCode::OK,
            "/cometd: no redirect"
        );
    }
}
