//! `allowed-origins` on a real server: a WebSocket upgrade or a
//! callback-polling request from another site's page is refused with 403;
//! the server's own pages, listed origins and non-browser clients (no
//! `Origin`) are served.

use halley_server::state::limits::Limit;
use halley_server::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts a server; its address and node (the task ends with the test).
async fn serve(config: Config) -> (std::net::SocketAddr, std::sync::Arc<halley_server::Node>) {
    let server = Server::bind(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: halley_server::config::AdminListen::Off,
        ..config
    })
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let node = server.node().clone();
    tokio::spawn(server.run(std::future::pending()));
    (addr, node)
}

/// The status line of the answer to a GET with `headers`.
async fn status(addr: std::net::SocketAddr, target: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.lines().next().unwrap_or_default().to_owned()
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

const JSONP: &str = "/cometd?jsonp=cb&message=%5B%5D";

#[tokio::test]
async fn pages_of_other_sites_are_refused_websocket_and_callback_polling() {
    let (addr, node) = serve(Config {
        allowed_origins: vec!["https://app.example".into()],
        ..Config::default()
    })
    .await;
    let evil = "Origin: https://evil.example\r\n";
    assert_eq!(
        status(addr, "/cometd", &format!("{UPGRADE}{evil}")).await,
        "HTTP/1.1 403 Forbidden"
    );
    let own = format!("Origin: http://{addr}\r\n");
    assert_eq!(
        status(addr, "/cometd", &format!("{UPGRADE}{own}")).await,
        "HTTP/1.1 101 Switching Protocols"
    );
    let listed = "Origin: https://app.example\r\n";
    assert_eq!(
        status(addr, "/cometd", &format!("{UPGRADE}{listed}")).await,
        "HTTP/1.1 101 Switching Protocols"
    );
    assert_eq!(
        status(addr, "/cometd", UPGRADE).await,
        "HTTP/1.1 101 Switching Protocols",
        "no Origin: not a browser page"
    );
    let cross_script = "Sec-Fetch-Site: cross-site\r\nReferer: https://evil.example/x\r\n";
    assert_eq!(
        status(addr, JSONP, cross_script).await,
        "HTTP/1.1 403 Forbidden"
    );
    let own_script = "Sec-Fetch-Site: same-origin\r\n";
    assert_eq!(status(addr, JSONP, own_script).await, "HTTP/1.1 200 OK");
    assert_eq!(node.limits().count(Limit::Origin), 2);
}
