//! Checks on the human-readable text plume stores and shows (site names, source ids), so that no
//! name can pass for another: control characters are refused elsewhere, format characters here.

use unicode_normalization::UnicodeNormalization;

/// Whether `text` holds an invisible format character: bidirectional controls (which reorder what
/// a reader sees), zero-width characters and joiners, soft hyphens, tags and the like (Unicode's
/// general category Cf).
pub fn has_format_characters(text: &str) -> bool {
    text.chars().any(|c| {
        matches!(c as u32,
            0x00AD | 0x061C | 0x06DD | 0x070F | 0x08E2 | 0x180E | 0xFEFF | 0x110BD | 0x110CD | 0xE0001
            | 0x0600..=0x0605 | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
            | 0xFFF9..=0xFFFB | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0020..=0xE007F)
    })
}

/// `text` in Unicode normalisation form C, so that one name has one spelling.
pub fn nfc(text: &str) -> String {
    text.nfc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_characters_are_found_and_ordinary_text_is_not() {
        for spoof in [
            "pad\u{202E}7",
            "pad\u{200B}7",
            "\u{FEFF}pad",
            "pad\u{2066}7",
            "a\u{00AD}b",
        ] {
            assert!(has_format_characters(spoof), "{spoof:?}");
        }
        for fine in [
            "Permian Well Pad 7",
            "Müller-Ölfeld",
            "ガス田",
            "pad-7_north",
            "Ω",
        ] {
            assert!(!has_format_characters(fine), "{fine:?}");
        }
    }

    #[test]
    fn names_take_one_spelling() {
        assert_eq!(nfc("Mu\u{0308}ller"), "Müller");
        assert_eq!(nfc("Müller"), "Müller");
    }
}
