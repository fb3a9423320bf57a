//! An incremental Server-Sent Events parser: bytes in, events out, independent of how the bytes were
//! split into reads. Follows the WHATWG event-stream rules: LF, CRLF or CR line ends; `:` comments;
//! `field: value` with one optional space; multi-line `data:` joined with `\n`; a blank line dispatches.

use std::mem;

/// Longest line accepted, and the most `data` one event may accumulate over its lines; more is a
/// protocol error (a misbehaving upstream), so memory stays bounded whatever the upstream sends.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// One dispatched event. `id:` and `retry:` are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SSE line or event longer than {MAX_LINE_BYTES} bytes")]
pub struct LineTooLong;

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, incomplete line (decoded only once the line is complete).
    line: Vec<u8>,
    data: String,
    has_data: bool,
    event: Option<String>,
    /// The previous read ended with CR: a LF starting the next read belongs to it.
    after_cr: bool,
    seen_first_line: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one read's bytes; returns the events completed by them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut out = Vec::new();
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', bytes) {
            if self.line.is_empty() {
                // The whole line is in this read: no copy.
                self.process_line(&bytes[..pos], &mut out)?;
            } else {
                self.line.extend_from_slice(&bytes[..pos]);
                self.end_line(&mut out)?;
            }
            let cr = bytes[pos] == b'\r';
            bytes = &bytes[pos + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        if self.line.len() + bytes.len() > MAX_LINE_BYTES {
            return Err(LineTooLong);
        }
        self.line.extend_from_slice(bytes);
        Ok(out)
    }

    /// The input ended. Leniently processes an unterminated last line and dispatches a pending event
    /// (the spec would discard it; some upstreams omit the final blank line after `[DONE]`).
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut out).ok()?;
        }
        self.end_line(&mut out).ok()?; // a blank line
        out.pop()
    }

    /// Process the buffered line, keeping the buffer's allocation for the next one.
    fn end_line(&mut self, out: &mut Vec<SseEvent>) -> Result<(), LineTooLong> {
        let mut bytes = mem::take(&mut self.line);
        let result = self.process_line(&bytes, out);
        bytes.clear();
        self.line = bytes;
        result
    }

    fn process_line(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), LineTooLong> {
        // Valid UTF-8 (the rule) is checked by the fast validator; only invalid input pays for
        // the lossy conversion.
        let mut line = match std::str::from_utf8(bytes) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(bytes),
        };
        if !self.seen_first_line {
            self.seen_first_line = true;
            if let Some(rest) = line.strip_prefix('\u{feff}') {
                line = rest.to_owned().into();
            }
        }
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                let mut data = mem::take(&mut self.data);
                data.pop(); // the trailing '\n'
                out.push(SseEvent {
                    event: self.event.take(),
                    data,
                });
            } else {
                self.event = None;
            }
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() + 1 > MAX_LINE_BYTES {
                    return Err(LineTooLong);
                }
                // One reservation for the value and its '\n' (not a second growth for the '\n').
                self.data.reserve(value.len() + 1);
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            _ => {} // id, retry, unknown fields
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
