//! The non-Bayeux pages: `/` (a placeholder until the demo arrives) and
//! `/healthz` for load balancers and scripts.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::{plain, Body};

const INDEX: &str = include_str!("index.html");

pub fn handle(request: &Request<Incoming>) -> Response<Body> {
    match request.uri().path() {
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/" | "/index.html" => {
            let mut response = Response::new(Full::new(Bytes::from_static(INDEX.as_bytes())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}
