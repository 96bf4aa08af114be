//! The two syntaxes a configuration file may use, and reading files.
//!
//! Whatever the syntax, a file is first parsed into a [`toml::Table`]; the
//! config types are deserialized from that table only, so ranges and types are
//! checked in one place for both syntaxes.

use std::path::Path;

use toml::Table;

use crate::error::ConfigError;
use crate::gazelle_syntax;

/// The syntax of a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML: `key = "value"`, `true`/`false`, `[...]` arrays.
    Toml,
    /// gazelle's libconfig-style `lstack.conf` syntax (see
    /// [`gazelle_syntax`]).
    Gazelle,
}

impl Format {
    /// The syntax a file name implies: `.conf` (any case) is gazelle syntax,
    /// anything else TOML.
    pub fn from_path(path: &Path) -> Self {
        match path.extension() {
            Some(ext) if ext.eq_ignore_ascii_case("conf") => Self::Gazelle,
            _ => Self::Toml,
        }
    }

    /// Parses `text` into a table of keys and values, without interpreting
    /// them. Syntax errors carry a line number.
    pub fn parse(self, text: &str) -> Result<Table, ConfigError> {
        match self {
            Self::Toml => parse_toml(text),
            Self::Gazelle => gazelle_syntax::parse(text),
        }
    }
}

fn parse_toml(text: &str) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|e| match e.span() {
        Some(span) => ConfigError::Syntax {
            line: line_of(text.as_bytes(), span.start),
            // toml's messages may span lines ("invalid array\nexpected `]`").
            message: e
                .message()
                .lines()
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join(", "),
        },
        None => ConfigError::Malformed {
            message: e.to_string(),
        },
    })
}

/// 1-based line number of byte `offset` in `bytes`.
pub(crate) fn line_of(bytes: &[u8], offset: usize) -> usize {
    let end = offset.min(bytes.len());
    1 + bytes[..end].iter().filter(|&&b| b == b'\n').count()
}

/// Checks that `bytes` are UTF-8, reporting the line of the first bad byte.
pub fn decode_utf8(bytes: &[u8]) -> Result<&str, ConfigError> {
    std::str::from_utf8(bytes).map_err(|e| ConfigError::NotUtf8 {
        line: line_of(bytes, e.valid_up_to()),
    })
}

/// Reads `path` and parses it in the syntax its extension implies. Errors
/// name the file.
pub(crate) fn read_table(path: &Path) -> Result<Table, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    decode_utf8(&bytes)
        .and_then(|text| Format::from_path(path).parse(text))
        .map_err(|e| e.in_file(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_picks_syntax() {
        assert_eq!(
            Format::from_path(Path::new("/etc/gazelle/lstack.conf")),
            Format::Gazelle
        );
        assert_eq!(Format::from_path(Path::new("x.CONF")), Format::Gazelle);
        assert_eq!(Format::from_path(Path::new("x.toml")), Format::Toml);
        assert_eq!(Format::from_path(Path::new("conf")), Format::Toml);
        assert_eq!(Format::from_path(Path::new("x.conf.bak")), Format::Toml);
    }

    #[test]
    fn toml_syntax_errors_have_lines() {
        let err = Format::Toml.parse("a = 1\nb = 2\nc = = 3\n").unwrap_err();
        assert_eq!(err.line(), Some(3), "{err}");
        assert!(err.to_string().starts_with("line 3: "), "{err}");

        let err = Format::Toml.parse("a = [1,\n2\n").unwrap_err();
        assert!(!err.to_string().contains('\n'), "{err}");

        let err = Format::Toml.parse("a = 1\na = 2\n").unwrap_err();
        assert_eq!(err.line(), Some(2), "{err}");
    }

    #[test]
    fn utf8_errors_have_lines() {
        let err = decode_utf8(b"a = 1\nb = \"\xff\"\n").unwrap_err();
        assert_eq!(err.to_string(), "line 2: the file is not valid UTF-8 text");
        assert_eq!(decode_utf8("é = 1".as_bytes()).unwrap(), "é = 1");
        assert_eq!(line_of(b"ab", 99), 1);
    }

    #[test]
    fn read_errors_name_the_file() {
        let err = read_table(Path::new("/nonexistent/gazelle-config/lstack.conf")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/gazelle-config/lstack.conf: "),
            "{err}"
        );
    }
}
