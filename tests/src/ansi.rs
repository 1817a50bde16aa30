//! Turns raw serial output into plain text.
//!
//! Firmware (OVMF in particular) draws its screen on the serial port with
//! ANSI/VT100 sequences; left in, they split words such as `Boot` from their
//! colour codes and make patterns and failure reports unreadable.

const ESC: char = '\u{1b}';

/// Removes escape sequences and control characters (except tab) from one line.
pub fn strip(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ESC {
            match chars.next() {
                // CSI: parameters and intermediates up to a final byte in '@'..='~'.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST (ESC \).
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == ESC && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                // Character set selection takes one more byte, e.g. ESC ( B.
                Some('(' | ')') => {
                    chars.next();
                }
                // Any other two-byte sequence, e.g. ESC c (reset).
                _ => {}
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::strip;

    #[test]
    fn removes_ovmf_colour_and_cursor_codes() {
        let raw = "\u{1b}[05;01HPress \u{1b}[1m\u{1b}[37m\u{1b}[40mESC\u{1b}[0m in 5 seconds";
        assert_eq!(strip(raw), "Press ESC in 5 seconds");
    }

    #[test]
    fn removes_seabios_reset_and_private_modes() {
        let raw = "\u{1b}c\u{1b}[?7l\u{1b}[2J\u{1b}[0mSeaBIOS (version 1.16.2)";
        assert_eq!(strip(raw), "SeaBIOS (version 1.16.2)");
    }

    #[test]
    fn removes_osc_titles_and_charset_selection() {
        assert_eq!(strip("\u{1b}]0;title\u{7}a\u{1b}(Bb"), "ab");
        assert_eq!(strip("\u{1b}]2;t\u{1b}\\x"), "x");
    }

    #[test]
    fn keeps_text_and_tabs_drops_other_controls() {
        assert_eq!(strip("a\tb\r\u{8}c"), "a\tbc");
        assert_eq!(
            strip("hv-init 0.1.0 starting (pid 1)"),
            "hv-init 0.1.0 starting (pid 1)"
        );
    }

    #[test]
    fn tolerates_truncated_sequences() {
        assert_eq!(strip("abc\u{1b}"), "abc");
        assert_eq!(strip("abc\u{1b}[12;"), "abc");
    }
}
