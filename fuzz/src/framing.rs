//! `stream_framing`: [`StreamDecoder`] fed arbitrary bytes in fuzzer-chosen chunks.
//!
//! Input layout: byte 0 is a config byte: bits 0-2 give how many chunk-size bytes follow (0-7,
//! none means one push of everything), bits 3-4 pick `max_message_size` from [`MAX_SIZES`].
//! Each size byte `b` means a push of `b + 1` bytes; the sizes repeat until the stream is fed.
//! The rest is the stream. A raw SIP message as input works too: its first letters become the
//! config, the rest still frames.
//!
//! Checked, besides "no panic":
//! - the frames and the error are the same whether the stream arrives in one push or in chunks;
//! - every `Message` frame is a verbatim slice of the stream, at most `max_message_size` long,
//!   and only CR/LF (keep-alives) lies between frames: nothing is consumed twice, invented or
//!   skipped, and the leftover buffer is the stream's unconsumed tail;
//! - a driver that drains after every push never holds more than the limit plus one push, and
//!   after `Ok(None)` holds less than the limit;
//! - errors are sticky;
//! - every frame parses or is rejected without panicking, and when it parses without a defect
//!   the parser's body ends exactly where the decoder cut the frame (framing and parser agree on
//!   Content-Length).

use bytes::Bytes;
use huddle_sip::framing::{Frame, FramingError, StreamDecoder};
use huddle_sip::Message;

/// Limits the config byte chooses between; 2048 is the "small" one, 65 535 the usual one.
pub const MAX_SIZES: [usize; 4] = [2048, 64, 512, 65_535];

/// A well-formed message pushed after an error, which must not clear it.
const LATER: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n";

struct Run {
    frames: Vec<Frame>,
    error: Option<FramingError>,
    /// Bytes pushed before the run stopped (all of them unless an error stopped it).
    pushed: usize,
    /// The decoder's leftover buffer.
    rest: Vec<u8>,
}

/// Fuzz body of the `stream_framing` target.
pub fn check_stream_framing(data: &[u8]) {
    let Some((&config, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(config & 0x07);
    if rest.len() < count {
        return;
    }
    let (size_bytes, input) = rest.split_at(count);
    let max = MAX_SIZES[usize::from((config >> 3) & 0x03)];
    let sizes: Vec<usize> = size_bytes.iter().map(|&b| usize::from(b) + 1).collect();

    let chunked = run(input, &sizes, max);
    let whole = run(input, &[], max);
    assert_eq!(
        chunked.frames, whole.frames,
        "frames depend on how the stream was split"
    );
    assert_eq!(
        chunked.error, whole.error,
        "error depends on how the stream was split"
    );
    if chunked.error.is_none() {
        assert_eq!(chunked.rest, whole.rest, "leftover depends on the split");
    }
    for r in [&chunked, &whole] {
        check_consumption(input, r, max);
    }
    for frame in &whole.frames {
        if let Frame::Message(m) = frame {
            check_frame_parses(m);
        }
    }
}

/// Feeds `input` in `sizes` chunks (cycled; empty means one push), draining after each push
/// like a driver does, and stops at the first error like a driver closing the connection.
fn run(input: &[u8], sizes: &[usize], max: usize) -> Run {
    let mut decoder = StreamDecoder::new(max);
    assert_eq!(decoder.max_message_size(), max);
    let mut frames = Vec::new();
    let mut pushed = 0;
    let mut sizes = sizes.iter().copied().cycle();
    while pushed < input.len() {
        let n = sizes
            .next()
            .unwrap_or(input.len())
            .min(input.len() - pushed);
        let before = decoder.buffered();
        decoder.push(&input[pushed..pushed + n]);
        pushed += n;
        assert_eq!(decoder.buffered(), before + n);
        assert!(
            decoder.buffered() <= max + n,
            "holds {} bytes, limit {max} plus a {n}-byte push",
            decoder.buffered()
        );
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => {
                    let held = decoder.buffered();
                    // A partial message is refused once it reaches the limit; the only other
                    // thing held back is up to three bytes of a possible CRLFCRLF ping.
                    assert!(
                        held < max || held <= 3,
                        "holds {held} bytes after Ok(None), limit {max}"
                    );
                    break;
                }
                Err(error) => {
                    assert_eq!(decoder.next_frame(), Err(error.clone()), "error not sticky");
                    let len = decoder.buffered();
                    decoder.push(LATER);
                    assert_eq!(decoder.next_frame(), Err(error.clone()), "error not sticky");
                    let rest = decoder.buffer_mut()[..len].to_vec();
                    return Run {
                        frames,
                        error: Some(error),
                        pushed,
                        rest,
                    };
                }
            }
        }
    }
    // Message bytes stay buffered until their frame is cut, so an empty buffer means idle.
    assert_eq!(decoder.is_idle(), decoder.buffered() == 0);
    let rest = decoder.buffer_mut().to_vec();
    Run {
        frames,
        error: None,
        pushed,
        rest,
    }
}

/// Frames are verbatim, in order, separated only by CR/LF, and the leftover is the tail.
fn check_consumption(input: &[u8], run: &Run, max: usize) {
    let fed = &input[..run.pushed];
    let mut pos = 0;
    let mut pings = 0;
    let mut crlf = 0;
    for frame in &run.frames {
        match frame {
            Frame::KeepAlive { pong_needed } => {
                pings += if *pong_needed { 4 } else { 2 };
            }
            Frame::Message(m) => {
                assert!(
                    !m.is_empty() && m.len() <= max,
                    "frame of {} bytes, limit {max}",
                    m.len()
                );
                assert!(
                    !matches!(m[0], b'\r' | b'\n'),
                    "frame starts with a line end"
                );
                let skipped = fed[pos..]
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .count();
                crlf += skipped;
                pos += skipped;
                assert!(
                    fed[pos..].starts_with(m),
                    "frame is not the stream's next bytes at offset {pos}"
                );
                pos += m.len();
            }
        }
    }
    let tail = &fed[pos..];
    assert!(
        run.rest.len() <= tail.len(),
        "leftover longer than the unconsumed stream"
    );
    let (skipped, rest) = tail.split_at(tail.len() - run.rest.len());
    assert_eq!(rest, &run.rest[..], "leftover is not the stream's tail");
    assert!(
        skipped.iter().all(|b| matches!(b, b'\r' | b'\n')),
        "consumed bytes that are not line ends without a frame"
    );
    crlf += skipped.len();
    assert!(pings <= crlf, "more keep-alives than line ends consumed");
}

fn check_frame_parses(frame: &Bytes) {
    let Ok(msg) = Message::parse(frame.clone()) else {
        return;
    };
    if msg.defect().is_some() {
        return;
    }
    let body = msg.body();
    let start = (body.as_ptr() as usize).wrapping_sub(frame.as_ptr() as usize);
    assert_eq!(
        start + body.len(),
        frame.len(),
        "parser's body ends at {} but the decoder's frame at {}: {:?}",
        start + body.len(),
        frame.len(),
        String::from_utf8_lossy(&frame[..frame.len().min(600)])
    );
}
