//! Text that comes from a peer, made safe to log or print.
//!
//! Segment names, notification names and error messages arrive from the
//! network. Written raw, a newline in one forges a whole log line and an
//! escape byte reaches the terminal. [`Escaped`] is the one place where
//! such text is made inert; te-proto uses it where it puts peer text into a
//! [`Status`](crate::Status), and te-runtime where it logs peer text.

use core::fmt;

/// Displays a peer's string with every control character (and the Unicode
/// characters that reorder or hide text) escaped as Rust does in string
/// literals (`\n`, `\u{1b}`); everything else is written as is, so plain
/// names read unchanged.
///
/// ```
/// use te_proto::text::Escaped;
/// assert_eq!(format!("{}", Escaped("node-a")), "node-a");
/// assert_eq!(format!("{}", Escaped("a\nb\x1b[31m")), "a\\nb\\u{1b}[31m");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Escaped<'a>(pub &'a str);

/// Whether `c` must not reach a log or a terminal as it is.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}' // zero-width characters, direction marks
            | '\u{2028}'..='\u{202e}' // line and paragraph separators, bidi embeddings
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{feff}' // byte order mark
        )
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(unsafe_char) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(f, "{}", c.escape_debug())?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;
    use std::format;

    #[test]
    fn controls_and_reordering_characters_are_escaped_and_the_rest_kept() {
        let raw = "ok \u{e9}t\u{e9}\n2026-12-02 INFO forged\r\x1b[2J\u{202e}\u{7f}\0";
        let out = format!("{}", Escaped(raw));
        assert_eq!(
            out,
            "ok \u{e9}t\u{e9}\\n2026-12-02 INFO forged\\r\\u{1b}[2J\\u{202e}\\u{7f}\\0"
        );
        assert!(!out.chars().any(super::unsafe_char), "{out:?}");
        assert_eq!(format!("{}", Escaped("")), "");
    }
}
