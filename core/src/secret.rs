//! A string that never prints.

use std::fmt;

/// A secret (API key, token, password). `Debug` and `Display` print `***`; the only way to
/// the value is [`Secret::expose`], so a leak has to be written on purpose.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every whole-token occurrence of the secret replaced by `***`, for text a
    /// server or the network produced that may echo it. Only whole tokens: a match inside a
    /// longer run of letters, digits, `-` or `_` is left alone, so a short secret such as `k`
    /// does not turn "Check your key" into "Chec*** your ***ey".
    pub fn redact_in(&self, text: &str) -> String {
        let secret = self.expose();
        if secret.is_empty() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut done = 0;
        while let Some(found) = text[done..].find(secret) {
            let start = done + found;
            let end = start + secret.len();
            let alone = text[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !is_token_char(c))
                && text[end..].chars().next().is_none_or(|c| !is_token_char(c));
            if alone {
                out.push_str(&text[done..start]);
                out.push_str("***");
                done = end;
            } else {
                // Step one character past this start: a whole-token match may overlap it.
                let next = start + text[start..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&text[done..next]);
                done = next;
            }
        }
        out.push_str(&text[done..]);
        out
    }
}

/// Characters that make up one token of a key, id or word.
fn is_token_char(c: char) -> bool {
    c.is_alphanumeric() || c == '-' || c == '_'
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2-distinctive");
        assert_eq!(format!("{secret:?} {secret}"), "*** ***");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(***)");
        assert_eq!(secret.expose(), "hunter2-distinctive");
    }

    #[test]
    fn redaction_masks_whole_tokens_only() {
        let short = Secret::new("k");
        assert_eq!(short.redact_in("Check your key"), "Check your key");
        assert_eq!(short.redact_in("apiKey=k&q=k"), "apiKey=***&q=***");
        assert_eq!(short.redact_in("k"), "***");

        let key = Secret::new("0123abcd");
        assert_eq!(
            key.redact_in("Your API key 0123abcd is invalid. (0123abcd)"),
            "Your API key *** is invalid. (***)"
        );
        assert_eq!(key.redact_in("x0123abcd 0123abcde"), "x0123abcd 0123abcde");
        assert_eq!(key.redact_in("\"0123abcd\""), "\"***\"");
    }

    #[test]
    fn redaction_finds_a_token_that_overlaps_a_rejected_match() {
        let key = Secret::new("ab-ab");
        assert_eq!(key.redact_in("ab-ab-ab ab-ab"), "ab-ab-ab ***");
        assert_eq!(key.redact_in("é ab-ab é"), "é *** é");
    }

    #[test]
    fn an_empty_secret_masks_nothing() {
        assert_eq!(Secret::new("").redact_in("text"), "text");
    }
}
