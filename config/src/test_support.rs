//! Helpers shared by the configuration schemas' unit tests, generic over the
//! schemas through [`Schema`].

use std::fmt::Debug;
use std::path::Path;

use proptest::test_runner::TestCaseError;

use crate::error::ConfigError;

/// The API `config_file_api!` gives every configuration type, as a trait so
/// that tests can be written once for all of them (the macro implements it).
pub(crate) trait Schema: Sized + Debug + PartialEq {
    fn from_toml_str(text: &str) -> Result<Self, ConfigError>;
    fn from_gazelle_str(text: &str) -> Result<Self, ConfigError>;
    fn load(path: &Path) -> Result<Self, ConfigError>;
    fn to_toml_string(&self) -> String;
    fn validate(&self) -> Result<(), ConfigError>;
}

/// A schema's smallest valid file, in TOML and in gazelle syntax, one
/// `key = value` per line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Minimal {
    pub(crate) toml: &'static str,
    pub(crate) conf: &'static str,
}

impl Minimal {
    /// The TOML file with `extra` lines (replacing the keys they set).
    pub(crate) fn toml_with<T: Schema>(self, extra: &str) -> Result<T, ConfigError> {
        T::from_toml_str(&with_lines(self.toml, extra))
    }

    /// The gazelle-syntax file with `extra` lines (replacing the keys they
    /// set).
    pub(crate) fn conf_with<T: Schema>(self, extra: &str) -> Result<T, ConfigError> {
        T::from_gazelle_str(&with_lines(self.conf, extra))
    }

    /// The file in both syntaxes with `field` set to `toml_value` (TOML) and
    /// `conf_value` (gazelle syntax).
    pub(crate) fn with<T: Schema>(
        self,
        field: &str,
        toml_value: &str,
        conf_value: &str,
    ) -> [Result<T, ConfigError>; 2] {
        [
            self.toml_with(&format!("{field} = {toml_value}")),
            self.conf_with(&format!("{field}={conf_value}")),
        ]
    }

    /// The file in both syntaxes without the line that sets `field`.
    pub(crate) fn without<T: Schema>(self, field: &str) -> [Result<T, ConfigError>; 2] {
        [
            T::from_toml_str(&without_key(self.toml, field)),
            T::from_gazelle_str(&without_key(self.conf, field)),
        ]
    }
}

/// Loads `examples/{name}.conf` and `examples/{name}.toml`, from text and as
/// files (whose extension picks the syntax), checks that all four agree and
/// returns the configuration.
#[track_caller]
pub(crate) fn load_examples<T: Schema>(name: &str) -> T {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let (conf, toml) = (
        dir.join(format!("{name}.conf")),
        dir.join(format!("{name}.toml")),
    );
    let text = |path: &Path| std::fs::read_to_string(path).unwrap();
    let from_conf = T::from_gazelle_str(&text(&conf)).unwrap();
    assert_eq!(T::from_toml_str(&text(&toml)).unwrap(), from_conf);
    assert_eq!(T::load(&conf).unwrap(), from_conf);
    assert_eq!(T::load(&toml).unwrap(), from_conf);
    from_conf
}

/// Fails unless `config` validates and `to_toml_string` loads back to it.
pub(crate) fn toml_round_trip<T: Schema>(config: &T) -> Result<(), TestCaseError> {
    config
        .validate()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let text = config.to_toml_string();
    let back = T::from_toml_str(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    if &back == config {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!(
            "{back:?} != {config:?}\n{text}"
        )))
    }
}

/// The key a `key = value` (or `key=value`) line sets.
fn key_of(line: &str) -> &str {
    line.split('=').next().unwrap_or("").trim()
}

/// `base` (one `key = value` per line) followed by the lines of `extra`; a
/// line of `base` setting a key that `extra` sets is dropped, so `extra` can
/// replace a required key.
fn with_lines(base: &str, extra: &str) -> String {
    let replaced: Vec<&str> = extra.lines().map(key_of).collect();
    let kept: String = base
        .lines()
        .filter(|line| !replaced.contains(&key_of(line)))
        .map(|line| format!("{line}\n"))
        .collect();
    format!("{kept}{extra}\n")
}

/// `base` without the line that sets `key`.
fn without_key(base: &str, key: &str) -> String {
    base.lines()
        .filter(|line| key_of(line) != key)
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Asserts that every result is an error attributed to `field` whose
/// message starts with `starts` and contains `contains`.
#[track_caller]
pub(crate) fn assert_refused<T: Debug>(
    results: impl IntoIterator<Item = Result<T, ConfigError>>,
    field: &str,
    starts: &str,
    contains: &str,
) {
    for result in results {
        let err = result.unwrap_err();
        assert_eq!(err.field(), Some(field), "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with(starts),
            "{message} lacks prefix {starts}"
        );
        assert!(message.contains(contains), "{message} lacks {contains}");
    }
}

#[test]
fn lines_replace_and_drop_keys() {
    let base = "a = 1\nab = 2\nb=3\n";
    assert_eq!(
        with_lines(base, "a = 5\nc = 6"),
        "ab = 2\nb=3\na = 5\nc = 6\n"
    );
    assert_eq!(without_key(base, "a"), "ab = 2\nb=3\n");
    assert_eq!(without_key(base, "b"), "a = 1\nab = 2\n");
}

/// The top-level keys of a TOML text as [`crate::format`] writes it, in
/// order (lines `key = value`; continuation lines of arrays are indented).
pub(crate) fn top_level_keys(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
        .filter(|k| !k.starts_with(' ') && !k.starts_with('"'))
        .collect()
}
