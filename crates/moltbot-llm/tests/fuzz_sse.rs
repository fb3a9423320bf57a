//! Property-based fuzzing of the upstream SSE parser (stable Rust: proptest, no cargo-fuzz).
//!
//! - Any bytes, split into reads anywhere, give the same events (or the same error) as the bytes in one
//!   read, and never panic.
//! - Generated valid streams (any text, `event:` names, comments, `id:`/`retry:`, unknown fields, a BOM,
//!   LF/CRLF/CR line ends) parse to exactly the events they encode, however they are split.
//! - Memory stays bounded when an upstream never ends a line or never ends an event: the parser refuses
//!   past [`MAX_LINE_BYTES`] instead of buffering forever.
//!
//! Cases per property: `PROPTEST_CASES` (default 256; the memory properties run fewer, bigger cases).
//! Failures proptest finds are saved in `fuzz_sse.proptest-regressions` beside this file and replayed first.

use moltbot_llm::sse::{LineTooLong, MAX_LINE_BYTES, SseEvent, SseParser};
use proptest::prelude::*;

/// Feed `pieces` in order, then finish: the events, or the first error (and the events before it).
fn parse(pieces: &[&[u8]]) -> (Vec<SseEvent>, Option<LineTooLong>) {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for piece in pieces {
        match p.feed(piece) {
            Ok(evs) => out.extend(evs),
            Err(e) => return (out, Some(e)),
        }
    }
    out.extend(p.finish());
    (out, None)
}

/// `bytes` cut at `cuts` (positions taken modulo the length, sorted).
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for c in cuts {
        pieces.push(&bytes[start..c]);
        start = c;
    }
    pieces.push(&bytes[start..]);
    pieces
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes that look like SSE often enough to reach every branch: field names, separators, line ends,
/// a BOM, multi-byte and invalid UTF-8, `[DONE]`.
fn sse_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"data:".to_vec()),
        Just(b"data: ".to_vec()),
        Just(b"event: ".to_vec()),
        Just(b"id: 1".to_vec()),
        Just(b"retry: 5".to_vec()),
        Just(b":".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n\n".to_vec()),
        Just("\u{feff}".as_bytes().to_vec()),
        Just("你好🌍".as_bytes().to_vec()),
        Just(b"\xff\xfe\xc3".to_vec()),
        Just(b"[DONE]".to_vec()),
        Just(br#"{"choices":[{"delta":{"content":"x"}}]}"#.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

/// One valid event and its encoding with line end `eol`.
#[derive(Debug, Clone)]
struct Encoded {
    event: SseEvent,
    text: String,
}

fn field_text() -> impl Strategy<Value = String> {
    // Any characters except line ends (which cannot appear inside a field).
    proptest::collection::vec(
        any::<char>().prop_filter("no line ends", |c| *c != '\n' && *c != '\r'),
        0..24,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn valid_event() -> impl Strategy<Value = (Vec<String>, Option<String>, bool, bool, u8)> {
    (
        proptest::collection::vec(field_text(), 1..4),
        proptest::option::of(field_text()),
        any::<bool>(), // a comment before
        any::<bool>(), // id/retry/unknown fields before
        0u8..3,        // line end: LF, CRLF, CR
    )
}

fn encode((lines, name, comment, others, eol): (Vec<String>, Option<String>, bool, bool, u8)) -> Encoded {
    let eol = ["\n", "\r\n", "\r"][eol as usize];
    let mut text = String::new();
    if comment {
        text.push_str(&format!(": keep-alive{eol}"));
    }
    if others {
        text.push_str(&format!("id: 7{eol}retry: 100{eol}x-unknown: y{eol}"));
    }
    if let Some(n) = &name {
        text.push_str(&format!("event: {n}{eol}"));
    }
    for l in &lines {
        // "data:" then one optional space is stripped: keep a leading space of the value by adding one.
        text.push_str(&format!("data: {l}{eol}"));
    }
    text.push_str(eol);
    Encoded {
        event: SseEvent {
            event: name,
            data: lines.join("\n"),
        },
        text,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_split_anywhere_give_the_same_events(
        bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..600), sse_ish_bytes()],
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let whole = parse(&[&bytes]);
        prop_assert_eq!(&parse(&split(&bytes, &cuts)), &whole);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(&parse(&bytewise), &whole);
    }

    #[test]
    fn valid_streams_parse_to_their_events_however_split(
        events in proptest::collection::vec(valid_event().prop_map(encode), 1..8),
        bom in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut text = if bom { "\u{feff}".to_owned() } else { String::new() };
        text.extend(events.iter().map(|e| e.text.as_str()));
        let want: Vec<SseEvent> = events.iter().map(|e| e.event.clone()).collect();
        let bytes = text.into_bytes();
        prop_assert_eq!(parse(&[&bytes]), (want.clone(), None));
        prop_assert_eq!(parse(&split(&bytes, &cuts)), (want, None));
    }
}

proptest! {
    // Each case buffers up to MAX_LINE_BYTES (8 MiB): fewer cases.
    #![proptest_config(ProptestConfig { cases: cases(256).min(16), ..ProptestConfig::default() })]

    #[test]
    fn a_line_that_never_ends_is_refused_past_the_limit(
        prefix in prop_oneof![Just(&b"data: "[..]), Just(&b""[..]), Just(&b": "[..]), Just(&b"event: "[..])],
        chunk in 4096usize..(1 << 20),
    ) {
        let filler = vec![b'x'; chunk];
        let mut p = SseParser::new();
        prop_assert!(p.feed(prefix).is_ok());
        let mut fed = prefix.len();
        loop {
            let r = p.feed(&filler);
            fed += chunk;
            if fed > MAX_LINE_BYTES {
                prop_assert_eq!(r, Err(LineTooLong));
                break;
            }
            prop_assert_eq!(r, Ok(vec![]));
        }
    }

    #[test]
    fn an_event_that_never_ends_is_refused_past_the_limit(
        line_len in 1usize..(1 << 16),
        lines_per_read in 1usize..64,
    ) {
        // `data:` lines forever, never the blank line that would dispatch them.
        let line = format!("data: {}\n", "y".repeat(line_len));
        let read = line.repeat(lines_per_read);
        let mut p = SseParser::new();
        let mut fed = 0usize;
        let refused = loop {
            match p.feed(read.as_bytes()) {
                Ok(evs) => prop_assert!(evs.is_empty()),
                Err(e) => break e,
            }
            fed += read.len();
            prop_assert!(fed <= 2 * MAX_LINE_BYTES + read.len(), "buffered {fed} bytes without refusing");
        };
        prop_assert_eq!(refused, LineTooLong);
    }
}

/// Inputs kept because they once mattered (line ends split across reads, BOM only at the very start,
/// a lone CR at the end, an unterminated last event, NUL and invalid UTF-8 inside data).
#[test]
fn corpus() {
    // (input, [(data, event name)])
    type Case<'a> = (&'a [u8], &'a [(&'a str, Option<&'a str>)]);
    let corpus: &[Case] = &[
        (b"data: a\r", &[("a", None)]),
        (b"data: a\r\n\r\n", &[("a", None)]),
        (b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n", &[("a", None)]),
        (b"data: [DONE]", &[("[DONE]", None)]),
        (b"event: x\ndata\n\n", &[("", Some("x"))]),
        (b"data: \x00\xff\n\n", &[("\0\u{fffd}", None)]),
        (b"data:  two spaces\n\n", &[(" two spaces", None)]),
        (b"event: a\n\ndata: b\n\n", &[("b", None)]),
    ];
    for (bytes, want) in corpus {
        let want: Vec<SseEvent> = want
            .iter()
            .map(|(d, e)| SseEvent {
                event: e.map(str::to_owned),
                data: (*d).to_owned(),
            })
            .collect();
        for i in 0..=bytes.len() {
            assert_eq!(
                parse(&[&bytes[..i], &bytes[i..]]),
                (want.clone(), None),
                "{:?} split at {i}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
