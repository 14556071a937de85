//! The addresses `listen` and `admin-listen` take: `HOST:PORT` or a bare
//! `PORT`.
//!
//! A bare port listens on the loopback interface (`8080` is
//! `127.0.0.1:8080`), as the defaults do: a new node is reachable from its
//! own machine only until the operator says otherwise (`0.0.0.0:8080` for
//! every IPv4 interface, `[::]:8080` for IPv6). A host name is resolved
//! once, when the settings are read; of its addresses the first IPv4 one is
//! taken (`localhost` is then `127.0.0.1`, which is what `localhost` in a
//! browser reaches first too), else the first.

use std::net::{SocketAddr, ToSocketAddrs};

/// What an error says is expected (the caller adds its own alternatives).
pub const EXPECTED: &str =
    "HOST:PORT or PORT (e.g. 127.0.0.1:8080, localhost:8080, 0.0.0.0:8080, 8080)";

/// Parses `text` as a listen address; the error says what was expected
/// (see [`EXPECTED`]) and what was given, or which host did not resolve.
pub fn parse(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let expected = || format!("expected {EXPECTED}, got {text:?}");
    if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
        let port: u16 = text
            .parse()
            .map_err(|_| format!("port {text} is out of range (0 to 65535)"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(expected)?;
    // A bracketed IPv6 address that did not parse above, or an empty host.
    if host.is_empty() || host.contains([':', '[', ']', ' ', '/']) {
        return Err(expected());
    }
    let port: u16 = port.parse().map_err(|_| expected())?;
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve the host {host:?} of {text:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("the host {host:?} of {text:?} has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_ports_and_host_names() {
        let addr = |text: &str| parse(text).unwrap().to_string();
        assert_eq!(addr("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(addr(" 0.0.0.0:80 "), "0.0.0.0:80");
        assert_eq!(addr("[::1]:9"), "[::1]:9");
        assert_eq!(addr("8080"), "127.0.0.1:8080", "a bare port: loopback");
        assert_eq!(addr("0"), "127.0.0.1:0");
        assert_eq!(addr("localhost:8080"), "127.0.0.1:8080", "IPv4 first");
        assert_eq!(addr("LocalHost:1"), "127.0.0.1:1");
    }

    #[test]
    fn errors_say_host_port() {
        for bad in [
            "",
            "localhost",
            "http://127.0.0.1:8080",
            "127.0.0.1:",
            ":8080",
            "a b:1",
            "[::1:9",
        ] {
            let error = parse(bad).unwrap_err();
            assert!(
                error.contains("HOST:PORT or PORT") && error.contains(&format!("{:?}", bad.trim())),
                "{bad:?}: {error}"
            );
        }
        assert!(parse("70000").unwrap_err().contains("out of range"));
        assert!(parse("localhost:70000").unwrap_err().contains("HOST:PORT"));
        // `.invalid` never resolves (RFC 6761).
        let error = parse("no-such-host.invalid:8080").unwrap_err();
        assert!(
            error.contains("cannot resolve the host \"no-such-host.invalid\""),
            "{error}"
        );
    }
}
