//! Typed, position-aware access to the keys of one TOML table.
//!
//! The parsed document keeps the byte span of every key, value and table
//! header, so each accessor can point its error at exactly the place the user
//! has to edit. Unknown keys are rejected up front: a misspelt key is the
//! likely cause of a "missing key" error that would otherwise come first.

use std::num::IntErrorKind;
use std::ops::{Range, RangeInclusive};

use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

use crate::error::{ConfigError, Source};

pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// Parses a whole document; TOML syntax errors keep the parser's position.
pub(crate) fn parse_document<'i>(src: &Source<'i>) -> Result<Spanned<DeTable<'i>>, ConfigError> {
    DeTable::parse(src.text).map_err(|e| {
        let Some(span) = e.span() else {
            return src.error_at_start(format!("invalid TOML: {}", e.message()));
        };
        let message = match (e.message(), src.text.get(span.clone())) {
            // The parser's wording does not say which key, nor the rule.
            ("duplicate key", Some(key)) => format!(
                "invalid TOML: '{key}' is defined twice (a key or [table] may appear only once)"
            ),
            (message, _) => format!("invalid TOML: {message}"),
        };
        src.error_at(span, message)
    })
}

/// How a value is called in messages ("must be an integer, found a string").
pub(crate) fn describe(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// A string value together with the span it came from.
pub(crate) struct Str<'d> {
    pub value: &'d str,
    pub span: Range<usize>,
}

/// The keys of one table, already checked against the allowed set.
pub(crate) struct Fields<'s, 'd, 'i> {
    src: &'s Source<'s>,
    /// How the table is named in messages: "[boot]", "[[disk]]", "the top level".
    place: &'static str,
    /// Where "missing key" errors point: the table header, or the file start.
    header: Option<Range<usize>>,
    entries: Vec<(&'d Spanned<DeString<'i>>, &'d Value<'i>)>,
}

impl<'s, 'd, 'i> Fields<'s, 'd, 'i> {
    pub fn new(
        src: &'s Source<'s>,
        table: &'d DeTable<'i>,
        header: Option<Range<usize>>,
        place: &'static str,
        allowed: &[&str],
    ) -> Result<Self, ConfigError> {
        let mut entries: Vec<_> = table.iter().collect();
        // Report problems in the order the user wrote them.
        entries.sort_by_key(|(k, _)| k.span().start);
        if let Some((key, _)) = entries
            .iter()
            .find(|(k, _)| !allowed.contains(&k.get_ref().as_ref()))
        {
            let preposition = if place.starts_with('[') { "in" } else { "at" };
            return Err(src.error_at(
                key.span(),
                format!(
                    "unknown key '{}' {} {} (allowed: {})",
                    key.get_ref(),
                    preposition,
                    place,
                    allowed.join(", ")
                ),
            ));
        }
        Ok(Fields {
            src,
            place,
            header,
            entries,
        })
    }

    pub fn source(&self) -> &'s Source<'s> {
        self.src
    }

    pub fn get(&self, key: &str) -> Option<&'d Value<'i>> {
        self.entries
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| *v)
    }

    /// Error for a required key that is absent.
    pub fn missing(&self, key: &str, what: &str) -> ConfigError {
        let message = format!("missing required key '{key}' in {} ({what})", self.place);
        match &self.header {
            Some(span) => self.src.error_at(span.clone(), message),
            None => self.src.error_at_start(message),
        }
    }

    fn wrong_type(&self, key: &str, value: &Value<'_>, expected: &str) -> ConfigError {
        self.src.error_at(
            value.span(),
            format!(
                "{key} must be {expected}, found {}",
                describe(value.get_ref())
            ),
        )
    }

    pub fn string(&self, key: &str) -> Result<Option<Str<'d>>, ConfigError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        match value.get_ref() {
            DeValue::String(s) => Ok(Some(Str {
                value: s.as_ref(),
                span: value.span(),
            })),
            _ => Err(self.wrong_type(key, value, "a string")),
        }
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        match value.get_ref() {
            DeValue::Boolean(b) => Ok(Some(*b)),
            _ => Err(self.wrong_type(key, value, "true or false")),
        }
    }

    /// An integer within `allowed`; the message quotes the number as written.
    pub fn integer(
        &self,
        key: &str,
        allowed: RangeInclusive<i64>,
    ) -> Result<Option<i64>, ConfigError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let range = format!("{}..={}", allowed.start(), allowed.end());
        let DeValue::Integer(int) = value.get_ref() else {
            return Err(self.wrong_type(key, value, &format!("an integer in {range}")));
        };
        let written = self.src.text.get(value.span()).unwrap_or("the value");
        let problem = match i64::from_str_radix(int.as_str(), int.radix()) {
            Ok(n) if allowed.contains(&n) => return Ok(Some(n)),
            Ok(_) => "is out of range",
            Err(e)
                if matches!(
                    e.kind(),
                    IntErrorKind::PosOverflow | IntErrorKind::NegOverflow
                ) =>
            {
                "is out of range"
            }
            Err(_) => "is not a valid integer",
        };
        Err(self.src.error_at(
            value.span(),
            format!("{key} = {written} {problem} (allowed {range})"),
        ))
    }

    /// A sub-table (`[machine]`, `machine = { ... }` or dotted keys), with the
    /// span of its header.
    pub fn table(&self, key: &str) -> Result<Option<(&'d DeTable<'i>, Range<usize>)>, ConfigError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        match value.get_ref() {
            DeValue::Table(t) => Ok(Some((t, value.span()))),
            _ => Err(self.wrong_type(key, value, &format!("a table ([{key}])"))),
        }
    }

    /// The checked fields of sub-table `key`, named `place` in messages.
    pub fn sub(
        &self,
        key: &str,
        place: &'static str,
        allowed: &[&str],
    ) -> Result<Option<Fields<'s, 'd, 'i>>, ConfigError> {
        match self.table(key)? {
            Some((t, span)) => Fields::new(self.src, t, Some(span), place, allowed).map(Some),
            None => Ok(None),
        }
    }

    /// An array of tables (`[[disk]]` blocks or `disk = [{ ... }]`); absent
    /// means empty.
    pub fn tables(&self, key: &str) -> Result<Vec<(&'d DeTable<'i>, Range<usize>)>, ConfigError> {
        let Some(value) = self.get(key) else {
            return Ok(Vec::new());
        };
        let expected = format!("an array of tables ([[{key}]])");
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.wrong_type(key, value, &expected));
        };
        items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::Table(t) => Ok((t, item.span())),
                _ => Err(self.src.error_at(
                    item.span(),
                    format!(
                        "{key} entries must be tables ([[{key}]]), found {}",
                        describe(item.get_ref())
                    ),
                )),
            })
            .collect()
    }

    /// An array of strings; absent means empty.
    pub fn strings(&self, key: &str) -> Result<Vec<Str<'d>>, ConfigError> {
        let Some(value) = self.get(key) else {
            return Ok(Vec::new());
        };
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.wrong_type(key, value, "an array of strings"));
        };
        items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::String(s) => Ok(Str {
                    value: s.as_ref(),
                    span: item.span(),
                }),
                _ => Err(self.src.error_at(
                    item.span(),
                    format!(
                        "{key} entries must be strings, found {}",
                        describe(item.get_ref())
                    ),
                )),
            })
            .collect()
    }
}
