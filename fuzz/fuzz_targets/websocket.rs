//! The WebSocket message path: text frames in, Bayeux frames out, through
//! the server's own socket task (`transport::websocket`) and engine.
//!
//! The input is one text frame per line, sent in order on one socket to a
//! fresh node (invalid UTF-8 replaced); `$CLIENT` in a line becomes the
//! clientId of the last handshake. After each frame the fuzzer waits until
//! the server has nothing left to do (the paused clock moves only then), so
//! the frames the server wrote meanwhile are its answer to that frame.
//!
//! Checked: every text frame the server writes is a JSON array of message
//! objects, with no delivery nested deeper than `max-data-depth`; a frame
//! over `max-request-bytes` closes the socket with 1009 and nothing is
//! written after a close (and there is no 1009 without one); a batch over
//! `max-batch-messages` is answered with `batch_too_large` alone.
#![no_main]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use halley_fuzz::{check_replies, engine, frames, handshake_client_id, runtime, LIMITS};
use halley_protocol::decode_batch;
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;

/// The close code of a close frame's payload.
fn close_code(payload: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]))
}

fuzz_target!(|input: &[u8]| {
    let runtime = runtime();
    runtime.block_on(async {
        let (client, server) = tokio::io::duplex(1 << 20);
        let socket = tokio::spawn(halley_server::fuzzing::websocket(engine(), server));
        let (mut reader, mut writer) = tokio::io::split(client);
        // Everything the server writes, in order; read as it comes.
        let written: Arc<Mutex<Vec<frames::Frame>>> = Arc::default();
        let reading = tokio::spawn({
            let written = written.clone();
            async move {
                while let Some(frame) = frames::next(&mut reader).await {
                    written.lock().unwrap().push(frame);
                }
            }
        });
        let settle = || tokio::time::sleep(Duration::from_millis(1));

        let mut client_id = String::new();
        let mut oversized = false;
        for line in input.split(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(line).replace("$CLIENT", &client_id);
            let before = written.lock().unwrap().len();
            if !frames::send(&mut writer, &frames::client_text(text.as_bytes())).await {
                break;
            }
            settle().await;
            let answer: Vec<_> = written.lock().unwrap()[before..].to_vec();
            if oversized {
                continue; // the socket is closing: nothing more is read
            }
            if text.len() > LIMITS.max_request_bytes {
                oversized = true;
                continue;
            }
            let too_many = decode_batch(text.as_bytes())
                .is_ok_and(|batch| batch.len() > LIMITS.max_batch_messages);
            if too_many {
                assert_eq!(
                    answer.len(),
                    1,
                    "a batch over max-batch-messages got {answer:?}"
                );
                let error = String::from_utf8_lossy(&answer[0].1);
                assert!(error.contains("batch_too_large"), "answered {error}");
            }
            for (opcode, payload) in &answer {
                if *opcode == frames::TEXT {
                    if let Some(id) = handshake_client_id(payload) {
                        client_id = id;
                    }
                }
            }
        }
        let _ = writer.shutdown().await;
        socket.await.expect("the socket's task does not panic");
        reading.await.expect("the reader does not panic");

        let written = written.lock().unwrap();
        if std::env::var_os("FUZZ_SHOW").is_some() {
            // Replaying one input: what the server wrote.
            for (opcode, payload) in written.iter() {
                eprintln!("<- {opcode:x} {}", String::from_utf8_lossy(payload));
            }
        }
        let mut closed = None;
        for (opcode, payload) in written.iter() {
            assert!(
                closed.is_none(),
                "a frame written after the close: {opcode} {payload:?}"
            );
            match *opcode {
                frames::TEXT => check_replies(payload),
                frames::CLOSE => closed = Some(close_code(payload)),
                _ => {} // a ping
            }
        }
        assert_eq!(
            closed == Some(Some(1009)),
            oversized,
            "a frame over max-request-bytes: {oversized}; the close: {closed:?}"
        );
    });
});
