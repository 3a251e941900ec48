//! Text from payloads and errors, made safe to look at: characters that a browser would not
//! show (NUL, BEL, ESC, DEL, the C1 controls), or that would reorder or hide what follows
//! (bidirectional overrides, zero-width characters), become visible `\u{1b}` marks, each in a
//! styled span. The templates still escape every piece; nothing is marked safe.

/// A text cut into plain runs and marks, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Text {
    pub(crate) parts: Vec<Part>,
}

/// A run of plain text, or one hidden character spelt out (`\u{1b}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) text: String,
    /// The text is the escape of one hidden character.
    pub(crate) mark: bool,
}

/// Whether `c` is shown as a mark: a control character other than a line break or a tab, or
/// a format character that changes how the text around it reads.
pub(crate) fn hidden(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c,
            '\u{200b}'..='\u{200f}' // zero-width spaces and joiners, direction marks
            | '\u{202a}'..='\u{202e}' // bidirectional embeddings and overrides
            | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, isolates
            | '\u{feff}') // zero-width no-break space
}

impl Text {
    pub(crate) fn new(text: &str) -> Text {
        let mut parts: Vec<Part> = Vec::new();
        for c in text.chars() {
            if hidden(c) {
                parts.push(Part {
                    text: format!("\\u{{{:x}}}", c as u32),
                    mark: true,
                });
            } else {
                match parts.last_mut() {
                    Some(last) if !last.mark => last.text.push(c),
                    _ => parts.push(Part {
                        text: c.to_string(),
                        mark: false,
                    }),
                }
            }
        }
        Text { parts }
    }

    /// The text as a reader sees it, marks spelt out.
    #[cfg(test)]
    pub(crate) fn plain(&self) -> String {
        self.parts.iter().map(|p| p.text.as_str()).collect()
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text::new(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_become_marks_between_plain_runs() {
        let text = Text::new("a\u{0}b\u{1b}[31mred\u{7}\u{7f}\n\tz\u{202e}");
        let parts: Vec<(&str, bool)> = text
            .parts
            .iter()
            .map(|p| (p.text.as_str(), p.mark))
            .collect();
        assert_eq!(
            parts,
            [
                ("a", false),
                ("\\u{0}", true),
                ("b", false),
                ("\\u{1b}", true),
                ("[31mred", false),
                ("\\u{7}", true),
                ("\\u{7f}", true),
                ("\n\tz", false),
                ("\\u{202e}", true),
            ]
        );
        assert_eq!(
            text.plain(),
            "a\\u{0}b\\u{1b}[31mred\\u{7}\\u{7f}\n\tz\\u{202e}"
        );
        assert_eq!(Text::new("plain <b>").parts.len(), 1);
        assert!(Text::new("").parts.is_empty());
        // C1 controls too.
        assert!(hidden('\u{85}') && hidden('\u{9b}'));
        assert!(!hidden('é') && !hidden(' '));
    }
}
