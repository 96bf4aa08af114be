//! Checks shared by the configuration types' `validate()`.
//!
//! Each returns the [`ConfigError`] that names the key, the refused value and
//! what would be accepted, so every schema reports the same kind of mistake
//! with the same words.

use std::ops::RangeInclusive;

use crate::error::ConfigError;
use crate::lstack::limits::UNIX_PREFIX_MAX_LEN;

/// `value` must lie in `range`.
pub(crate) fn check_range<T>(
    field: &'static str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<(), ConfigError>
where
    T: Copy + PartialOrd + Into<i64>,
{
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value: value.into(),
            min: (*range.start()).into(),
            max: (*range.end()).into(),
        })
    }
}

/// `value` must be one of `allowed`.
pub(crate) fn check_one_of(
    field: &'static str,
    value: i64,
    allowed: &'static [i64],
) -> Result<(), ConfigError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::NotOneOf {
            field,
            value,
            allowed,
        })
    }
}

/// A list must have a number of entries in `range`.
pub(crate) fn check_count(
    field: &'static str,
    count: usize,
    range: RangeInclusive<usize>,
) -> Result<(), ConfigError> {
    if range.contains(&count) {
        Ok(())
    } else {
        Err(ConfigError::CountOutOfRange {
            field,
            count,
            min: *range.start(),
            max: *range.end(),
        })
    }
}

/// `unix_prefix`, which lstack, ltran and `gazellectl -u` put in front of
/// their control sockets' names: at most [`UNIX_PREFIX_MAX_LEN`] characters
/// from `A-Z a-z 0-9 _ -`, so it can never leave the socket directory.
pub(crate) fn check_unix_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.len() <= UNIX_PREFIX_MAX_LEN
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(ConfigError::InvalidValue {
            field: "unix_prefix".into(),
            value: format!("{prefix:?}"),
            reason: format!("use at most {UNIX_PREFIX_MAX_LEN} characters from A-Z a-z 0-9 _ -"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_and_count_name_the_field() {
        check_range("n", 5u32, 1..=5).unwrap();
        let err = check_range("n", 6u32, 1..=5).unwrap_err();
        assert_eq!(err.to_string(), "n = 6 is out of range 1..=5");

        check_count("list", 2, 1..=2).unwrap();
        let err = check_count("list", 0, 1..=2).unwrap_err();
        assert_eq!(err.to_string(), "list has 0 entries; 1..=2 are allowed");
        assert_eq!(err.field(), Some("list"));

        check_one_of("m", 1, &[1]).unwrap();
        assert!(check_one_of("m", 2, &[1]).is_err());
    }

    #[test]
    fn unix_prefix_rules() {
        check_unix_prefix("").unwrap();
        check_unix_prefix("ltran_0-a").unwrap();
        check_unix_prefix(&"a".repeat(UNIX_PREFIX_MAX_LEN)).unwrap();
        for bad in ["a b", "../x", "é", &"a".repeat(UNIX_PREFIX_MAX_LEN + 1)] {
            let err = check_unix_prefix(bad).unwrap_err();
            assert_eq!(err.field(), Some("unix_prefix"));
            assert!(
                err.to_string()
                    .starts_with(&format!("unix_prefix = {bad:?}: use at most 32 ")),
                "{err}"
            );
        }
    }
}
