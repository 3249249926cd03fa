//! The one YAML reader of canopy, for `app.yaml` (hostile: it comes from the
//! repository) and `canopy.yaml` (the operator's). It owns the parser's options,
//! so both files follow the same rules, and turns a parse failure into a
//! location (line, column) and a one-line message that starts with the path of
//! the offending value (`repo.auth: ...`, `include[0]: ...`).
//!
//! The options keep the behaviour canopy has always had (YAML 1.2 scalars, no
//! merge keys, serde's own duplicate-field errors) and bound what a small hostile
//! document can cost: nesting depth, alias replays and node counts are capped by
//! the parser's budget, on top of the size caps the callers apply before parsing.
//! Callers own their error types; this module knows nothing of files.

use std::borrow::Cow;
use std::ops::ControlFlow;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_path_to_error::{Path, Segment};
use serde_saphyr::granit_parser::{ErrorKind, ScanError};
use serde_saphyr::{
    Budget, DefaultMessageFormatter, DuplicateKeyPolicy, Error, ExternalMessageSource,
    MergeKeyPolicy, MessageFormatter, NonFiniteFloatPolicy, Options,
};

/// Deepest nesting of collections accepted. app.yaml needs 3 levels and the
/// config file 5. Flow collections (`[[[...`) are counted before parsing too:
/// a linear scan that refuses them whatever the parser would cost.
pub(crate) const MAX_DEPTH: usize = 32;

/// Events an alias may replay in one document, in total. A real file uses a few
/// aliases of small lists; a billion-laughs document hits this long before its
/// expansion costs anything.
const MAX_REPLAYED_EVENTS: usize = 100_000;

/// A failed parse: where (1-based, when known) and why, with the value's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

/// Parses one YAML document into `T`. An empty or comment-only document is
/// `None`, so a file can be a bare marker. Flow collections nested deeper than
/// [`MAX_DEPTH`] are refused before parsing, in linear time.
pub(crate) fn from_str<T: DeserializeOwned>(text: &str) -> Result<Option<T>, YamlError> {
    check_flow_depth(text)?;
    let mut path = None;
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options(), |d| {
        serde_path_to_error::deserialize(d).map_err(|e| {
            path = Some(e.path().clone());
            e.into_inner()
        })
    });
    parsed.map_err(|error| {
        let location = error.location();
        let line = location.map(|l| to_usize(l.line()));
        let column = location.map(|l| to_usize(l.column()));
        let error = innermost(&error);
        let message = match error {
            // A syntax error is about the text, not about a value: no path,
            // as in libyaml's messages.
            Error::ExternalMessage { source, .. } => match &**source {
                ExternalMessageSource::Parser(scan) => syntax_message(text, scan, line, column),
                _ => Messages.format_message(error).into_owned(),
            },
            _ => {
                let message = Messages.format_message(error);
                match path.and_then(|p| path_text(&p, error)) {
                    Some(path) => format!("{path}: {message}"),
                    None => message.into_owned(),
                }
            }
        };
        YamlError {
            line,
            column,
            message: crate::one_line(&message),
        }
    })
}

/// For `T` that is a collection or a struct of defaults: an empty value
/// (`include:`, `redis:`, or `~`) reads as an empty one, `T::default()`.
/// `#[serde(default, deserialize_with = "crate::yaml::null_as_empty")]`.
pub(crate) fn null_as_empty<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Default,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// The parser's message. When a flow collection is left open, says where it
/// started, as libyaml did: the error is found where the text stops making
/// sense, which may be far from the bracket the author forgot to close.
fn syntax_message(
    text: &str,
    scan: &ScanError,
    line: Option<usize>,
    column: Option<usize>,
) -> String {
    let what = match scan.kind() {
        ErrorKind::ExpectedFlowMappingSeparator => {
            Some(("did not find expected ',' or '}'", "flow mapping"))
        }
        ErrorKind::UnexpectedEofFlowMapping => Some(("unexpected end of input", "flow mapping")),
        ErrorKind::ExpectedFlowSequenceSeparator => {
            Some(("did not find expected ',' or ']'", "flow sequence"))
        }
        ErrorKind::UnexpectedEofFlowSequence => Some(("unexpected end of input", "flow sequence")),
        _ => None,
    };
    let start = line
        .zip(column)
        .and_then(|at| unclosed_flow_start(text, at));
    match (what, start) {
        (Some((problem, collection)), Some((line, column))) => {
            format!("{problem}, while parsing a {collection} at line {line} column {column}")
        }
        _ => scan.kind().to_string(),
    }
}

/// Refuses flow collections nested deeper than [`MAX_DEPTH`]. Quoted scalars
/// and comments are skipped; a bracket inside a plain scalar may count, which can
/// only make the check stricter for absurd documents.
fn check_flow_depth(text: &str) -> Result<(), YamlError> {
    let mut depth = 0usize;
    let mut refused = Ok(());
    for_each_flow_bracket(text, |bracket, line, column| {
        if matches!(bracket, '[' | '{') {
            depth += 1;
            if depth > MAX_DEPTH {
                refused = Err(YamlError {
                    line: Some(line),
                    column: Some(column),
                    message: format!("collections nested deeper than {MAX_DEPTH} levels"),
                });
                return ControlFlow::Break(());
            }
        } else {
            depth = depth.saturating_sub(1);
        }
        ControlFlow::Continue(())
    });
    refused
}

/// The line and column of the innermost `[` or `{` still open before `at`.
fn unclosed_flow_start(text: &str, at: (usize, usize)) -> Option<(usize, usize)> {
    let mut open = Vec::new();
    for_each_flow_bracket(text, |bracket, line, column| {
        if (line, column) >= at {
            return ControlFlow::Break(());
        }
        if matches!(bracket, '[' | '{') {
            open.push((line, column));
        } else {
            open.pop();
        }
        ControlFlow::Continue(())
    });
    open.pop()
}

/// Calls `f` with each flow bracket (`[`, `]`, `{`, `}`) of `text` outside
/// quoted scalars and comments, and its 1-based line and column (in characters,
/// as the parser counts them), until `f` breaks.
fn for_each_flow_bracket(text: &str, mut f: impl FnMut(char, usize, usize) -> ControlFlow<()>) {
    // YAML's line breaks are LF, CRLF and a lone CR: counted as the parser
    // counts them, the lines named here are the parser's.
    let text: Cow<'_, str> = if text.contains('\r') {
        Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(text)
    };
    let (mut line, mut column) = (1, 0);
    let mut chars = text.chars().peekable();
    let mut previous = '\n';
    let mut last_significant = '\n';
    while let Some(c) = chars.next() {
        column += 1;
        match c {
            '\n' => (line, column) = (line + 1, 0),
            '#' if previous.is_whitespace() => while chars.next_if(|c| *c != '\n').is_some() {},
            // A quote opens a quoted scalar only where a scalar can start; inside a
            // plain scalar (`it's`) it is an ordinary character.
            '"' | '\'' if starts_scalar(last_significant) => {
                let mut escaped = false;
                for q in chars.by_ref() {
                    column += 1;
                    match q {
                        '\n' => (line, column) = (line + 1, 0),
                        _ if escaped => escaped = false,
                        '\\' if c == '"' => escaped = true,
                        q if q == c => break,
                        _ => {}
                    }
                }
            }
            '[' | '{' | ']' | '}' if f(c, line, column).is_break() => return,
            _ => {}
        }
        previous = c;
        if c == '\n' || !c.is_whitespace() {
            last_significant = c;
        }
    }
}

/// Whether a scalar can start after `c`, the last character that was not a space.
fn starts_scalar(c: char) -> bool {
    matches!(
        c,
        '\n' | ':' | '-' | '[' | '{' | ',' | '?' | '!' | '&' | '|' | '>'
    )
}

/// `repo.auth`, `reports[0].sinks[1]`: where the bad value sits, or `None` at
/// the top. An unknown key is named by the message already, so the path stops
/// at the mapping that holds it.
fn path_text(path: &Path, error: &Error) -> Option<String> {
    let mut segments: Vec<&Segment> = path.iter().collect();
    if let (Error::SerdeUnknownField { field, .. }, Some(Segment::Map { key })) =
        (error, segments.last())
        && key == field
    {
        segments.pop();
    }
    // Where the parser failed inside a key, the path ends at an unknown
    // segment: the location says more.
    while matches!(segments.last(), Some(Segment::Unknown)) {
        segments.pop();
    }
    let mut text = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => text.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            Segment::Unknown => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push('?');
            }
        }
    }
    (!text.is_empty()).then_some(text)
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn options() -> Options {
    let mut budget = Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.flow_nesting_limit = MAX_DEPTH;
    let mut options = Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = MAX_REPLAYED_EVENTS;
    // A repeated key reaches serde: a struct says "duplicate field `wave`", a
    // map keeps the last value, as they always have.
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    // `<<` is an ordinary (so, unknown) key: no merge keys, as in YAML 1.2.
    options.merge_keys = MergeKeyPolicy::AsOrdinary;
    // YAML 1.2 scalars: `yes`/`on` are strings, not booleans; `name:` and
    // `name: ~` read as text where text is expected.
    options.strict_booleans = true;
    options.null_as_string = true;
    // Where any scalar will do (config values), `007`, `1_000` and `.inf` keep
    // the text a reader of the file sees.
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    options.non_finite_float_policy = NonFiniteFloatPolicy::PassThrough;
    // `!custom` tags are an error, not silently dropped.
    options.reject_unsupported_tags = true;
    // Errors are printed as `file:line:column: message`, never with a snippet
    // of the (possibly secret) text.
    options.with_snippet = false;
    options
}

/// The error that says what went wrong, under the wrappers that only add context.
fn innermost(error: &Error) -> &Error {
    let mut error = error.without_snippet();
    while let Error::AliasError { error: inner, .. } = error {
        error = inner.without_snippet();
    }
    error
}

/// The parser's messages, in the words of serde (and of canopy's docs) where the
/// parser has its own: they name what was expected and never point at parser
/// options, which a user cannot set.
struct Messages;

impl MessageFormatter for Messages {
    fn format_message<'a>(&self, error: &'a Error) -> Cow<'a, str> {
        match error {
            Error::Unexpected { expected, .. } => Cow::Borrowed(match *expected {
                "sequence start" => "invalid type: expected a list",
                "mapping start" => "invalid type: expected a mapping",
                "string scalar" => "invalid type: expected a single value, not a list or mapping",
                other => return Cow::Owned(format!("expected {other}")),
            }),
            Error::SerdeUnknownField {
                field, expected, ..
            } => Cow::Owned(format!("unknown field `{field}`, {}", one_of(expected))),
            Error::SerdeUnknownVariant {
                variant, expected, ..
            } => Cow::Owned(format!("unknown variant `{variant}`, {}", one_of(expected))),
            Error::MultipleDocuments { .. } => {
                Cow::Borrowed("more than one YAML document: only one is allowed")
            }
            Error::NullIntoString { .. } => Cow::Borrowed("invalid type: null, expected a string"),
            _ => DefaultMessageFormatter.format_message(error),
        }
    }
}

/// serde's own wording for the allowed names.
fn one_of(expected: &[&str]) -> String {
    match expected {
        [] => "there are none".to_owned(),
        [one] => format!("expected `{one}`"),
        [a, b] => format!("expected `{a}` or `{b}`"),
        names => {
            let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!("expected one of {}", names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Doc {
        list: Vec<String>,
        map: BTreeMap<String, String>,
        text: String,
        flag: bool,
        number: i32,
        nested: Option<Nested>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        dirs: Vec<String>,
        #[serde(default)]
        exclude: Vec<String>,
    }

    fn error(text: &str) -> YamlError {
        from_str::<Doc>(text).expect_err(text)
    }

    #[test]
    fn empty_and_comment_only_documents_are_none() {
        for text in ["", "\n", "# only a comment\n", "---\n", "~\n"] {
            assert_eq!(from_str::<Doc>(text).unwrap(), None, "{text:?}");
        }
    }

    #[test]
    fn errors_carry_the_location_and_the_path() {
        let e = error("number: 1\nsink: x\n");
        assert_eq!((e.line, e.column), (Some(2), Some(1)));
        assert_eq!(
            e.message,
            "unknown field `sink`, expected one of `list`, `map`, `text`, `flag`, `number`, `nested`"
        );
        let e = error("nested:\n  dirs: [a]\n  exlude: []\n");
        assert_eq!((e.line, e.column), (Some(3), Some(3)));
        assert_eq!(
            e.message,
            "nested: unknown field `exlude`, expected `dirs` or `exclude`"
        );
        let e = error("list: [a, [b]]\n");
        assert_eq!((e.line, e.column), (Some(1), Some(11)));
        assert_eq!(
            e.message,
            "list[1]: invalid type: expected a single value, not a list or mapping"
        );
        let e = error("map: [a]\n");
        assert_eq!(e.message, "map: invalid type: expected a mapping");
        let e = error("list: {a: b}\n");
        assert_eq!(e.message, "list: invalid type: expected a list");
    }

    #[test]
    fn scalars_read_as_yaml_1_2() {
        let doc = from_str::<Doc>("text: yes\nmap: {a: ~, b: 007, c:}\n")
            .unwrap()
            .unwrap();
        assert_eq!(doc.text, "yes");
        assert_eq!(
            doc.map.values().collect::<Vec<_>>(),
            ["~", "007", ""],
            "null-like and numeric-looking text is kept as written"
        );
        assert!(error("flag: yes\n").message.starts_with("flag: "));
        assert_eq!(
            from_str::<Doc>("number: 0x10\n").unwrap().unwrap().number,
            16
        );
    }

    #[test]
    fn duplicates_and_merge_keys_behave_as_serde_says() {
        assert_eq!(
            error("number: 1\nnumber: 2\n").message,
            "duplicate field `number`"
        );
        let doc = from_str::<Doc>("map: {a: x, a: y}\n").unwrap().unwrap();
        assert_eq!(doc.map["a"], "y", "a map keeps the last value");
        let e = error("base: &b {number: 1}\n");
        assert!(
            e.message.starts_with("unknown field `base`"),
            "{}",
            e.message
        );
        let e = error("nested: {<<: {dirs: [a]}}\n");
        assert!(
            e.message.starts_with("nested: unknown field `<<`"),
            "{}",
            e.message
        );
    }

    /// Found by the app_yaml fuzz target: a key written as a multi-line plain
    /// scalar reached the path prefix raw, and the error printed as several
    /// lines, the later ones chosen by the file.
    #[test]
    fn messages_are_one_line_whatever_the_keys_hold() {
        for text in [
            "map: {\"a\\nb\": [x]}\n",
            "map: {a\r\r  b: [x]}\n",
            "\"fake\\napp.yaml:1:1: ok\": 1\n",
            "nested: {dirs: [], \"\\u0007\\u001b[2J\": 1}\n",
        ] {
            let e = error(text);
            assert!(
                !e.message.contains(char::is_control),
                "{text:?}: {:?}",
                e.message
            );
        }
        let e = error("map: {\"a\\nb\": [x]}\n");
        assert!(e.message.starts_with("map.a\\nb: "), "{}", e.message);
    }

    /// A lone CR ends a line for the parser, so it does for the bracket scan:
    /// both name the same line.
    #[test]
    fn lines_end_at_lf_crlf_and_cr_alike() {
        for newline in ["\n", "\r\n", "\r"] {
            let deep = format!("number: 1{newline}#{newline}list: {}", "[".repeat(40));
            let e = error(&deep);
            assert_eq!(
                (e.line, e.column),
                (Some(3), Some(39)),
                "{newline:?}: {e:?}"
            );
            let unclosed =
                format!("number: 1{newline}map: {{a: b, c: d{newline}number: 1{newline}");
            let e = error(&unclosed);
            assert!(
                e.message
                    .ends_with("while parsing a flow mapping at line 2 column 6"),
                "{newline:?}: {e:?}"
            );
        }
    }

    #[test]
    fn more_than_one_document_is_refused_with_its_location() {
        let e = error("number: 1\n---\nnumber: 2\n");
        assert_eq!(e.line, Some(3));
        assert_eq!(
            e.message,
            "more than one YAML document: only one is allowed"
        );
    }

    #[test]
    fn hostile_documents_fail_fast() {
        let deep = format!("{}x", "- ".repeat(10_000));
        let e = from_str::<serde::de::IgnoredAny>(&deep).unwrap_err();
        assert!(e.message.contains("depth"), "{e:?}");
        assert!(e.line.is_some(), "{e:?}");
        // Each anchor is ten aliases of the one before: 10^12 scalars if
        // expanded. `IgnoredAny` accepts any shape, so only the parser's budget
        // can stop it; returning at all shows that it did.
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..13 {
            let aliases = vec![format!("*a{}", i - 1); 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{aliases}]\n"));
        }
        let e = from_str::<serde::de::IgnoredAny>(&bomb).unwrap_err();
        assert!(e.message.contains("alias"), "{e:?}");
        assert!(e.line.is_some(), "{e:?}");
    }
}
