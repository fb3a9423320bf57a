//! Incremental text handling for generated tokens: UTF-8-safe detokenization (a character split across
//! tokens is held back until complete) and stop strings that may span token boundaries.

/// Turns token byte pieces into text, holding back an incomplete UTF-8 sequence at the end.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Append bytes; returns the text that is complete. Invalid bytes become U+FFFD.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete sequence at the end: keep it for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(n) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + n);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of a generation (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// Finds stop strings in streamed text. Text that could still be the start of a stop string is held
/// back; everything before a match is released and the match itself is never emitted.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// The result of feeding text to a [`StopMatcher`].
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// Text safe to emit (possibly empty); no stop string yet.
    Continue(String),
    /// A stop string matched: emit this text, then finish with reason `stop`.
    Matched(String),
}

impl StopMatcher {
    pub fn new(stops: impl IntoIterator<Item = String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            stops,
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> Stop {
        self.held.push_str(text);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let out = self.held[..at].to_owned();
            self.held.clear();
            return Stop::Matched(out);
        }
        // Hold back the longest suffix that is a prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_owned();
        self.held.drain(..cut);
        Stop::Continue(out)
    }

    /// Text held back when the generation ends for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop` (on char boundaries).
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && stop.as_bytes().starts_with(&text.as_bytes()[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens_is_held_back() {
        let mut s = Utf8Stream::default();
        let bytes = "é😀".as_bytes();
        assert_eq!(s.push(&bytes[..1]), "");
        assert_eq!(s.push(&bytes[1..3]), "é");
        assert_eq!(s.push(&bytes[3..5]), "");
        assert_eq!(s.push(&bytes[5..]), "😀");
        assert_eq!(s.push(&[0xff, b'a']), "\u{FFFD}a");
        assert_eq!(s.push(&[0xe2]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn stop_string_across_pieces() {
        let mut m = StopMatcher::new(["\nUser:".to_owned(), "END".to_owned()]);
        assert_eq!(m.push("Hello"), Stop::Continue("Hello".into()));
        assert_eq!(m.push(" there\nUs"), Stop::Continue(" there".into()));
        assert_eq!(m.push("e"), Stop::Continue(String::new()));
        assert_eq!(m.push("r: next"), Stop::Matched(String::new()));

        let mut m = StopMatcher::new(["END".to_owned()]);
        assert_eq!(m.push("aE"), Stop::Continue("a".into()));
        assert_eq!(m.push("x"), Stop::Continue("Ex".into()));
        assert_eq!(m.push("yEN"), Stop::Continue("y".into()));
        assert_eq!(m.flush(), "EN");
        assert_eq!(m.push("abENDcd"), Stop::Matched("ab".into()));
    }

    #[test]
    fn no_stops_pass_everything() {
        let mut m = StopMatcher::new(Vec::new());
        assert_eq!(m.push("abc"), Stop::Continue("abc".into()));
        assert_eq!(m.flush(), "");
    }
}
