//! From a parsed file to a configuration struct, naming the key in every error.
//!
//! Both syntaxes (TOML and gazelle's `.conf`) are first turned into a
//! [`toml::Table`]. [`from_table`] then runs the struct's serde `Deserialize`
//! over that table through a small deserializer that remembers which key it
//! is on, so a type error deep inside a value still comes out as
//! `key = value: what was wrong`, and unknown or missing keys become
//! [`ConfigError::UnknownKey`] / [`ConfigError::MissingKey`] instead of serde's
//! generic text. The helpers at the bottom ([`flag`], [`separated_list`]) accept
//! gazelle's spellings of values next to the natural TOML ones.

use std::fmt::{self, Display};
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, Visitor,
};
use serde::Deserialize;
use toml::{Table, Value};

use crate::error::ConfigError;
use crate::value::{MacAddr, PortMask};

/// Deserializes `T` from `table`, reporting errors by key.
pub(crate) fn from_table<T: DeserializeOwned>(table: Table) -> Result<T, ConfigError> {
    T::deserialize(TableDeserializer(table)).map_err(|KeyedError(e)| e)
}

/// The error type seen by serde while walking the table: a [`ConfigError`]
/// that serde's own constructors (`unknown_field`, `missing_field`) fill in.
#[derive(Debug)]
struct KeyedError(ConfigError);

impl Display for KeyedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for KeyedError {}

impl de::Error for KeyedError {
    fn custom<T: Display>(msg: T) -> Self {
        Self(ConfigError::Malformed {
            message: msg.to_string(),
        })
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self(ConfigError::UnknownKey {
            key: field.to_owned(),
            allowed: expected,
        })
    }

    fn missing_field(field: &'static str) -> Self {
        Self(ConfigError::MissingKey { key: field })
    }
}

struct TableDeserializer(Table);

impl<'de> Deserializer<'de> for TableDeserializer {
    type Error = KeyedError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyedError> {
        visitor.visit_map(Entries {
            entries: self.0.into_iter(),
            current: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// Walks the table's entries, keeping the current key for error messages.
struct Entries {
    entries: <Table as IntoIterator>::IntoIter,
    current: Option<(String, Value)>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = KeyedError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, KeyedError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let field = seed.deserialize(key.as_str().into_deserializer())?;
        self.current = Some((key, value));
        Ok(Some(field))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, KeyedError> {
        let Some((key, value)) = self.current.take() else {
            return Err(de::Error::custom("a value was asked for before its key"));
        };
        let shown = value.clone();
        seed.deserialize(value).map_err(|e| {
            KeyedError(ConfigError::InvalidValue {
                field: key,
                value: shown.to_string(),
                reason: e.message().to_owned(),
            })
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// A boolean written either as TOML `true`/`false` or as gazelle's `1`/`0`.
pub(crate) fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    struct FlagVisitor;

    impl Visitor<'_> for FlagVisitor {
        type Value = bool;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true/false or 1/0")
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
            match v {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(E::invalid_value(Unexpected::Signed(v), &self)),
            }
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
            match v {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
            }
        }
    }

    deserializer.deserialize_any(FlagVisitor)
}

/// A list written either as a list or, as gazelle does, as one string whose
/// items are separated by characters for which `is_separator` is true. Items
/// are trimmed and empty ones skipped, so `"a; b;"` is `["a", "b"]`.
/// `expecting` describes both forms for error messages.
pub(crate) fn separated_list<'de, D, T>(
    deserializer: D,
    is_separator: fn(char) -> bool,
    expecting: &'static str,
) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
    T::Err: Display,
{
    struct ListVisitor<T> {
        is_separator: fn(char) -> bool,
        expecting: &'static str,
        item: PhantomData<T>,
    }

    impl<'de, T> Visitor<'de> for ListVisitor<T>
    where
        T: Deserialize<'de> + FromStr,
        T::Err: Display,
    {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            text.split(self.is_separator)
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(|part| part.parse().map_err(E::custom))
                .collect()
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<T>()? {
                items.push(item);
            }
            Ok(items)
        }
    }

    deserializer.deserialize_any(ListVisitor {
        is_separator,
        expecting,
        item: PhantomData,
    })
}

/// MAC addresses as a list of strings or, as gazelle's `lstack.conf` writes
/// them, one string separated by `;`.
pub(crate) fn mac_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<MacAddr>, D::Error> {
    separated_list(
        deserializer,
        |c| c == ';',
        "a list of MAC address strings, or one string of MAC addresses separated by ';'",
    )
}

/// MAC addresses as a list of strings or, as gazelle's `ltran.conf` writes
/// them, one string separated by `,`.
pub(crate) fn comma_mac_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<MacAddr>, D::Error> {
    separated_list(
        deserializer,
        |c| c == ',',
        "a list of MAC address strings, or one string of MAC addresses separated by ','",
    )
}

/// Port masks as a list of strings or, as gazelle's `ltran.conf` writes them,
/// one string separated by `,`.
pub(crate) fn port_mask_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<PortMask>, D::Error> {
    separated_list(
        deserializer,
        |c| c == ',',
        "a list of port mask strings, or one string of port masks separated by ','",
    )
}

/// Program arguments as a list of strings or, as gazelle's
/// `forward_kit_args` writes them, one string split at whitespace (with no
/// quoting, as in gazelle: an argument containing a space needs the list).
pub(crate) fn argument_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    separated_list(
        deserializer,
        char::is_whitespace,
        "a list of argument strings, or one string of arguments separated by spaces",
    )
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        count: u32,
        #[serde(default, deserialize_with = "flag")]
        on: bool,
        #[serde(default, deserialize_with = "mac_list")]
        macs: Vec<MacAddr>,
        name: Option<String>,
    }

    fn load(text: &str) -> Result<Sample, ConfigError> {
        from_table(text.parse::<Table>().unwrap())
    }

    #[test]
    fn accepts_flags_and_mac_spellings() {
        let s =
            load("count = 3\non = 1\nmacs = \"02:00:00:00:00:01; 02:00:00:00:00:02;\"").unwrap();
        assert!(s.on);
        assert_eq!(s.macs.len(), 2);
        let t = load("count = 3\non = true\nmacs = [\"02:00:00:00:00:01\", \"02:00:00:00:00:02\"]")
            .unwrap();
        assert_eq!(s, t);
        assert!(!load("count = 3\non = 0").unwrap().on);
        assert!(load("count = 3\nmacs = \"\"").unwrap().macs.is_empty());
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Lists {
        #[serde(default, deserialize_with = "comma_mac_list")]
        macs: Vec<MacAddr>,
        #[serde(default, deserialize_with = "port_mask_list")]
        masks: Vec<PortMask>,
        #[serde(default, deserialize_with = "argument_list")]
        args: Vec<String>,
    }

    fn lists(text: &str) -> Result<Lists, ConfigError> {
        from_table(text.parse::<Table>().unwrap())
    }

    #[test]
    fn lists_in_one_string_or_as_lists() {
        let joined = lists(
            "macs = \"02:00:00:00:00:01, 02:00:00:00:00:02\"\n\
             masks = \"0x3,0xc,\"\n\
             args = \" -l 0,1\t--huge-dir  /mnt/h \"",
        )
        .unwrap();
        let listed = lists(
            "macs = [\"02:00:00:00:00:01\", \"02:00:00:00:00:02\"]\n\
             masks = [\"0x3\", \"0xc\"]\n\
             args = [\"-l\", \"0,1\", \"--huge-dir\", \"/mnt/h\"]",
        )
        .unwrap();
        assert_eq!(joined, listed);
        assert_eq!(joined.masks[1].ports().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(joined.args, ["-l", "0,1", "--huge-dir", "/mnt/h"]);
        // Only the list form can carry an argument with a space in it.
        let spaced = lists("args = [\"--vdev\", \"net_tap0,iface=a b\"]").unwrap();
        assert_eq!(spaced.args[1], "net_tap0,iface=a b");
        assert_eq!(lists("args = \"\"").unwrap().args, Vec::<String>::new());

        let err = lists("masks = \"0x3;0xc\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "masks = \"0x3;0xc\": not a port mask like \"0x3\": write it as 0x followed by hex digits"
        );
        let err = lists("macs = \"02:00:00:00:00:01;02:00:00:00:00:02\"").unwrap_err();
        assert_eq!(err.field(), Some("macs"));
        let err = lists("args = [\"-l\", 1]").unwrap_err();
        assert_eq!(err.field(), Some("args"));
        let err = lists("args = 5").unwrap_err();
        assert!(err.to_string().ends_with("expected a list of argument strings, or one string of arguments separated by spaces"), "{err}");
    }

    #[test]
    fn type_errors_name_the_key_and_value() {
        let err = load("count = \"x\"").unwrap_err();
        assert_eq!(err.field(), Some("count"));
        assert!(err.to_string().starts_with("count = \"x\": "), "{err}");

        let err = load("count = -1").unwrap_err();
        assert!(err.to_string().starts_with("count = -1: "), "{err}");

        let err = load("count = 1\non = 2").unwrap_err();
        assert_eq!(
            err.to_string(),
            "on = 2: invalid value: integer `2`, expected true/false or 1/0"
        );

        let err = load("count = 1\non = \"yes\"").unwrap_err();
        assert_eq!(err.field(), Some("on"));

        let err = load("count = 1\nmacs = [\"02:00:00:00:00:01\", 5]").unwrap_err();
        assert_eq!(err.field(), Some("macs"));

        let err = load("count = 1\nname = [1]").unwrap_err();
        assert_eq!(err.field(), Some("name"));
    }

    #[test]
    fn unknown_and_missing_keys() {
        let err = load("count = 1\nfoo = 2").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown key \"foo\" (allowed keys: count, on, macs, name)"
        );
        let err = load("on = 1").unwrap_err();
        assert_eq!(err.to_string(), "missing required key \"count\"");
        assert_eq!(err.field(), Some("count"));
    }
}
