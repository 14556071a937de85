//! The admin page, end to end with the binary: `/api/stats` figures that
//! match what the clients did, the page and its assets on the admin
//! listener, and none of it on the public listener.

mod common;

use common::{within, Server};
use serde_json::{json, Value};

/// The admin listener's `http://ADDR`, from the server's start-up log.
async fn admin_url(server: &Server) -> String {
    server.logged("admin endpoints at http://").await;
    let log = server.log();
    let start = log.find("admin endpoints at ").unwrap() + "admin endpoints at ".len();
    let rest = &log[start..];
    rest[..rest.find(' ').unwrap()].to_owned()
}

/// GET `url`: its status, content type and body.
async fn get(url: &str) -> (u16, String, String) {
    let response = within(30.0, url, reqwest::get(url))
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

async fn stats(admin: &str) -> Value {
    let (status, content_type, body) = get(&format!("{admin}/api/stats")).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    serde_json::from_str(&body).unwrap()
}

/// `channels.<table>` as (channel, figure) pairs.
fn table(stats: &Value, name: &str, figure: &str) -> Vec<(String, u64)> {
    stats["channels"][name]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["channel"].as_str().unwrap().to_owned(),
                row[figure].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_stats_match_what_the_clients_did() {
    let server = Server::start(&[]);
    let admin = admin_url(&server).await;

    let (polling, mut polling_deliveries) = server.connected_client().await;
    let (socket, mut socket_deliveries) = server.ws_connected_client().await;
    polling.subscribe("/admin/room").await.unwrap();
    socket.subscribe("/admin/room").await.unwrap();
    socket.subscribe("/admin/quiet").await.unwrap();
    for n in 0..3 {
        polling
            .publish("/admin/room", &json!({ "n": n }))
            .await
            .unwrap();
    }
    socket.publish("/admin/quiet", &json!("hi")).await.unwrap();
    for deliveries in [&mut polling_deliveries, &mut socket_deliveries] {
        for n in 0..3 {
            let delivery = within(30.0, "a delivery", deliveries.recv()).await.unwrap();
            assert_eq!(delivery.data_value(), json!({ "n": n }));
        }
    }
    let quiet = within(30.0, "/admin/quiet", socket_deliveries.recv())
        .await
        .unwrap();
    assert_eq!(quiet.data_value(), json!("hi"));

    let stats = stats(&admin).await;
    assert_eq!(stats["sessions"], 2);
    assert_eq!(stats["websockets_open"], 1);
    assert_eq!(stats["handshakes"]["accepted"], 2);
    assert_eq!(stats["publishes"], 4);
    // Three messages to two subscribers, one to one.
    assert_eq!(stats["deliveries"], 7);
    assert_eq!(stats["latency"]["count"], 7);
    let since_start = &stats["latency"]["since_start"];
    let (p50, p99) = (
        since_start["p50"].as_f64().unwrap(),
        since_start["p99"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99, "{since_start}");
    assert_eq!(stats["connections"]["websocket"], 1);
    assert!(stats["connections"]["long-polling"].as_u64().unwrap() >= 3);
    assert_eq!(
        table(&stats, "by_subscribers", "subscribers"),
        [("/admin/room".into(), 2), ("/admin/quiet".into(), 1)]
    );
    assert_eq!(
        table(&stats, "by_traffic", "messages"),
        [("/admin/room".into(), 3), ("/admin/quiet".into(), 1)]
    );
    assert_eq!(
        table(&stats, "by_traffic", "deliveries"),
        [("/admin/room".into(), 6), ("/admin/quiet".into(), 1)]
    );
    assert_eq!(stats["adapters"]["metadata"], "none");
    assert_eq!(stats["cluster"], Value::Null);
    assert_eq!(stats["ready"], true);
    assert!(stats["recent_errors"].is_array());

    // The sampler turns the counters into a history of rates: wait for
    // one second that saw the clients' traffic... or publish until one
    // does (the three messages may have fallen before the first sample).
    let history = within(30.0, "a second with traffic in the history", async {
        loop {
            let stats = self::stats(&admin).await;
            let history = stats["history"].as_array().unwrap().clone();
            if history
                .iter()
                .any(|p| p["messages_out"].as_f64().unwrap() > 0.0)
            {
                break history;
            }
            polling
                .publish("/admin/room", &json!("more"))
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    let busy = history
        .iter()
        .find(|p| p["messages_out"].as_f64().unwrap() > 0.0)
        .unwrap();
    assert!(busy["messages_in"].as_f64().unwrap() > 0.0, "{busy}");
    assert!(busy["latency"]["p99"].as_f64().unwrap() > 0.0, "{busy}");
    assert_eq!(busy["sessions"], 2);
}

#[tokio::test]
async fn the_page_is_on_the_admin_listener_only() {
    let server = Server::start(&[]);
    let admin = admin_url(&server).await;

    let (status, content_type, page) = get(&format!("{admin}/")).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/html; charset=utf-8")
    );
    assert!(page.contains("<title>Halley admin</title>"), "{page}");
    for (asset, kind) in [("admin.js", "text/javascript"), ("admin.css", "text/css")] {
        let (status, content_type, body) = get(&format!("{admin}/{asset}")).await;
        assert_eq!(status, 200, "{asset}");
        assert!(content_type.starts_with(kind), "{asset}: {content_type}");
        assert!(
            page.contains(&format!("/{asset}")),
            "the page links {asset}"
        );
        assert!(!body.is_empty());
    }

    // The public listener serves the chat demo at `/`, not the admin page,
    // and none of its files or figures.
    let (status, _, public_root) = get(&format!("{}/", server.origin)).await;
    assert_eq!(status, 200);
    assert!(!public_root.contains("Halley admin"), "{public_root}");
    for path in ["/api/stats", "/admin.js", "/admin.css"] {
        let (status, _, _) = get(&format!("{}{path}", server.origin)).await;
        assert_eq!(status, 404, "{path} on the public listener");
    }
}

#[tokio::test]
async fn a_cluster_node_shows_its_id_and_redis_without_the_password() {
    let Some(redis) = common::Redis::start() else {
        return;
    };
    // Redis' default user has no password: any password is taken, so the
    // URL can carry one for the page to hide.
    let url = format!("redis://default:s3cret@127.0.0.1:{}", redis.port);
    let server = Server::start(&["--redis", &url, "--node-id", "admin-a"]);
    let admin = admin_url(&server).await;
    let stats = stats(&admin).await;
    let cluster = &stats["cluster"];
    assert_eq!(cluster["node_id"], "admin-a", "{stats}");
    assert_eq!(cluster["broker"], "redis");
    assert_eq!(
        cluster["redis"],
        format!("redis://default:***@127.0.0.1:{}", redis.port)
    );
    assert!(!stats.to_string().contains("s3cret"), "{stats}");
}
