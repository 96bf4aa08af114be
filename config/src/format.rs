//! The two syntaxes a configuration file may use, and reading files.
//!
//! Whatever the syntax, a file is first parsed into a [`toml::Table`]; the
//! config types are deserialized from that table only, so ranges and types are
//! checked in one place for both syntaxes. The methods every config type has
//! for this (`from_toml_str`, `from_gazelle_str`, `load`, `load_from_env`,
//! `to_toml_string`, ...) are written once, by a crate-internal macro here.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use toml::Table;

use crate::error::ConfigError;
use crate::gazelle_syntax;

/// The syntax of a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML: `key = "value"`, `true`/`false`, `[...]` arrays.
    Toml,
    /// gazelle's libconfig-style `lstack.conf` / `ltran.conf` syntax (see
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

/// Largest configuration file read: far more than any real configuration
/// needs, small enough that a wrong path costs nothing.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads a configuration file: a regular file of at most
/// [`MAX_FILE_BYTES`]. Anything else is refused without reading it, so a
/// path such as `/dev/zero` or a FIFO can neither fill memory nor hang
/// the reader (the file is opened non-blocking, which a FIFO without a
/// writer needs, and its type checked on the open file).
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read as _};
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};

    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("it is {what}; a configuration must be a regular file"),
        ));
    }
    let too_big = |len: u64| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("it has {len} bytes; a configuration may have at most {MAX_FILE_BYTES} bytes"),
        )
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        // It grew while we read it.
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads `path` (see [`read_file`]) and parses it in the syntax its
/// extension implies. Errors name the file.
pub(crate) fn read_table(path: &Path) -> Result<Table, ConfigError> {
    let bytes = read_file(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    decode_utf8(&bytes)
        .and_then(|text| Format::from_path(path).parse(text))
        .map_err(|e| e.in_file(path))
}

/// The file a configuration type's `path_from_env` names: the environment
/// variable's value if it is set and not empty, else `default`.
pub(crate) fn conf_path(env_value: Option<OsString>, default: &str) -> PathBuf {
    match env_value {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => PathBuf::from(default),
    }
}

/// Writes, once for every configuration type, the methods that read it from
/// text, a table or a file and write it back as TOML.
///
/// The type must implement serde's `Deserialize` and `Serialize` and have
/// `fn validate(&self) -> Result<(), ConfigError>`; `env` and `default_path`
/// name its `&str` constants for the environment variable and the default
/// file, and `gazelle_file` is gazelle's name for the file (`"lstack.conf"`).
/// Every method goes through [`Format::parse`] and the type's `validate()`,
/// so both syntaxes are checked in one place.
macro_rules! config_file_api {
    (
        type = $ty:ident,
        gazelle_file = $file:literal,
        env = $env:ident,
        default_path = $default:ident $(,)?
    ) => {
        impl $ty {
            /// Parses and validates a TOML document.
            pub fn from_toml_str(text: &str) -> Result<Self, $crate::ConfigError> {
                Self::from_table($crate::Format::Toml.parse(text)?)
            }

            #[doc = concat!("Parses and validates text in gazelle's `", $file, "` syntax.")]
            pub fn from_gazelle_str(text: &str) -> Result<Self, $crate::ConfigError> {
                Self::from_table($crate::Format::Gazelle.parse(text)?)
            }

            /// Builds and validates a configuration from already-parsed keys
            /// and values (what [`Format::parse`](crate::Format::parse)
            /// returns).
            pub fn from_table(table: ::toml::Table) -> Result<Self, $crate::ConfigError> {
                let config: Self = $crate::de::from_table(table)?;
                config.validate()?;
                Ok(config)
            }

            /// Reads, parses and validates a file: `.conf` files in gazelle
            /// syntax, anything else as TOML. Errors name the file.
            pub fn load(path: impl AsRef<::std::path::Path>) -> Result<Self, $crate::ConfigError> {
                let path = path.as_ref();
                Self::from_table($crate::format::read_table(path)?).map_err(|e| e.in_file(path))
            }

            #[doc = concat!(
                        "Loads the file named by the environment variable [`", stringify!($env),
                        "`], or [`", stringify!($default), "`] (see [`", stringify!($ty),
                        "::path_from_env`])."
                    )]
            pub fn load_from_env() -> Result<Self, $crate::ConfigError> {
                Self::load(Self::path_from_env())
            }

            #[doc = concat!(
                        "The file [`", stringify!($ty), "::load_from_env`] reads: the value of [`",
                        stringify!($env), "`] if it is set and not empty, else [`",
                        stringify!($default), "`]."
                    )]
            pub fn path_from_env() -> ::std::path::PathBuf {
                $crate::format::conf_path(::std::env::var_os($env), $default)
            }

            /// The configuration as a TOML document that loads back to an
            /// equal value.
            pub fn to_toml_string(&self) -> String {
                // Every field is a string, integer, boolean or array of
                // strings, and absent options are skipped, so TOML can always
                // represent it.
                ::toml::to_string(self).unwrap_or_else(|e| {
                    unreachable!("{} always serializes to TOML: {e}", stringify!($ty))
                })
            }
        }

        #[cfg(test)]
        impl $crate::test_support::Schema for $ty {
            fn from_toml_str(text: &str) -> Result<Self, $crate::ConfigError> {
                <$ty>::from_toml_str(text)
            }
            fn from_gazelle_str(text: &str) -> Result<Self, $crate::ConfigError> {
                <$ty>::from_gazelle_str(text)
            }
            fn load(path: &::std::path::Path) -> Result<Self, $crate::ConfigError> {
                <$ty>::load(path)
            }
            fn to_toml_string(&self) -> String {
                <$ty>::to_toml_string(self)
            }
            fn validate(&self) -> Result<(), $crate::ConfigError> {
                <$ty>::validate(self)
            }
        }
    };
}

pub(crate) use config_file_api;

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

    /// `/dev/zero` would be read until the process is out of memory and a
    /// FIFO without a writer would block forever: both are refused at once,
    /// as are directories and files over the limit.
    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |path: &Path, says: &str| {
            let err = read_file(path).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains(says), "{}: {err}", path.display());
        };
        refused(Path::new("/dev/zero"), "it is a character device");
        refused(dir.path(), "it is a directory");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        refused(&fifo, "it is a FIFO");
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        refused(&big, &format!("at most {MAX_FILE_BYTES} bytes"));
        let fine = dir.path().join("fine.toml");
        std::fs::write(&fine, vec![b'#'; MAX_FILE_BYTES as usize]).unwrap();
        assert_eq!(read_file(&fine).unwrap().len() as u64, MAX_FILE_BYTES);
        // Through a symlink, the file it names is checked.
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        refused(&link, "it is a character device");
        // And loading a config says which file.
        let err = crate::LstackConfig::load(&link).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot read {}: it is a character device",
                link.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn utf8_errors_have_lines() {
        let err = decode_utf8(b"a = 1\nb = \"\xff\"\n").unwrap_err();
        assert_eq!(err.to_string(), "line 2: the file is not valid UTF-8 text");
        assert_eq!(decode_utf8("é = 1".as_bytes()).unwrap(), "é = 1");
        assert_eq!(line_of(b"ab", 99), 1);
    }

    #[test]
    fn env_path_falls_back_to_default() {
        let default = "/etc/gazelle/x.toml";
        assert_eq!(conf_path(None, default), Path::new(default));
        assert_eq!(conf_path(Some("".into()), default), Path::new(default));
        assert_eq!(
            conf_path(Some("./x.conf".into()), default),
            Path::new("./x.conf")
        );
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
