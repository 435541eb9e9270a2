//! Query parameters: the names a route accepts, checked (unknown or repeated → 400), and the
//! paging parameters every list route shares.

use std::collections::HashMap;

use newsflow_core::ValidationError;

use super::error::AppError;

/// Query parameters, checked against the names a route accepts (unknown or repeated → 400).
pub struct Params(HashMap<String, String>);

impl Params {
    /// Parses a raw query string (`application/x-www-form-urlencoded`: `+` is a space, and a
    /// `%` not followed by two hex digits stays as it is), accepting only `allowed` names.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, AppError> {
        let mut params = HashMap::new();
        for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                return Err(AppError::BadRequest {
                    code: "unknown_parameter",
                    message: format!(
                        "unknown query parameter {name:?}; this route accepts: {}",
                        allowed.join(", ")
                    ),
                });
            }
            if params
                .insert(name.clone().into_owned(), value.into_owned())
                .is_some()
            {
                return Err(AppError::BadRequest {
                    code: "repeated_parameter",
                    message: format!("query parameter {name:?} is given more than once"),
                });
            }
        }
        Ok(Self(params))
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `limit`: default 100, 1..=1000.
    pub fn limit(&self) -> Result<usize, AppError> {
        match self.get("limit") {
            None => Ok(100),
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(n),
                _ => Err(ValidationError::new(
                    "limit",
                    "out_of_range",
                    format!("limit must be a whole number from 1 to 1000, got {raw:?}"),
                )
                .into()),
            },
        }
    }

    /// `cursor`, decoded.
    pub fn cursor(&self) -> Result<Option<Vec<u8>>, AppError> {
        self.get("cursor")
            .map(|c| newsflow_core::cursor::decode(c).map_err(invalid_cursor))
            .transpose()
    }
}

/// A cursor this server did not issue (or no longer matches the route) is a malformed request.
pub fn invalid_cursor(error: ValidationError) -> AppError {
    AppError::BadRequest {
        code: "invalid_cursor",
        message: error.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(raw: &str, allowed: &[&str]) -> (&'static str, String) {
        match Params::parse(Some(raw), allowed) {
            Err(AppError::BadRequest { code, message }) => (code, message),
            Err(other) => panic!("{raw}: not a 400 but {other:?}"),
            Ok(_) => panic!("{raw}: accepted"),
        }
    }

    #[test]
    fn query_strings_are_decoded() {
        let params = Params::parse(
            Some("q=bitcoin+price&since=2026-11-20T08%3A00%3A00Z&job=a%2"),
            &["q", "since", "job"],
        )
        .expect("valid");
        assert_eq!(params.get("q"), Some("bitcoin price"));
        assert_eq!(params.get("since"), Some("2026-11-20T08:00:00Z"));
        assert_eq!(params.get("job"), Some("a%2"));
    }

    #[test]
    fn empty_pairs_bare_names_and_bad_escapes_decode_as_before() {
        let params =
            Params::parse(Some("&&q&job=%zz%41%&cursor="), &["q", "job", "cursor"]).expect("valid");
        assert_eq!(params.get("q"), Some(""));
        assert_eq!(params.get("job"), Some("%zzA%"));
        assert_eq!(params.get("cursor"), Some(""));
        let params = Params::parse(Some("q=%E2%82%AC+%FF"), &["q"]).expect("valid");
        assert_eq!(params.get("q"), Some("€ \u{FFFD}"));
        assert!(Params::parse(None, &[]).is_ok());
    }

    #[test]
    fn unknown_repeated_and_out_of_range_parameters_are_refused() {
        assert_eq!(
            refusal("colour=red", &["limit", "cursor"]),
            (
                "unknown_parameter",
                "unknown query parameter \"colour\"; this route accepts: limit, cursor".to_owned()
            )
        );
        assert_eq!(
            refusal("limit=1&li%6Dit=2", &["limit"]),
            (
                "repeated_parameter",
                "query parameter \"limit\" is given more than once".to_owned()
            )
        );
        for bad in ["0", "1001", "-1", "ten", ""] {
            let params = Params::parse(Some(&format!("limit={bad}")), &["limit"]).expect("parses");
            assert!(params.limit().is_err(), "{bad}");
        }
    }
}
