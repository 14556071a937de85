//! The public listener's HTTP/1.1 request reader (`transport/http1.rs`):
//! bytes as a client would send them on one connection, read request
//! after request until the input ends or a head is refused.
//!
//! Checked: nothing panics; a body read whole is never over the limit, and
//! one framed by `Content-Length` is exactly that long; a head has at most
//! 100 header fields; a refusal is 400, 431 or 501; a body over the limit
//! (`TooLarge`) ends the connection.
#![no_main]

use halley_server::fuzzing::http1_requests;
use halley_server::transport::RequestBody;
use libfuzzer_sys::fuzz_target;

/// Small, so that the fuzzer reaches the limit.
const MAX_BODY: usize = 4096;

fuzz_target!(|input: &[u8]| {
    let runtime = halley_fuzz::runtime();
    runtime.block_on(async {
        let (requests, refused) = http1_requests(input, MAX_BODY).await;
        if let Some(status) = refused {
            assert!(
                matches!(status.as_u16(), 400 | 431 | 501),
                "refused with {status}"
            );
        }
        let count = requests.len();
        for (i, (head, body)) in requests.into_iter().enumerate() {
            assert!(
                head.headers().len() <= 100,
                "{} header fields",
                head.headers().len()
            );
            match body {
                RequestBody::TooLarge => {
                    assert_eq!(i + 1, count, "a request read after a body over the limit");
                }
                RequestBody::Complete(body) => {
                    assert!(body.len() <= MAX_BODY, "a body of {} bytes", body.len());
                    if head.headers().contains_key("transfer-encoding") {
                        continue;
                    }
                    let declared = head
                        .headers()
                        .get("content-length")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.split(',').next())
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    assert_eq!(body.len(), declared, "a body not as long as declared");
                }
            }
        }
    });
});
