//! Splitting a reply into messages a platform accepts: by its length unit, preferring paragraph, line,
//! then word boundaries, never inside a character.

use crate::{ChunkLimit, LengthUnit};

fn len_of(s: &str, unit: LengthUnit) -> usize {
    match unit {
        LengthUnit::Chars => s.chars().count(),
        LengthUnit::Utf16 => s.encode_utf16().count(),
        LengthUnit::Bytes => s.len(),
    }
}

fn char_len(c: char, unit: LengthUnit) -> usize {
    match unit {
        LengthUnit::Chars => 1,
        LengthUnit::Utf16 => c.len_utf16(),
        LengthUnit::Bytes => c.len_utf8(),
    }
}

/// Split `text` into pieces of at most `limit` each. Concatenated, the pieces give `text` back except
/// for the whitespace at the cut points. An empty or all-whitespace text gives no pieces.
pub fn split(text: &str, limit: ChunkLimit) -> Vec<String> {
    let max = limit.max.max(4);
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if len_of(rest, limit.unit) <= max {
            out.push(rest.to_owned());
            break;
        }
        // The longest prefix (in bytes) that fits.
        let mut fit = 0;
        let mut used = 0;
        for (i, c) in rest.char_indices() {
            let l = char_len(c, limit.unit);
            if used + l > max {
                break;
            }
            used += l;
            fit = i + c.len_utf8();
        }
        let head = &rest[..fit];
        // Prefer a cut in the second half of the piece, at the strongest boundary found there.
        let floor = fit / 2;
        let cut = ["\n\n", "\n", ". ", "。", " "]
            .iter()
            .find_map(|sep| head.rfind(sep).filter(|&i| i >= floor).map(|i| i + sep.len()))
            .unwrap_or(fit);
        let (piece, tail) = rest.split_at(cut);
        let piece = piece.trim_end();
        if !piece.is_empty() {
            out.push(piece.to_owned());
        }
        rest = tail.trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lim(max: usize, unit: LengthUnit) -> ChunkLimit {
        ChunkLimit { max, unit }
    }

    #[test]
    fn short_text_is_one_piece() {
        assert_eq!(split("  hello  ", lim(10, LengthUnit::Chars)), vec!["hello"]);
        assert!(split(" \n ", lim(10, LengthUnit::Chars)).is_empty());
    }

    #[test]
    fn cuts_at_paragraphs_then_words() {
        let text = "first paragraph here\n\nsecond one";
        assert_eq!(
            split(text, lim(25, LengthUnit::Chars)),
            vec!["first paragraph here", "second one"]
        );
        assert_eq!(
            split("aaaa bbbb cccc dddd", lim(10, LengthUnit::Chars)),
            vec!["aaaa bbbb", "cccc dddd"]
        );
    }

    #[test]
    fn telegram_counts_utf16_units() {
        // 😀 is two UTF-16 units: 4096 units hold 2048 of them.
        let text = "😀".repeat(3000);
        let pieces = split(&text, lim(4096, LengthUnit::Utf16));
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].chars().count(), 2048);
        assert_eq!(pieces[1].chars().count(), 952);
    }

    #[test]
    fn bytes_never_split_a_character() {
        let text = "汉".repeat(10); // 3 bytes each
        let pieces = split(&text, lim(10, LengthUnit::Bytes));
        assert!(pieces.iter().all(|p| p.len() <= 10));
        assert_eq!(pieces.concat(), text);
    }

    proptest! {
        #[test]
        fn pieces_fit_and_keep_every_word(
            words in proptest::collection::vec("[a-z😀汉]{1,12}", 0..200),
            max in 12usize..300,
            unit in prop_oneof![Just(LengthUnit::Chars), Just(LengthUnit::Utf16), Just(LengthUnit::Bytes)],
        ) {
            let text = words.join(" ");
            let pieces = split(&text, lim(max, unit));
            for p in &pieces {
                prop_assert!(len_of(p, unit) <= max, "{p:?} longer than {max}");
                prop_assert!(!p.is_empty());
            }
            let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
            prop_assert_eq!(squeeze(&pieces.concat()), squeeze(&text));
        }
    }
}
