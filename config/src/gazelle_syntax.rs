//! gazelle's own configuration syntax (`lstack.conf`, `ltran.conf`).
//!
//! gazelle reads its files with libconfig. The subset its files use, and that
//! [`parse`] accepts, is:
//!
//! - settings `key = value` or `key=value` (libconfig's `key: value` too),
//!   each optionally ended by `;` or `,`; line breaks carry no meaning;
//! - keys made of letters, digits, `_` and `-`, starting with a letter or `_`;
//! - values: integers (`128`, `-1`, `0x1f`, an optional `L` suffix),
//!   `"strings"` with `\"`, `\\`, `\n`, `\t`, `\r`, `\f` and `\xNN` escapes
//!   (adjacent strings are joined, a string cannot span lines), `true`/`false`
//!   in any case, and lists `[a, b]` of those scalars, which may span lines
//!   and end with a trailing comma;
//! - comments `# ...`, `// ...` and `/* ... */`.
//!
//! Groups (`{}`), `( )` lists, floats and `@include` are refused: gazelle does
//! not use them. The result is a [`toml::Table`] (integers as
//! [`Value::Integer`], strings as [`Value::String`], lists as
//! [`Value::Array`]), which the config types then deserialize exactly as they
//! would a TOML file. Every error is `line N: ...`; no input makes the parser
//! panic, and it never recurses, so deep or long input cannot overflow the
//! stack.

use std::collections::BTreeMap;

use toml::{Table, Value};

use crate::error::ConfigError;

/// Parses gazelle `.conf` text (`lstack.conf`, `ltran.conf`) into a table of keys and values.
///
/// Duplicate keys are refused (libconfig does too). The values are not
/// interpreted: that is the config types' job.
pub fn parse(text: &str) -> Result<Table, ConfigError> {
    let mut parser = Parser {
        lexer: Lexer::new(text),
        peeked: None,
    };
    let mut table = Table::new();
    let mut first_seen: BTreeMap<String, usize> = BTreeMap::new();

    while let Some(token) = parser.next()? {
        let (key, key_line) = match token.kind {
            Kind::Word(key) => (key, token.line),
            other => {
                return Err(syntax(
                    token.line,
                    format!("expected key=value, found {}", other.describe()),
                ));
            }
        };
        match parser.next()? {
            Some(Token {
                kind: Kind::Assign, ..
            }) => {}
            Some(other) => {
                return Err(syntax(
                    other.line,
                    format!(
                        "expected key=value, found {} after key \"{key}\"",
                        other.kind.describe()
                    ),
                ));
            }
            None => {
                return Err(syntax(
                    key_line,
                    format!("expected key=value, found the end of the file after key \"{key}\""),
                ));
            }
        }
        let value = parser.value(&key, key_line)?;
        if let Some(Token {
            kind: Kind::Semicolon | Kind::Comma,
            ..
        }) = parser.peek()?
        {
            parser.next()?;
        }
        if let Some(first) = first_seen.get(&key) {
            return Err(syntax(
                key_line,
                format!("duplicate key \"{key}\" (first set on line {first})"),
            ));
        }
        first_seen.insert(key.clone(), key_line);
        table.insert(key, value);
    }
    Ok(table)
}

fn syntax(line: usize, message: String) -> ConfigError {
    ConfigError::Syntax { line, message }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// A key, or `true`/`false` in value position.
    Word(String),
    /// A run of number-like characters, checked when used as a value.
    Bare(String),
    /// A string literal with escapes resolved.
    Str(String),
    Assign,
    Open,
    Close,
    Comma,
    Semicolon,
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Self::Word(word) => format!("`{word}`"),
            Self::Bare(text) => format!("`{text}`"),
            Self::Str(text) => format!("string {text:?}"),
            Self::Assign => "`=`".into(),
            Self::Open => "`[`".into(),
            Self::Close => "`]`".into(),
            Self::Comma => "`,`".into(),
            Self::Semicolon => "`;`".into(),
        }
    }
}

#[derive(Debug)]
struct Token {
    kind: Kind,
    line: usize,
}

/// Splits the text into tokens. It only ever stops on ASCII bytes, which
/// never occur inside a multi-byte UTF-8 character, so every position it
/// slices at is a character boundary.
struct Lexer<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            // A byte-order mark is not part of the first key.
            text: text.strip_prefix('\u{feff}').unwrap_or(text),
            pos: 0,
            line: 1,
        }
    }

    fn byte(&self, offset: usize) -> Option<u8> {
        self.text.as_bytes().get(self.pos + offset).copied()
    }

    fn next_token(&mut self) -> Result<Option<Token>, ConfigError> {
        self.skip_space_and_comments()?;
        let Some(b) = self.byte(0) else {
            return Ok(None);
        };
        let line = self.line;
        let kind = match b {
            b'=' | b':' => self.punct(Kind::Assign),
            b'[' => self.punct(Kind::Open),
            b']' => self.punct(Kind::Close),
            b',' => self.punct(Kind::Comma),
            b';' => self.punct(Kind::Semicolon),
            b'"' => Kind::Str(self.string()?),
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                Kind::Word(self.take_while(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
            }
            b'0'..=b'9' | b'-' | b'+' | b'.' => Kind::Bare(self.take_while(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-')
            })),
            _ => {
                let found = self
                    .text
                    .get(self.pos..)
                    .and_then(|rest| rest.chars().next())
                    .unwrap_or(char::REPLACEMENT_CHARACTER);
                return Err(syntax(line, format!("unexpected character {found:?}")));
            }
        };
        Ok(Some(Token { kind, line }))
    }

    fn punct(&mut self, kind: Kind) -> Kind {
        self.pos += 1;
        kind
    }

    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> String {
        let start = self.pos;
        while self.byte(0).is_some_and(&keep) {
            self.pos += 1;
        }
        self.text[start..self.pos].to_owned()
    }

    fn skip_space_and_comments(&mut self) -> Result<(), ConfigError> {
        loop {
            match (self.byte(0), self.byte(1)) {
                (Some(b'\n'), _) => {
                    self.line += 1;
                    self.pos += 1;
                }
                (Some(b' ' | b'\t' | b'\r' | 0x0b | 0x0c), _) => self.pos += 1,
                (Some(b'#'), _) | (Some(b'/'), Some(b'/')) => {
                    while self.byte(0).is_some_and(|b| b != b'\n') {
                        self.pos += 1;
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    let start_line = self.line;
                    self.pos += 2;
                    loop {
                        match (self.byte(0), self.byte(1)) {
                            (None, _) => {
                                return Err(syntax(
                                    start_line,
                                    "unterminated /* comment (no closing */)".into(),
                                ));
                            }
                            (Some(b'*'), Some(b'/')) => {
                                self.pos += 2;
                                break;
                            }
                            (Some(b'\n'), _) => {
                                self.line += 1;
                                self.pos += 1;
                            }
                            _ => self.pos += 1,
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// Reads a string literal; the opening quote is at `pos`.
    fn string(&mut self) -> Result<String, ConfigError> {
        let line = self.line;
        let unterminated = || {
            syntax(
                line,
                "unterminated string (a string must end with \" on the line it starts)".into(),
            )
        };
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            let Some(b) = self.byte(0) else {
                return Err(unterminated());
            };
            self.pos += 1;
            match b {
                b'"' => break,
                b'\n' => return Err(unterminated()),
                b'\\' => {
                    let Some(escape) = self.byte(0) else {
                        return Err(unterminated());
                    };
                    self.pos += 1;
                    let resolved = match escape {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'f' => 0x0c,
                        b'x' => self.hex_escape(line)?,
                        b'\n' => return Err(unterminated()),
                        other => {
                            let shown = if other.is_ascii_graphic() {
                                format!("\\{}", char::from(other))
                            } else {
                                "\\ followed by a non-printing character".into()
                            };
                            return Err(syntax(
                                line,
                                format!(
                                    "unknown escape {shown} in string (use \\\", \\\\, \\n, \\t, \\r, \\f or \\xNN)"
                                ),
                            ));
                        }
                    };
                    bytes.push(resolved);
                }
                _ => bytes.push(b),
            }
        }
        String::from_utf8(bytes).map_err(|_| {
            syntax(
                line,
                "string is not valid UTF-8 once its \\x escapes are applied".into(),
            )
        })
    }

    fn hex_escape(&mut self, line: usize) -> Result<u8, ConfigError> {
        let digit = |b: Option<u8>| b.and_then(|b| char::from(b).to_digit(16));
        match (digit(self.byte(0)), digit(self.byte(1))) {
            (Some(high), Some(low)) => {
                self.pos += 2;
                let value = u8::try_from(high * 16 + low).unwrap_or(u8::MAX);
                if value == 0 {
                    return Err(syntax(line, "\\x00 is not allowed in a string".into()));
                }
                Ok(value)
            }
            _ => Err(syntax(
                line,
                "\\x in a string must be followed by two hex digits".into(),
            )),
        }
    }
}

/// Turns tokens into values, with one token of look-ahead.
struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token>,
}

impl Parser<'_> {
    fn next(&mut self) -> Result<Option<Token>, ConfigError> {
        match self.peeked.take() {
            Some(token) => Ok(Some(token)),
            None => self.lexer.next_token(),
        }
    }

    fn peek(&mut self) -> Result<Option<&Token>, ConfigError> {
        if self.peeked.is_none() {
            self.peeked = self.lexer.next_token()?;
        }
        Ok(self.peeked.as_ref())
    }

    /// The value after `key =`.
    fn value(&mut self, key: &str, key_line: usize) -> Result<Value, ConfigError> {
        let Some(token) = self.next()? else {
            return Err(syntax(
                key_line,
                format!("missing value for \"{key}\" at the end of the file"),
            ));
        };
        if token.kind == Kind::Open {
            return self.list(key, token.line);
        }
        self.scalar(key, token)
    }

    fn scalar(&mut self, key: &str, token: Token) -> Result<Value, ConfigError> {
        let line = token.line;
        match token.kind {
            Kind::Str(mut text) => {
                // libconfig joins adjacent string literals: "ab" "cd" == "abcd".
                while let Some(Token {
                    kind: Kind::Str(_), ..
                }) = self.peek()?
                {
                    if let Some(Token {
                        kind: Kind::Str(more),
                        ..
                    }) = self.next()?
                    {
                        text.push_str(&more);
                    }
                }
                Ok(Value::String(text))
            }
            Kind::Bare(text) => parse_integer(&text).map(Value::Integer).ok_or_else(|| {
                syntax(
                    line,
                    format!(
                        "value of \"{key}\": `{text}` is not an integer (strings need double quotes)"
                    ),
                )
            }),
            Kind::Word(word) if word.eq_ignore_ascii_case("true") => Ok(Value::Boolean(true)),
            Kind::Word(word) if word.eq_ignore_ascii_case("false") => Ok(Value::Boolean(false)),
            Kind::Open => Err(syntax(
                line,
                format!("value of \"{key}\": lists cannot be nested"),
            )),
            other => {
                let hint = if matches!(other, Kind::Word(_)) {
                    " (strings need double quotes)"
                } else {
                    ""
                };
                Err(syntax(
                    line,
                    format!(
                        "expected a value for \"{key}\" (an integer, a \"string\", true/false or a [list]), found {}{hint}",
                        other.describe()
                    ),
                ))
            }
        }
    }

    /// The rest of a list whose `[` was on `open_line`.
    fn list(&mut self, key: &str, open_line: usize) -> Result<Value, ConfigError> {
        let unterminated = || {
            syntax(
                open_line,
                format!("unterminated list for \"{key}\" (no closing `]`)"),
            )
        };
        let mut items = Vec::new();
        loop {
            // An item, or the end of the list (also right after a trailing comma).
            let Some(token) = self.next()? else {
                return Err(unterminated());
            };
            match token.kind {
                Kind::Close => break,
                Kind::Comma => {
                    return Err(syntax(
                        token.line,
                        format!("empty item in the list for \"{key}\""),
                    ));
                }
                _ => items.push(self.scalar(key, token)?),
            }
            // After an item: a comma or the end of the list.
            let Some(token) = self.next()? else {
                return Err(unterminated());
            };
            match token.kind {
                Kind::Comma => {}
                Kind::Close => break,
                other => {
                    return Err(syntax(
                        token.line,
                        format!(
                            "expected `,` or `]` in the list for \"{key}\", found {}",
                            other.describe()
                        ),
                    ));
                }
            }
        }
        Ok(Value::Array(items))
    }
}

/// A libconfig integer: optional sign, decimal or `0x` hex digits, optional
/// `L`/`LL` suffix. `None` if it is not one or does not fit in an `i64`.
fn parse_integer(text: &str) -> Option<i64> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let unsigned = unsigned
        .strip_suffix("LL")
        .or_else(|| unsigned.strip_suffix('L'))
        .unwrap_or(unsigned);
    let (radix, digits) = match unsigned
        .strip_prefix("0x")
        .or_else(|| unsigned.strip_prefix("0X"))
    {
        Some(hex) => (16, hex),
        None => (10, unsigned),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rstest::rstest;

    use super::*;

    fn parsed(text: &str) -> Table {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn error(text: &str) -> (usize, String) {
        match parse(text) {
            Ok(table) => panic!("{text:?} parsed as {table:?}"),
            Err(ConfigError::Syntax { line, message }) => (line, message),
            Err(other) => panic!("{text:?}: not a syntax error: {other}"),
        }
    }

    #[test]
    fn parses_gazelle_readme_example() {
        let text = r#"
dpdk_args=["--socket-mem", "2048,0,0,0", "--huge-dir", "/mnt/hugepages-2M", "--proc-type", "primary", "--legacy-mem", "--map-perfect"]

use_ltran=1
kni_switch=0

low_power_mode=0

num_cpus="2"
num_weakup="3"

numa_bind=1

host_addr="192.168.1.10"
mask_addr="255.255.255.0"
gateway_addr="192.168.1.1"
devices="aa:bb:cc:dd:ee:ff"
"#;
        let table = parsed(text);
        assert_eq!(table.len(), 11);
        assert_eq!(table["use_ltran"], Value::Integer(1));
        assert_eq!(table["num_cpus"], Value::String("2".into()));
        assert_eq!(table["host_addr"], Value::String("192.168.1.10".into()));
        assert_eq!(table["dpdk_args"].as_array().unwrap().len(), 8);
        assert_eq!(table["dpdk_args"][7], Value::String("--map-perfect".into()));
    }

    #[rstest]
    #[case("a=1", 1)]
    #[case("a = 1", 1)]
    #[case("a =1;", 1)]
    #[case("a: 1,", 1)]
    #[case("a=-1", -1)]
    #[case("a=+7", 7)]
    #[case("a=0x1F", 31)]
    #[case("a=-0x10", -16)]
    #[case("a=5L", 5)]
    #[case("a=5LL", 5)]
    #[case("a=9223372036854775807", i64::MAX)]
    #[case("a=-9223372036854775808", i64::MIN)]
    #[case("  \t a\t=\t1\t;\t", 1)]
    #[case("\u{feff}a=1", 1)]
    fn integers(#[case] text: &str, #[case] value: i64) {
        assert_eq!(parsed(text)["a"], Value::Integer(value));
    }

    #[rstest]
    #[case(r#"a="x""#, "x")]
    #[case(r#"a = "" "#, "")]
    #[case(
        r#"a="with # hash // and /* not a comment */""#,
        "with # hash // and /* not a comment */"
    )]
    #[case(r#"a="q\"uote\\back\tt\x41""#, "q\"uote\\back\ttA")]
    #[case(r#"a="ab" "cd"  "ef""#, "abcdef")]
    #[case("a=\"ü日本\"", "ü日本")]
    #[case(r#"a="\xc3\xbc""#, "ü")]
    fn strings(#[case] text: &str, #[case] value: &str) {
        assert_eq!(parsed(text)["a"], Value::String(value.into()));
    }

    #[test]
    fn booleans() {
        let table = parsed("a=true\nb=FALSE\nc=True");
        assert_eq!(table["a"], Value::Boolean(true));
        assert_eq!(table["b"], Value::Boolean(false));
        assert_eq!(table["c"], Value::Boolean(true));
    }

    #[test]
    fn comments_everywhere() {
        let text = "# hash comment\n\
                    // slash comment\n\
                    /* block\n comment\n over lines */ a = /* inline */ 1 # trailing\n\
                    b = 2 // trailing\n\
                    c /* odd but legal */ = \"x\"; /**/\n\
                    /* a *** b */ d = 3";
        let table = parsed(text);
        assert_eq!(table["a"], Value::Integer(1));
        assert_eq!(table["b"], Value::Integer(2));
        assert_eq!(table["c"], Value::String("x".into()));
        assert_eq!(table["d"], Value::Integer(3));
        assert_eq!(table.len(), 4);
    }

    #[test]
    fn multi_line_lists_and_trailing_commas() {
        let text = "dpdk_args = [\n\
                    \"--socket-mem\", \"2048,0,0,0\",   # memory\n\
                    // the hugepage mount\n\
                    \"--huge-dir\",\n\
                    \"/mnt/hugepages\",\n\
                    ]\n\
                    empty = []\n\
                    ints = [1, -2, 0x3,]\n\
                    one = [\"x\"];";
        let table = parsed(text);
        assert_eq!(
            table["dpdk_args"],
            Value::Array(
                ["--socket-mem", "2048,0,0,0", "--huge-dir", "/mnt/hugepages"]
                    .map(|s| Value::String(s.into()))
                    .to_vec()
            )
        );
        assert_eq!(table["empty"], Value::Array(vec![]));
        assert_eq!(
            table["ints"],
            Value::Array(vec![
                Value::Integer(1),
                Value::Integer(-2),
                Value::Integer(3)
            ])
        );
        assert_eq!(table["one"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn crlf_line_endings() {
        let table = parsed("a=1\r\nb=\"x\" # c\r\nc=[1,\r\n2]\r\n");
        assert_eq!(table["b"], Value::String("x".into()));
        assert_eq!(table.len(), 3);
        let (line, _) = error("a=1\r\nb=\r\n");
        assert_eq!(line, 2);
    }

    #[test]
    fn several_settings_on_one_line() {
        let table = parsed("a=1; b=\"x\" c=[1]");
        assert_eq!(table.len(), 3);
    }

    #[rstest]
    #[case(
        "a=1\nb=2\njust words\n",
        3,
        "expected key=value, found `words` after key \"just\""
    )]
    #[case(
        "a=1\n\n\n\n\n\nfoo\n",
        7,
        "expected key=value, found the end of the file after key \"foo\""
    )]
    #[case("a=1\n= 2", 2, "expected key=value, found `=`")]
    #[case("\"a\"=1", 1, "expected key=value, found string \"a\"")]
    #[case("a=1\n]", 2, "expected key=value, found `]`")]
    #[case("a=1;\n;", 2, "expected key=value, found `;`")]
    #[case("a=1\n5=1", 2, "expected key=value, found `5`")]
    #[case("a=", 1, "missing value for \"a\" at the end of the file")]
    #[case("a=\nb=1", 2, "expected a value for \"a\"")]
    #[case("a=;", 1, "expected a value for \"a\"")]
    #[case(
        "host_addr=192.168.1.10",
        1,
        "`192.168.1.10` is not an integer (strings need double quotes)"
    )]
    #[case("a=1.5", 1, "`1.5` is not an integer")]
    #[case("a=1e3", 1, "`1e3` is not an integer")]
    #[case("a=-", 1, "`-` is not an integer")]
    #[case("a=0x", 1, "`0x` is not an integer")]
    #[case("a=9223372036854775808", 1, "is not an integer")]
    #[case("a=99999999999999999999999", 1, "is not an integer")]
    #[case("devices=aa:bb", 1, "expected a value for \"devices\"")]
    #[case("a=yes", 1, "found `yes` (strings need double quotes)")]
    #[case("a=1\na=2", 2, "duplicate key \"a\" (first set on line 1)")]
    #[case("a=\"x", 1, "unterminated string")]
    #[case("a=\"x\nb=1\"", 1, "unterminated string")]
    #[case("a=1\nb=\"x\\", 2, "unterminated string")]
    #[case("a=\"\\q\"", 1, "unknown escape \\q")]
    #[case("a=\"\\x4\"", 1, "two hex digits")]
    #[case("a=\"\\x00\"", 1, "\\x00 is not allowed")]
    #[case("a=\"\\xff\"", 1, "not valid UTF-8")]
    #[case("a=1\n/* never\nclosed", 2, "unterminated /* comment")]
    #[case(
        "a=[1, 2\nb=3",
        2,
        "expected `,` or `]` in the list for \"a\", found `b`"
    )]
    #[case("a=[\n\"x\",\n", 1, "unterminated list for \"a\"")]
    #[case("a=[\"x\"", 1, "unterminated list for \"a\"")]
    #[case("a=[", 1, "unterminated list for \"a\"")]
    #[case("a=[,]", 1, "empty item in the list for \"a\"")]
    #[case("a=[1,,2]", 1, "empty item in the list for \"a\"")]
    #[case("a=[[1]]", 1, "lists cannot be nested")]
    #[case("a=[1 2]", 1, "expected `,` or `]`")]
    #[case("a={b=1}", 1, "unexpected character '{'")]
    #[case("a=(1)", 1, "unexpected character '('")]
    #[case("@include \"x\"", 1, "unexpected character '@'")]
    #[case("a=1\né=2", 2, "unexpected character 'é'")]
    #[case("a=1\n\u{0}", 2, "unexpected character '\\0'")]
    fn syntax_errors(#[case] text: &str, #[case] line: usize, #[case] message: &str) {
        let (got_line, got_message) = error(text);
        assert!(
            got_message.contains(message),
            "{text:?}: {got_message:?} lacks {message:?}"
        );
        assert_eq!(got_line, line, "{text:?}: {got_message}");
    }

    #[test]
    fn error_display_has_line_prefix() {
        let err = parse("a=1\nb=2\nc=3\nd=4\ne=5\nf=6\n???\n").unwrap_err();
        assert_eq!(err.to_string(), "line 7: unexpected character '?'");
    }

    fn gazelle_like_text() -> impl Strategy<Value = String> {
        let punctuation = proptest::sample::select(vec![
            "=", "\"", "[", "]", ",", ";", "\n", " ", "#", "//", "/*", "*/", "\\", "\\x", "key",
            "-1", "0x", "true", "é", "日",
        ]);
        let piece = prop_oneof![
            punctuation.prop_map(String::from),
            "[a-z0-9_]{1,4}",
            "\\PC{1,3}",
        ];
        prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_gazelle_like_text(text in gazelle_like_text()) {
            if let Err(e) = parse(&text) {
                let line = e.line().unwrap_or(0);
                prop_assert!(line >= 1 && line <= text.matches('\n').count() + 1, "{e}");
            }
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(text) = crate::format::decode_utf8(&bytes) {
                let _ = parse(text);
            }
        }

        #[test]
        fn integers_round_trip(n in any::<i64>()) {
            let table = parse(&format!("n = {n}")).unwrap();
            prop_assert_eq!(&table["n"], &Value::Integer(n));
        }

        #[test]
        fn strings_round_trip(s in "[^\"\\\\\n\u{0}]{0,30}") {
            let table = parse(&format!("s = \"{s}\"")).unwrap();
            prop_assert_eq!(&table["s"], &Value::String(s));
        }
    }
}
