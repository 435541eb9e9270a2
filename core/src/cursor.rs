//! Opaque list cursors: a version byte and a key, hex-encoded. Clients pass them back verbatim;
//! anything else is answered with a clear error instead of a wrong page.

use crate::ValidationError;

const VERSION: u8 = 1;
const MAX_CURSOR_BYTES: usize = 512;

/// Encodes the key after which the next page starts.
pub fn encode(after_key: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(after_key.len() + 1);
    bytes.push(VERSION);
    bytes.extend_from_slice(after_key);
    hex_encode(&bytes)
}

/// Decodes a cursor made by [`encode`].
pub fn decode(cursor: &str) -> Result<Vec<u8>, ValidationError> {
    let invalid = || {
        ValidationError::new(
            "cursor",
            "invalid_cursor",
            "cursor is not one this server issued: pass back the next_cursor of a previous page unchanged, or omit it to start from the beginning",
        )
    };
    if cursor.is_empty() || cursor.len() > MAX_CURSOR_BYTES * 2 {
        return Err(invalid());
    }
    let bytes = hex_decode(cursor).ok_or_else(invalid)?;
    match bytes.split_first() {
        Some((&VERSION, key)) if !key.is_empty() => Ok(key.to_vec()),
        _ => Err(invalid()),
    }
}

/// Lowercase hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let raw = text.as_bytes();
    if !raw.len().is_multiple_of(2) {
        return None;
    }
    raw.chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cursors_round_trip() {
        let key = b"job\0\x01\x02";
        assert_eq!(decode(&encode(key)).as_deref(), Ok(&key[..]));
    }

    #[test]
    fn foreign_cursors_are_rejected() {
        for bad in [
            "",
            "zz",
            "0",
            "02aa",
            "01",
            "not a cursor",
            &"01".repeat(600),
        ] {
            assert_eq!(
                decode(bad).map_err(|e| e.code),
                Err("invalid_cursor"),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_text_never_panics(text in ".{0,64}") {
            let _ = decode(&text);
        }

        #[test]
        fn any_key_round_trips(key in proptest::collection::vec(any::<u8>(), 1..64)) {
            prop_assert_eq!(decode(&encode(&key)), Ok(key));
        }
    }
}
