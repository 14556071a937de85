//! What the connection itself needs from a request head's fields: how the
//! body is framed, whether the connection stays open, `Expect:
//! 100-continue`, and whether it asks to upgrade.
//!
//! Read in one pass over the raw fields httparse found, with names compared
//! case-insensitively, rather than looked up in the request's `HeaderMap`:
//! each lookup there hashes its name, and the five of them cost ~800
//! instructions per request (counted with `bench/instructions.sh`). The
//! rules are those the `HeaderMap` lookups applied; a value that is not
//! visible ASCII is one `HeaderValue::to_str` refuses, and is treated the
//! same way.

use http::{StatusCode, Version};

use super::{Framing, Refusal};

/// The facts, once the head is known to be well formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fields {
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub upgrade: bool,
}

/// `fields` are the head's (name, value) pairs, in order.
pub(super) fn read<'h>(
    version: Version,
    fields: impl Iterator<Item = (&'h [u8], &'h [u8])>,
) -> Result<Fields, Refusal> {
    let bad = |why| Refusal(StatusCode::BAD_REQUEST, why);
    let mut transfer_encoding = false;
    // The last coding named across every Transfer-Encoding field.
    let mut last_coding: Option<&[u8]> = None;
    let mut content_length = false;
    let mut length: Result<Option<u64>, Refusal> = Ok(None);
    let (mut close, mut keep_alive, mut upgrade_token) = (false, false, false);
    let mut expect: Option<&[u8]> = None;
    let mut upgrade_field = false;
    for (name, value) in fields {
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            if let Some(value) = text(value) {
                if let Some(coding) = tokens(value).next_back() {
                    last_coding = Some(coding);
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            content_length = true;
            if length.is_ok() {
                length = add_length(length, value);
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in text(value).into_iter().flat_map(tokens) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                upgrade_token |= token.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            // The first field, as `HeaderMap::get` reads it.
            expect.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_field = true;
        }
    }
    let framing = if transfer_encoding {
        if content_length {
            return Err(bad("both Content-Length and Transfer-Encoding"));
        }
        match last_coding {
            Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
            _ => {
                return Err(Refusal(
                    StatusCode::NOT_IMPLEMENTED,
                    "only the chunked transfer coding is supported",
                ))
            }
        }
    } else {
        Framing::Length(length?.unwrap_or(0))
    };
    Ok(Fields {
        framing,
        keep_alive: match version {
            Version::HTTP_10 => keep_alive,
            _ => !close,
        },
        expect_continue: version == Version::HTTP_11
            && expect.is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue")),
        upgrade: upgrade_token && upgrade_field,
    })
}

/// The value if it is visible ASCII (tabs allowed), as `HeaderValue::to_str`
/// requires.
fn text(value: &[u8]) -> Option<&[u8]> {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..0x7f).contains(&b))
        .then_some(value)
}

/// The comma-separated tokens of a value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// One more Content-Length field: every comma-separated part digits only,
/// and every part of every field the same number.
fn add_length(length: Result<Option<u64>, Refusal>, value: &[u8]) -> Result<Option<u64>, Refusal> {
    let malformed = || Refusal(StatusCode::BAD_REQUEST, "malformed Content-Length");
    let mut length = length?;
    let value = text(value).ok_or_else(malformed)?;
    for part in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(malformed());
        }
        let n: u64 = std::str::from_utf8(part)
            .ok()
            .and_then(|digits| digits.parse().ok())
            .ok_or_else(malformed)?;
        if length.is_some_and(|l| l != n) {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                "conflicting Content-Length values",
            ));
        }
        length = Some(n);
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read11(fields: &[(&str, &[u8])]) -> Result<Fields, StatusCode> {
        read_as(Version::HTTP_11, fields)
    }

    fn read_as(version: Version, fields: &[(&str, &[u8])]) -> Result<Fields, StatusCode> {
        read(version, fields.iter().map(|(n, v)| (n.as_bytes(), *v))).map_err(|r| r.0)
    }

    #[test]
    fn the_body_is_framed_by_the_last_transfer_coding_or_one_length() {
        let framing = |f: &[(&str, &[u8])]| read11(f).map(|f| f.framing);
        assert_eq!(framing(&[]), Ok(Framing::Length(0)));
        assert_eq!(
            framing(&[("content-LENGTH", b" 12 ")]),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            framing(&[
                ("Transfer-Encoding", b"gzip"),
                ("transfer-encoding", b"chunked, ")
            ]),
            Ok(Framing::Chunked)
        );
        for refused in [
            &[("Transfer-Encoding", &b"chunked, gzip"[..])][..],
            &[("Transfer-Encoding", b"")],
            &[("Transfer-Encoding", b"chunked\x80")],
        ] {
            assert_eq!(
                framing(refused),
                Err(StatusCode::NOT_IMPLEMENTED),
                "{refused:?}"
            );
        }
        for refused in [
            &[
                ("Content-Length", &b"1"[..]),
                ("Transfer-Encoding", b"chunked"),
            ][..],
            &[("Content-Length", b"1, 2")],
            &[("Content-Length", b"1"), ("Content-Length", b"2")],
            &[("Content-Length", b"")],
            &[("Content-Length", b"+1")],
            &[("Content-Length", b"99999999999999999999999")],
            &[("Content-Length", b"1\x80")],
        ] {
            assert_eq!(
                framing(refused),
                Err(StatusCode::BAD_REQUEST),
                "{refused:?}"
            );
        }
        assert_eq!(
            framing(&[("Content-Length", b"7"), ("Content-Length", b"7,7")]),
            Ok(Framing::Length(7))
        );
    }

    #[test]
    fn connection_tokens_expect_and_upgrade() {
        let fields =
            read11(&[("Connection", b"Upgrade, close"), ("upgrade", b"websocket")]).unwrap();
        assert!(fields.upgrade && !fields.keep_alive);
        // A value that is not visible ASCII says nothing.
        let fields = read11(&[("Connection", b"close\x01"), ("Upgrade", b"websocket")]).unwrap();
        assert!(fields.keep_alive && !fields.upgrade);
        assert!(!read11(&[("Connection", b"upgrade")]).unwrap().upgrade);
        let http10 = |f: &[(&str, &[u8])]| read_as(Version::HTTP_10, f).unwrap();
        assert!(!http10(&[]).keep_alive);
        assert!(http10(&[("connection", b"foo, Keep-Alive")]).keep_alive);
        // The first Expect field counts, and only on HTTP/1.1.
        assert!(
            read11(&[("Expect", b"100-Continue"), ("Expect", b"x")])
                .unwrap()
                .expect_continue
        );
        assert!(
            !read11(&[("Expect", b"x"), ("Expect", b"100-continue")])
                .unwrap()
                .expect_continue
        );
        assert!(!http10(&[("Expect", b"100-continue")]).expect_continue);
    }
}
