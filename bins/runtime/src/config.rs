//! Configuration errors, the same way in every program: one line on stderr naming the program
//! and the reason, and exit status 2, at once. Retrying cannot fix a bad flag, so a program
//! never starts its retry loops with one.

use std::fmt::Display;
use std::process::ExitCode;

/// The exit status of a program refused its configuration (as clap's own usage errors).
pub const CONFIG_ERROR_STATUS: u8 = 2;

/// Parses the command line into `C`. `--help` and `--version` print and give `Err(0)`; a
/// flag clap refuses gives one line on stderr and `Err(2)`, where clap alone would print a
/// usage block over several lines.
pub fn parse_flags<C: clap::Parser>(program: &str) -> Result<C, ExitCode> {
    C::try_parse().map_err(|error| {
        if error.use_stderr() {
            refuse(program, clap_reason(&error))
        } else {
            let _ = error.print();
            ExitCode::SUCCESS
        }
    })
}

/// Prints `program: reason` as one line on stderr and gives the exit status of a
/// configuration error, for `main` to return.
pub fn refuse(program: &str, reason: impl Display) -> ExitCode {
    crate::logging::stderr_line(&format!("{program}: {}", one_line(&reason.to_string())));
    ExitCode::from(CONFIG_ERROR_STATUS)
}

/// `text` on one line: surrounding blanks trimmed, line breaks and indentation become single
/// spaces.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The reason in a clap error: its first paragraph (what is wrong, and the arguments it
/// lists), without the `error:` prefix, the usage and the tips that follow.
fn clap_reason(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first_paragraph = rendered.split("\n\n").next().unwrap_or_default();
    let reason = one_line(first_paragraph);
    match reason.strip_prefix("error: ") {
        Some(rest) => rest.to_owned(),
        None => reason,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[arg(long, value_parser = clap::value_parser!(u64).range(10..))]
        interval_ms: u64,
        #[arg(long)]
        name: Option<String>,
    }

    #[test]
    fn several_lines_become_one() {
        assert_eq!(one_line("  a\n  b\tc\r\n\n d  "), "a b c d");
    }

    #[test]
    fn a_refused_value_is_one_line_naming_the_flag() {
        let error = Flags::try_parse_from(["p", "--interval-ms", "3"]).expect_err("refused");
        let reason = clap_reason(&error);
        assert!(
            reason.starts_with("invalid value '3' for '--interval-ms"),
            "{reason}"
        );
        assert!(
            !reason.contains('\n') && !reason.contains("Usage"),
            "{reason}"
        );
    }

    #[test]
    fn a_missing_flag_is_named_on_the_same_line() {
        let error = Flags::try_parse_from(["p"]).expect_err("refused");
        let reason = clap_reason(&error);
        assert!(reason.contains("--interval-ms"), "{reason}");
        assert!(!reason.contains('\n'), "{reason}");
    }

    #[test]
    fn an_unknown_flag_is_one_line_without_the_tip() {
        let error = Flags::try_parse_from(["p", "--interval-ms", "20", "--nmae", "x"])
            .expect_err("refused");
        let reason = clap_reason(&error);
        assert!(reason.contains("--nmae"), "{reason}");
        assert!(
            !reason.contains("tip") && !reason.contains('\n'),
            "{reason}"
        );
    }
}
