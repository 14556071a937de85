//! TLS end to end, with self-signed certificates made here (rcgen): a real
//! `halley serve --tls-cert --tls-key` reached by Halley's own client over
//! https long-polling and wss; the certificate reloaded when its files
//! change and on SIGHUP (a bad new pair keeps the old one); a client that
//! opens TCP and sends nothing is closed; the webhook Metadata Adapter
//! asking a backend over https; `halley publish` and `halley bench` against
//! https with `--ca-cert`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{start_with_config, within, Server};
use halley_client::{Client, TransportKind, Trust};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as
/// `<name>.crt` and `<name>.key` in a directory of the test's own.
struct Pair {
    cert: PathBuf,
    key: PathBuf,
    pem: String,
    der: Vec<u8>,
}

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("halley-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pair(name: &str) -> Pair {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = dir();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    Pair {
        cert: cert_path,
        key: key_path,
        pem: cert.pem(),
        der: cert.der().to_vec(),
    }
}

fn serve_tls(pair: &Pair, flags: &[&str]) -> Server {
    let mut all = vec![
        "--tls-cert",
        pair.cert.to_str().unwrap(),
        "--tls-key",
        pair.key.to_str().unwrap(),
    ];
    all.extend_from_slice(flags);
    Server::start(&all)
}

fn client(url: &str, transport: TransportKind, trust: Trust) -> Client {
    Client::builder(url)
        .transport(transport)
        .trust(trust)
        .backoff(Duration::from_millis(100), Duration::from_millis(500))
        .build()
        .unwrap()
}

/// Handshake, subscribe, publish and receive over `transport`.
async fn round_trip(url: &str, transport: TransportKind, trust: Trust) {
    let client = client(url, transport, trust);
    let mut deliveries = client.take_deliveries().unwrap();
    let info = client.handshake().await.expect("handshake over TLS");
    assert!(!info.client_id.is_empty());
    client.subscribe("/tls/room").await.unwrap();
    client
        .publish("/tls/room", &json!({"text": "secret"}))
        .await
        .unwrap();
    let delivery = within(30.0, "the delivery", deliveries.recv())
        .await
        .unwrap();
    assert_eq!(delivery.channel, "/tls/room");
    assert_eq!(delivery.data_value(), json!({"text": "secret"}));
    client.disconnect().await.unwrap();
}

#[tokio::test]
async fn long_polling_over_https_and_websocket_over_wss() {
    let pair = pair("serve");
    let server = serve_tls(&pair, &[]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let trust = Trust::with_ca_pem(pair.pem.as_bytes()).unwrap();
    round_trip(&server.url, TransportKind::LongPolling, trust.clone()).await;
    round_trip(&server.url, TransportKind::WebSocket, trust.clone()).await;
    // The same through the host name the certificate names.
    let by_name = server.url.replace("127.0.0.1", "localhost");
    round_trip(&by_name, TransportKind::WebSocket, trust.clone()).await;

    // The browser cookie is Secure when served over TLS.
    let browser = client(&server.url, TransportKind::LongPolling, trust);
    let handshake = json!([{"channel": "/meta/handshake", "version": "1.0",
                            "supportedConnectionTypes": ["long-polling"]}]);
    let response = browser
        .raw_post(handshake.to_string().into_bytes())
        .await
        .unwrap();
    let cookie = response.header("set-cookie").unwrap();
    assert!(
        cookie.starts_with("BAYEUX_BROWSER=") && cookie.ends_with("; Secure"),
        "{cookie}"
    );

    // A client that does not trust the certificate does not get in, over
    // either transport: the certificate is checked.
    for transport in [TransportKind::LongPolling, TransportKind::WebSocket] {
        let stranger = client(&server.url, transport, Trust::system());
        let error = stranger.handshake().await.unwrap_err();
        let text = format!("{error:?}");
        assert!(
            text.contains("UnknownIssuer") || text.contains("certificate"),
            "{transport:?}: {text}"
        );
    }
}

/// The certificate the server presents to a new connection (trusting any
/// of `pems`).
async fn served_certificate(address: &str, pems: &[&str]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in pems {
        let trust = rustls_pem(pem);
        roots.add(trust.into()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The DER of the one certificate in `pem`.
fn rustls_pem(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Polls what a new connection is served until it is `want`.
async fn until_served(address: &str, pems: &[&str], want: &[u8], what: &str) {
    within(30.0, what, async {
        while served_certificate(address, pems).await != want {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn replace_files(target: &Pair, with: &Pair) {
    // Key first: the watcher may look between the two writes; it then
    // logs a mismatch and keeps the old pair until the second write.
    std::fs::copy(&with.key, &target.key).unwrap();
    std::fs::copy(&with.cert, &target.cert).unwrap();
}

#[tokio::test]
async fn the_certificate_is_reloaded_when_its_files_change_and_on_sighup() {
    let (live, second, third) = (pair("live"), pair("second"), pair("third"));
    let first_der = live.der.clone();
    let server = serve_tls(&live, &[]);
    let address = server.address().to_owned();
    let pems = [live.pem.as_str(), second.pem.as_str(), third.pem.as_str()];
    assert_eq!(served_certificate(&address, &pems).await, first_der);
    // An open connection, made with the first certificate.
    let trust = Trust::with_ca_pem(live.pem.as_bytes()).unwrap();
    let open = client(&server.url, TransportKind::WebSocket, trust);
    open.handshake().await.unwrap();

    // New files: new connections get the new certificate.
    replace_files(&live, &second);
    until_served(&address, &pems, &second.der, "the second certificate").await;
    server.logged("TLS certificate reloaded").await;
    // The open connection goes on with the one it had.
    open.publish("/still/here", &json!(1)).await.unwrap();

    // A bad new file: an error, and the second certificate stays.
    std::fs::write(&live.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    server.logged("TLS certificate not reloaded").await;
    assert_eq!(served_certificate(&address, &pems).await, second.der);

    // SIGHUP reads the files at once (the watcher may beat it to it: what
    // counts is that the signal is taken, and the third pair served).
    replace_files(&live, &third);
    let killed = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    server.logged("SIGHUP: reloading the TLS certificate").await;
    until_served(&address, &pems, &third.der, "the third certificate").await;
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_closed_and_a_bad_handshake_is_counted() {
    let pair = pair("idle");
    let server = serve_tls(&pair, &["--header-read-timeout", "300"]);
    // Opens TCP, says nothing: closed by the server (EOF), not held.
    let mut silent = TcpStream::connect(server.address()).await.unwrap();
    let mut buf = [0u8; 16];
    let read = within(30.0, "the server to close", silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Plain HTTP on the TLS port: a failed handshake.
    let plain = reqwest::get(format!("http://{}/healthz", server.address())).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    server.logged("limit=\"tls_handshake\"").await;
    let log = server.log();
    assert!(log.contains("TLS handshake with 127.0.0.1"), "{log}");
    assert!(
        server.metric("halley_limit_hits_total").await >= 1.0,
        "counted"
    );
    // The server still serves.
    let trust = Trust::with_ca_pem(pair.pem.as_bytes()).unwrap();
    round_trip(&server.url, TransportKind::LongPolling, trust).await;
}

/// A webhook backend over https (hyper on tokio-rustls, the certificate of
/// `pair`): allows every handshake, and subscribes to `/chat/**` only.
async fn https_backend(pair: &Pair) -> String {
    use rustls::pki_types::pem::PemObject;
    let chain = vec![rustls::pki_types::CertificateDer::from_pem_file(&pair.cert).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pair.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}/authorize",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async {
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    let question: Value = serde_json::from_slice(&body).unwrap();
                    let channel = question["channel"].as_str().unwrap_or("");
                    let answer = match question["action"].as_str() {
                        Some("handshake") => json!({"allow": true, "user": "ada"}),
                        _ => json!({"allow": channel.starts_with("/chat/"),
                                    "reason": format!("no access to {channel} (said over https)")}),
                    };
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        bytes::Bytes::from(answer.to_string()),
                    )))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    url
}

#[tokio::test]
async fn the_webhook_asks_its_backend_over_https() {
    let backend_pair = pair("backend");
    let url = https_backend(&backend_pair).await;
    let server = start_with_config(
        &format!(
            "[webhook]\nurl = \"{url}\"\nca-cert = \"{}\"\n",
            backend_pair.cert.display()
        ),
        &[],
    );
    let client = server.browser();
    client.handshake().await.expect("allowed by the backend");
    client.subscribe("/chat/1").await.unwrap();
    let denied = client.subscribe("/admin").await.unwrap_err();
    assert!(
        denied.to_string().contains("403::subscribe_denied"),
        "{denied}"
    );

    // Without the CA the backend's certificate is not trusted: the
    // backend is unreachable, and the webhook fails closed.
    let untrusting = start_with_config(&format!("[webhook]\nurl = \"{url}\"\n"), &[]);
    let refused = untrusting.browser().handshake().await.unwrap_err();
    assert!(
        refused.to_string().contains("handshake_denied"),
        "{refused}"
    );
    untrusting.logged("authorization backend failed").await;
    // And an unreadable ca-cert is a configuration error naming the file.
    let stderr = common::refused_config(&format!(
        "[webhook]\nurl = \"{url}\"\nca-cert = \"/nonexistent/ca.pem\"\n"
    ));
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
}

fn halley(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_halley"))
        .args(args)
        .env_remove("HALLEY_API_KEYS")
        .env_remove("HALLEY_URL")
        .output()
        .unwrap()
}

#[test]
fn publish_and_bench_reach_an_https_server_with_ca_cert() {
    let pair = pair("cli");
    let key = "tls-test-key-0123456789";
    let server = serve_tls(&pair, &["--api-keys", key, "--handshake-rate-per-ip", "0"]);
    let origin = server.origin.clone();
    assert!(origin.starts_with("https://"), "{origin}");
    let ca = pair.cert.to_str().unwrap();
    let publish = |extra: &[&str]| {
        let mut args = vec![
            "publish",
            "--url",
            &origin,
            "--api-key",
            key,
            "--channel",
            "/x",
            "--data",
            "1",
        ];
        args.extend_from_slice(extra);
        halley(&args)
    };
    let output = publish(&["--ca-cert", ca]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("\"delivered\":0"),
        "{output:?}"
    );
    let output = publish(&[]);
    assert!(
        !output.status.success(),
        "the self-signed certificate is not trusted by default"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error"), "{stderr}");

    for transport in ["long-polling", "websocket"] {
        let output = halley(&[
            "bench",
            "--url",
            &server.url,
            "--ca-cert",
            ca,
            "--transport",
            transport,
            "--users",
            "20",
            "--room-size",
            "10",
            "--interval",
            "50",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--drain-timeout",
            "5s",
        ]);
        assert!(
            output.status.success(),
            "{transport}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let output = halley(&[
        "bench",
        "--url",
        &server.url,
        "--ca-cert",
        "/nonexistent/ca.pem",
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("/nonexistent/ca.pem"),
        "{output:?}"
    );
}
