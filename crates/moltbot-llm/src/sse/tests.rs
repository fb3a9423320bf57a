use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn ev(data: &str) -> SseEvent {
    SseEvent {
        event: None,
        data: data.to_owned(),
    }
}

fn parse_all(pieces: &[&[u8]]) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for piece in pieces {
        out.extend(p.feed(piece).unwrap());
    }
    out.extend(p.finish());
    out
}

#[test]
fn single_event_and_done() {
    assert_eq!(
        parse_all(&[b"data: {\"a\":1}\n\ndata: [DONE]\n\n"]),
        vec![ev("{\"a\":1}"), ev("[DONE]")]
    );
}

#[test]
fn multi_line_data_is_joined_with_newline() {
    assert_eq!(
        parse_all(&[b"data: a\ndata:b\ndata:  c\n\n"]),
        vec![ev("a\nb\n c")]
    );
}

#[test]
fn comments_and_other_fields_are_ignored() {
    let got = parse_all(&[b": keep-alive\n\nid: 7\nretry: 100\nevent: message\nfoo: bar\ndata: x\n\n"]);
    assert_eq!(
        got,
        vec![SseEvent {
            event: Some("message".into()),
            data: "x".into()
        }]
    );
}

#[test]
fn line_ends_crlf_cr_lf_mixed() {
    let want = vec![ev("a"), ev("b"), ev("c")];
    assert_eq!(parse_all(&[b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"]), want);
}

#[test]
fn cr_and_lf_in_separate_reads_are_one_line_end() {
    assert_eq!(
        parse_all(&[b"data: a\r", b"\n", b"\r", b"\ndata: b\r", b"\r"]),
        vec![ev("a"), ev("b")]
    );
}

#[test]
fn split_between_the_two_newlines() {
    let mut p = SseParser::new();
    assert!(p.feed(b"data: a\n").unwrap().is_empty());
    assert_eq!(p.feed(b"\n").unwrap(), vec![ev("a")]);
}

#[test]
fn utf8_character_split_across_reads() {
    let bytes = "data: 你好🌍\n\n".as_bytes();
    for i in 0..bytes.len() {
        for j in i..bytes.len() {
            assert_eq!(
                parse_all(&[&bytes[..i], &bytes[i..j], &bytes[j..]]),
                vec![ev("你好🌍")]
            );
        }
    }
}

#[test]
fn line_without_colon_is_a_field_with_empty_value() {
    assert_eq!(parse_all(&[b"data\ndata\n\n"]), vec![ev("\n")]);
    assert_eq!(parse_all(&[b"data\n\n"]), vec![ev("")]);
    assert_eq!(parse_all(&[b"whatever\n\n"]), vec![]);
}

#[test]
fn bom_is_ignored_and_blank_events_dispatch_nothing() {
    assert_eq!(parse_all(&[b"\xEF\xBB\xBFdata: a\n\n\n\n"]), vec![ev("a")]);
}

#[test]
fn unterminated_last_event_is_dispatched_at_end() {
    assert_eq!(
        parse_all(&[b"data: a\n\ndata: [DONE]"]),
        vec![ev("a"), ev("[DONE]")]
    );
}

#[test]
fn over_long_line_is_an_error() {
    let mut p = SseParser::new();
    let big = vec![b'x'; MAX_LINE_BYTES];
    assert!(p.feed(&big).is_ok());
    assert_eq!(p.feed(b"y"), Err(LineTooLong));
}

/// A random valid stream and the events it encodes.
fn random_stream(rng: &mut StdRng) -> (Vec<u8>, Vec<SseEvent>) {
    const WORDS: &[&str] = &[
        "a",
        "héllo",
        "你好",
        "🌍",
        "{\"k\": [1, 2]}",
        " ",
        ":",
        "data",
        "\u{feff}x",
    ];
    const EOLS: &[&str] = &["\n", "\r\n", "\r"];
    let mut out = String::new();
    let mut events = Vec::new();
    for _ in 0..rng.random_range(1..6) {
        let eol = EOLS[rng.random_range(0..EOLS.len())];
        if rng.random_bool(0.3) {
            out.push_str(&format!(": keep-alive{eol}"));
        }
        if rng.random_bool(0.3) {
            out.push_str(&format!("id: 1{eol}retry: 5{eol}"));
        }
        let mut lines = Vec::new();
        for _ in 0..rng.random_range(1..4) {
            let line: String = (0..rng.random_range(0..4))
                .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                .collect();
            let line = line.trim_start_matches(' ').to_owned();
            let sep = if rng.random_bool(0.5) { ": " } else { ":" };
            out.push_str(&format!("data{sep}{line}{eol}"));
            lines.push(line);
        }
        out.push_str(eol);
        events.push(ev(&lines.join("\n")));
    }
    (out.into_bytes(), events)
}

#[test]
fn any_split_gives_the_same_events() {
    let mut rng = StdRng::seed_from_u64(0x5EE);
    for _ in 0..2000 {
        let (bytes, want) = random_stream(&mut rng);
        assert_eq!(
            parse_all(&[&bytes]),
            want,
            "whole: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        let mut cuts: Vec<usize> = (0..rng.random_range(0..8))
            .map(|_| rng.random_range(0..=bytes.len()))
            .collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for c in cuts {
            pieces.push(&bytes[start..c]);
            start = c;
        }
        pieces.push(&bytes[start..]);
        assert_eq!(parse_all(&pieces), want, "pieces: {pieces:?}");
    }
}

#[test]
fn byte_by_byte_equals_whole() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..200 {
        let (bytes, want) = random_stream(&mut rng);
        let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_all(&pieces), want);
    }
}
