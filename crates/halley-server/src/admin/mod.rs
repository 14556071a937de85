//! The admin listener: operators' endpoints, on their own address
//! (`admin-listen`, `127.0.0.1:8081` by default), never on the public one.
//!
//! | path | answers |
//! |---|---|
//! | `/metrics` | every metric of the process, Prometheus text format ([`crate::metrics`]) |
//! | `/healthz` | 200 `ok` while the process serves HTTP at all |
//! | `/readyz` | 200 `ready`, or 503 and why not ([`health::Health::not_ready`]) |
//! | `/` and its assets | the admin page ([`page`]) |
//! | `/api/stats` | the admin page's figures, JSON ([`stats`]) |
//!
//! The figures read from the node rather than counted (live sessions, the
//! broker's availability) are set here, at each scrape. The page's figures
//! come from a sampler that runs with the listener, once a second
//! ([`stats::Sampler`]); its per-channel traffic from [`crate::traffic`]
//! (counted on the fan-out, a floor below), its recent errors from
//! [`recent`].

pub mod health;
pub mod page;
pub mod recent;
pub mod stats;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::metrics;
use crate::node::Node;
use health::Health;
use stats::Sampler;

/// The Prometheus text format's content type.
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, node: Arc<Node>, health: Arc<Health>) {
    crate::traffic::traffic().enable();
    let sampler = Arc::new(Sampler::default());
    tokio::select! {
        () = accept(listener, node.clone(), health, sampler.clone()) => {}
        () = sampler.run(&node) => {}
    }
}

async fn accept(
    listener: TcpListener,
    node: Arc<Node>,
    health: Arc<Health>,
    sampler: Arc<Sampler>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and friends: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let service = service_fn({
            let node = node.clone();
            let health = health.clone();
            let sampler = sampler.clone();
            move |request| {
                let response = route(&node, &health, &sampler, &request);
                async move { Ok::<_, Infallible>(response) }
            }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route<B>(
    node: &Node,
    health: &Health,
    sampler: &Sampler,
    request: &Request<B>,
) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/metrics" => {
            let metrics = metrics();
            metrics.sessions.set(node.sessions().len() as i64);
            metrics.broker_up.set(i64::from(node.broker().available()));
            metrics.set_limit_hits(&node.limits().counts());
            text(StatusCode::OK, METRICS_TYPE, metrics.encode())
        }
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" => match health.not_ready(node) {
            None => text(StatusCode::OK, PLAIN, "ready\n".into()),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{why}\n")),
        },
        "/api/stats" => text(
            StatusCode::OK,
            "application/json",
            sampler.stats(node, health).to_string(),
        ),
        path => match page::asset(path) {
            Some((content_type, body)) => text(StatusCode::OK, content_type, body.into()),
            None => text(
                StatusCode::NOT_FOUND,
                PLAIN,
                "not found: /, /api/stats, /metrics, /healthz, /readyz\n".into(),
            ),
        },
    }
}

const PLAIN: &str = "text/plain; charset=utf-8";

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
