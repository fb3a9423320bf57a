//! What the user typed: multi-line messages and slash commands.
//!
//! A line ending with `\` continues on the next line (the `\` is dropped); a line that is exactly `"""`
//! opens a block that the next such line closes, everything between is one message. A line starting
//! with `/` is a command, except `//…`, which sends `/…` as text. Text pasted into the line editor may
//! hold line ends: it is part of the message as it is.

/// A complete input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Message(String),
    Command(Command),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    New,
    /// `/model` (show and list) or `/model NAME` (switch).
    Model(Option<String>),
    History,
    Help,
    Quit,
    Unknown(String),
}

pub const HELP: &str = "\
Type a message and press Enter. The reply streams as it is generated.
  line \\             end a line with \\ to continue the message on the next line
  \"\"\"                a line of three double quotes starts a block; the next one ends it
  //text             send a message that starts with /
  (text pasted with several lines is sent as one message)
Commands:
  /new               start a new conversation
  /model [NAME]      show the current model and the available ones, or switch to NAME
  /history           print the messages of the current conversation
  /help              this text
  /quit              leave (Ctrl-D does too)
Ctrl-C while a reply streams cancels it (the server keeps what arrived); at the prompt it clears the line.";

/// Collects lines until they make a complete input.
#[derive(Debug, Default)]
pub struct Composer {
    lines: Vec<String>,
    in_block: bool,
}

impl Composer {
    /// Whether a message is being continued (the prompt shows it).
    pub fn is_continuing(&self) -> bool {
        self.in_block || !self.lines.is_empty()
    }

    /// Drop a half-typed message (Ctrl-C).
    pub fn reset(&mut self) {
        self.lines.clear();
        self.in_block = false;
    }

    /// Take one line (without its line end); `Some` when it completes an input. Blank messages are
    /// dropped.
    pub fn feed(&mut self, line: &str) -> Option<Input> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if self.in_block {
            if line.trim() == "\"\"\"" {
                self.in_block = false;
                return self.finish();
            }
            self.lines.push(line.to_owned());
            return None;
        }
        // A paste of several lines arrives as one line with line ends: always text.
        if self.lines.is_empty() && !line.contains('\n') {
            if line.trim() == "\"\"\"" {
                self.in_block = true;
                return None;
            }
            let trimmed = line.trim();
            if let Some(rest) = trimmed.strip_prefix('/')
                && !rest.starts_with('/')
            {
                return Some(Input::Command(parse_command(rest)));
            }
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                self.lines.push(head.to_owned());
                None
            }
            None => {
                self.lines.push(line.to_owned());
                self.finish()
            }
        }
    }

    fn finish(&mut self) -> Option<Input> {
        let mut text = std::mem::take(&mut self.lines).join("\n");
        if text.trim().is_empty() {
            return None;
        }
        // `//text` sends `/text`.
        if text.starts_with("//") {
            text.remove(0);
        }
        Some(Input::Message(text))
    }
}

fn parse_command(rest: &str) -> Command {
    let mut parts = rest.split_whitespace();
    let name = parts.next().unwrap_or("");
    let arg = parts.next().map(str::to_owned);
    match name {
        "new" => Command::New,
        "model" | "models" => Command::Model(arg),
        "history" => Command::History,
        "help" | "?" => Command::Help,
        "quit" | "exit" => Command::Quit,
        other => Command::Unknown(other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(lines: &[&str]) -> Vec<Input> {
        let mut c = Composer::default();
        lines.iter().filter_map(|l| c.feed(l)).collect()
    }

    fn msg(s: &str) -> Input {
        Input::Message(s.to_owned())
    }

    #[test]
    fn a_line_is_a_message() {
        assert_eq!(feed_all(&["hello"]), vec![msg("hello")]);
        assert_eq!(feed_all(&["", "   "]), vec![]);
    }

    #[test]
    fn backslash_continues_the_line() {
        let mut c = Composer::default();
        assert_eq!(c.feed("one \\"), None);
        assert!(c.is_continuing());
        assert_eq!(c.feed("two\\"), None);
        assert_eq!(c.feed("three"), Some(msg("one \ntwo\nthree")));
        assert!(!c.is_continuing());
    }

    #[test]
    fn triple_quotes_make_a_block() {
        assert_eq!(
            feed_all(&["\"\"\"", "first", "", "/not a command", "\"\"\"", "after"]),
            vec![msg("first\n\n/not a command"), msg("after")]
        );
        // An empty block sends nothing.
        assert_eq!(feed_all(&["\"\"\"", "\"\"\""]), vec![]);
    }

    #[test]
    fn commands_and_escaped_slashes() {
        assert_eq!(
            feed_all(&[
                "/new",
                " /model  beta ",
                "/model",
                "/history",
                "/help",
                "/quit",
                "/nope"
            ]),
            vec![
                Input::Command(Command::New),
                Input::Command(Command::Model(Some("beta".into()))),
                Input::Command(Command::Model(None)),
                Input::Command(Command::History),
                Input::Command(Command::Help),
                Input::Command(Command::Quit),
                Input::Command(Command::Unknown("nope".into())),
            ]
        );
        assert_eq!(
            feed_all(&["//etc/hosts is a file"]),
            vec![msg("/etc/hosts is a file")]
        );
        // A continued line starting with / is text.
        assert_eq!(feed_all(&["see\\", "/new"]), vec![msg("see\n/new")]);
    }

    #[test]
    fn a_pasted_block_is_text() {
        assert_eq!(feed_all(&["/new\nsecond line"]), vec![msg("/new\nsecond line")]);
        assert_eq!(feed_all(&["a\nb\\", "c"]), vec![msg("a\nb\nc")]);
    }

    #[test]
    fn reset_drops_a_half_typed_message() {
        let mut c = Composer::default();
        assert_eq!(c.feed("\"\"\""), None);
        c.reset();
        assert!(!c.is_continuing());
        assert_eq!(c.feed("x"), Some(msg("x")));
    }
}
