//! `halley publish`: one message through a server's HTTP publish API.
//!
//! Thin: builds `POST <url>/api/publish` with the key as a bearer token,
//! prints the server's answer (`[{"channel":"/x","delivered":3}]`) on
//! stdout, and exits non-zero when the server refuses (its error on stderr).

use anyhow::{bail, Context};
use clap::Args;
use serde_json::value::RawValue;

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The server's base URL, http:// or https:// (the API is at <URL>/api/publish)
    #[arg(long, env = "HALLEY_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API key the server accepts (one of its api-keys). HALLEY_API_KEYS is the variable
    /// `halley serve` reads its keys from; given a comma-separated list, publish uses the first
    #[arg(
        long,
        env = "HALLEY_API_KEYS",
        hide_env_values = true,
        value_name = "KEY",
        value_delimiter = ','
    )]
    api_key: Vec<String>,
    /// The channel to publish on, e.g. /stocks/AAPL
    #[arg(long)]
    channel: String,
    /// The message's data, as JSON: '{"price":187.2}', '"text"', 42
    #[arg(long)]
    data: String,
    /// A PEM file of CA certificates to trust for an https:// URL, besides
    /// the system's roots (e.g. the server's self-signed certificate)
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
}

pub fn run(args: PublishArgs) -> anyhow::Result<()> {
    let Some(api_key) = args.api_key.first() else {
        // The variable used to be HALLEY_API_KEY here while `serve` read
        // HALLEY_API_KEYS; say so rather than only "missing key".
        if std::env::var_os("HALLEY_API_KEY").is_some() {
            bail!("HALLEY_API_KEY is now HALLEY_API_KEYS (the variable halley serve reads)");
        }
        bail!("no API key: give --api-key KEY or set HALLEY_API_KEYS");
    };
    let data: Box<RawValue> = serde_json::from_str(&args.data)
        .with_context(|| format!("--data is not JSON: {}", args.data))?;
    let body = serde_json::to_string(&serde_json::json!({
        "channel": args.channel,
        "data": data,
    }))?;
    let url = format!("{}/api/publish", args.url.trim_end_matches('/'));
    let http = http_client(args.ca_cert.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (status, answer) = runtime.block_on(async {
        let response = http
            .post(&url)
            .bearer_auth(api_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let answer = response.text().await.context("reading the answer")?;
        anyhow::Ok((status, answer))
    })?;
    if !status.is_success() {
        let reason = serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(answer);
        bail!("{url} answered {status}: {reason}");
    }
    check_answer(&args.url, &answer)?;
    println!("{answer}");
    Ok(())
}

/// reqwest on rustls, trusting the system's roots and `ca_cert`.
fn http_client(ca_cert: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("--ca-cert {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|certs| !certs.is_empty())
            .with_context(|| format!("--ca-cert {}: no PEM certificate in it", path.display()))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().context("building the HTTP client")
}

/// A 200 that is not the publish API's answer (one `{"channel", ...}` per
/// message) means `--url` pointed somewhere else: most often at the Bayeux
/// endpoint, whose long-polling transport answers any POST with Bayeux
/// replies such as `402::client_id_missing`.
fn check_answer(url: &str, answer: &str) -> anyhow::Result<()> {
    let entries = serde_json::from_str::<Vec<serde_json::Value>>(answer).unwrap_or_default();
    let is_publish_answer = !entries.is_empty()
        && entries
            .iter()
            .all(|entry| entry.get("channel").is_some() && entry.get("delivered").is_some());
    if !is_publish_answer {
        bail!(
            "{url} did not answer as Halley's publish API ({answer}): --url is the server's \
             base URL (e.g. http://127.0.0.1:8080), not its Bayeux endpoint (/cometd)"
        );
    }
    Ok(())
}
