//! The typed answer to bad input.

use serde::Serialize;

/// Bad input, named by the field it concerns, with a message that says what to fix.
///
/// The services map it to HTTP 422 (or an `ok:false` reply on NATS) in the contract's
/// `{"error":{"code","message"}}` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    /// Which input was wrong, as a JSON path-ish name (`params.q`, `interval_secs`).
    pub field: String,
    /// A stable snake_case code (`out_of_range`, `unknown_field`...).
    pub code: &'static str,
    /// A human sentence saying what was wrong and what is accepted.
    pub message: String,
}

impl ValidationError {
    /// Builds an error for `field` with a stable `code` and a message.
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
        }
    }
}
