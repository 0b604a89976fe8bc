//! Text that came from the network, made safe for a log line.
//!
//! A key id, a role or a host name in a refused request is whatever the
//! sender chose: it may be megabytes long or hold line breaks and terminal
//! escapes that forge log lines. [`Clipped`] shows at most [`MAX_CHARS`]
//! characters, each escaped as Rust's `escape_debug` does, and says how
//! much was left out.

use std::fmt;

/// Most characters of untrusted text shown in a log line.
pub const MAX_CHARS: usize = 64;

/// Untrusted text for a log line: escaped and cut at [`MAX_CHARS`]
/// characters, quoted.
#[derive(Clone, Copy)]
pub struct Clipped<'a>(pub &'a str);

/// Wraps `s` for a log line (see the module documentation).
pub fn clip(s: &str) -> Clipped<'_> {
    Clipped(s)
}

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let mut shown = 0;
        for c in self.0.chars().take(MAX_CHARS) {
            write!(f, "{}", c.escape_debug())?;
            shown += c.len_utf8();
        }
        f.write_str("\"")?;
        let rest = self.0.len() - shown;
        if rest > 0 {
            write!(f, " (+{rest} bytes)")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_whole() {
        assert_eq!(clip("phone").to_string(), "\"phone\"");
    }

    #[test]
    fn line_breaks_and_escapes_cannot_forge_a_line() {
        let s = clip("a\nINFO forged\u{1b}[2J").to_string();
        assert!(!s.contains('\n') && !s.contains('\u{1b}'), "{s}");
        assert_eq!(s, "\"a\\nINFO forged\\u{1b}[2J\"");
    }

    #[test]
    fn long_text_is_cut_and_says_how_much_is_left() {
        let long = "x".repeat(100_000);
        let s = clip(&long).to_string();
        assert_eq!(
            s,
            format!(
                "\"{}\" (+{} bytes)",
                "x".repeat(MAX_CHARS),
                100_000 - MAX_CHARS
            )
        );
    }

    #[test]
    fn multibyte_characters_are_counted_as_characters() {
        let s = clip(&"é".repeat(70)).to_string();
        assert!(s.ends_with(&format!("(+{} bytes)", 6 * 2)), "{s}");
    }
}
