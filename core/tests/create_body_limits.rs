//! Create bodies at the edges the freeze issue found: numbers too large for any field, and
//! control characters in NewsAPI parameters.

use newsflow_core::{JobSpec, ValidationError};
use serde_json::{json, Value};

fn refused(body: Value) -> ValidationError {
    JobSpec::from_create_request(&body).expect_err("refused")
}

#[test]
fn a_number_too_large_for_its_field_is_out_of_range_not_mistyped() {
    for (field, value) in [
        ("interval_secs", json!(1e30)),
        ("interval_secs", json!(18_446_744_073_709_551_615u64)),
        (
            "max_pages",
            serde_json::from_str::<Value>("18446744073709551616").expect("parses"),
        ),
        ("page_size", json!(-1e30)),
        ("interval_secs", json!(86_401)),
        ("page_size", json!(101)),
    ] {
        let error = refused(json!({"params":{"q":"x"}, field: value}));
        assert_eq!(error.code, "out_of_range", "{field}={value}: {error:?}");
        assert_eq!(error.field, field);
        assert!(
            error.message.contains("out of range"),
            "{field}={value}: {}",
            error.message
        );
    }
}

#[test]
fn a_fraction_is_still_the_wrong_type() {
    let error = refused(json!({"params":{"q":"x"}, "interval_secs": 1.5}));
    assert_eq!(error.code, "invalid_type");
}

#[test]
fn a_parameter_value_with_a_control_character_is_refused_naming_it() {
    for value in ["bit\u{0}coin", "a\u{7}b", "tab\there", "new\nline"] {
        let error = refused(json!({"params":{"q": value}}));
        assert_eq!(error.code, "control_character", "{value:?}");
        assert_eq!(error.field, "params.q");
        assert!(error.message.contains("U+"), "{}", error.message);
    }
}
