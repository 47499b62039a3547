//! Config mistakes and where they are: a [`Mistake`] names the key it is about
//! ([`KeyPath`]) and what is wrong; [`place`] finds it in the file (line and column,
//! from toml_edit's spans) for the one-line message
//! `config FILE:LINE:COL: key: what is wrong`.

use std::fmt;
use std::ops::Range;

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml_edit::{ImDocument, Item, Table, TableLike};

use super::ConfigError;

/// Where a setting lives in the file: `recording.chunk_length_s`,
/// `stream "rgb".bitrate` (a stream named by its `name`), `stream[2]` (one without).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    /// An entry of an array of tables (`[[stream]]`), 0-based.
    Entry {
        index: usize,
        name: Option<String>,
    },
}

impl KeyPath {
    /// A top-level key or table.
    pub fn top(key: &str) -> Self {
        KeyPath(vec![Segment::Key(key.to_owned())])
    }

    /// The key `key` inside this table.
    pub fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_owned()));
        path
    }

    /// Entry `index` of this array of tables, shown by its name when it has one.
    pub fn entry(&self, index: usize, name: Option<&str>) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Entry {
            index,
            name: name.map(str::to_owned),
        });
        path
    }

    /// This path followed by `rest`.
    fn join(mut self, rest: KeyPath) -> Self {
        self.0.extend(rest.0);
        self
    }

    /// The `[[stream]]` entry `index`, named `name`.
    pub fn stream(index: usize, name: &str) -> Self {
        Self::top("stream").entry(index, Some(name).filter(|n| !n.is_empty()))
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Entry {
                    name: Some(name), ..
                } => write!(f, " {name:?}")?,
                Segment::Entry { index, name: None } => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// One thing wrong in a config, not yet placed in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Mistake {
    /// The key it is about (empty: the file as a whole).
    pub key: KeyPath,
    pub message: String,
    /// Byte range in the file, when the parser knows it better than the key does.
    span: Option<Range<usize>>,
}

impl Mistake {
    /// `key` is wrong: `message` says how (with the value and the limit).
    pub fn at(key: KeyPath, message: impl Into<String>) -> Self {
        Mistake {
            key,
            message: message.into(),
            span: None,
        }
    }

    /// A deserialization error of the TOML crates (they know the span, not the key).
    fn from_toml(doc: Option<&Table>, message: &str, span: Option<Range<usize>>) -> Self {
        let key = match (doc, &span) {
            (Some(doc), Some(span)) => key_at(doc, span.start),
            _ => KeyPath::default(),
        };
        Mistake {
            key,
            // toml's messages may run over several lines; grabd's errors take one.
            message: message.trim().replace('\n', ": "),
            span,
        }
    }
}

/// The config text, parsed with its spans.
pub struct Source<'a> {
    origin: &'a str,
    text: &'a str,
    doc: ImDocument<&'a str>,
}

impl<'a> Source<'a> {
    /// Parse `text` (read from `origin`); a syntax error comes back placed.
    pub fn parse(text: &'a str, origin: &'a str) -> Result<Self, ConfigError> {
        match ImDocument::parse(text) {
            Ok(doc) => Ok(Source { origin, text, doc }),
            Err(e) => Err(place(
                origin,
                text,
                None,
                Mistake::from_toml(None, e.message(), e.span()),
            )),
        }
    }

    pub fn table(&self) -> &Table {
        self.doc.as_table()
    }

    /// Deserialize the whole file.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Mistake> {
        let doc = ImDocument::parse(self.text.to_owned())
            .map_err(|e| Mistake::from_toml(None, e.message(), e.span()))?;
        toml_edit::de::from_document(doc)
            .map_err(|e| Mistake::from_toml(Some(self.table()), e.message(), e.span()))
    }

    /// Deserialize `table` (a part of this file, at `path`) without the keys in
    /// `skip`, keeping the spans so that a mistake still says where it is.
    pub fn deserialize_table<T: DeserializeOwned>(
        &self,
        table: &Table,
        path: &KeyPath,
        skip: &[&str],
    ) -> Result<T, Mistake> {
        let mut table = table.clone();
        for key in skip {
            table.remove(key);
        }
        let value = toml_edit::Value::InlineTable(table.into_inline_table());
        T::deserialize(value.into_deserializer()).map_err(|e| {
            let mistake = Mistake::from_toml(Some(self.table()), e.message(), e.span());
            if mistake.key == KeyPath::default() {
                // Not at a key (e.g. one is missing): the table itself.
                Mistake::at(path.clone(), mistake.message)
            } else {
                mistake
            }
        })
    }

    /// The mistake as the error to print, placed in the file.
    pub fn place(&self, mistake: Mistake) -> ConfigError {
        place(self.origin, self.text, Some(self.table()), mistake)
    }
}

fn place(origin: &str, text: &str, doc: Option<&Table>, mistake: Mistake) -> ConfigError {
    let span = mistake
        .span
        .clone()
        .or_else(|| doc.and_then(|doc| locate(doc, &mistake.key)));
    let position = span.map(|span| line_col(text, span.start));
    let key = mistake.key.to_string();
    ConfigError::Mistake {
        origin: origin.to_owned(),
        position,
        key: (!key.is_empty()).then_some(key),
        message: mistake.message,
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The span of what `path` names: its value when the whole path exists, else the key
/// or table header of the deepest part that does (e.g. the stream lacking a key).
fn locate(doc: &Table, path: &KeyPath) -> Option<Range<usize>> {
    let mut table: Option<&dyn TableLike> = Some(doc);
    let mut item: Option<&Item> = None;
    let mut found = None;
    for (i, segment) in path.0.iter().enumerate() {
        let last = i + 1 == path.0.len();
        match segment {
            Segment::Key(name) => {
                let Some((key, value)) = table.and_then(|t| t.get_key_value(name)) else {
                    break;
                };
                found = match value {
                    Item::Value(v) if last => v.span().or(key.span()),
                    _ => key.span().or(found),
                };
                table = value.as_table_like();
                item = Some(value);
            }
            Segment::Entry { index, .. } => {
                let Some(entry) = item
                    .and_then(Item::as_array_of_tables)
                    .and_then(|a| a.get(*index))
                else {
                    break;
                };
                found = entry.span().or(found);
                table = Some(entry);
                item = None;
            }
        }
    }
    found
}

/// The deepest key whose key or value holds byte `offset` (relative to `table`).
fn key_at(table: &dyn TableLike, offset: usize) -> KeyPath {
    for (name, item) in table.iter() {
        let here = KeyPath::top(name);
        let key_span = table.get_key_value(name).and_then(|(k, _)| k.span());
        if holds(key_span, offset) {
            return here;
        }
        match item {
            Item::ArrayOfTables(entries) => {
                for (index, entry) in entries.iter().enumerate() {
                    if table_holds(entry, entry.span(), offset) {
                        let entry_name = entry.get("name").and_then(Item::as_str);
                        return here.entry(index, entry_name).join(key_at(entry, offset));
                    }
                }
            }
            Item::Table(t) if table_holds(t, t.span(), offset) => {
                return here.join(key_at(t, offset))
            }
            Item::Value(v) if holds(v.span(), offset) => {
                return match v.as_inline_table() {
                    Some(inline) => here.join(key_at(inline, offset)),
                    None => here,
                };
            }
            _ => {}
        }
    }
    KeyPath::default()
}

fn holds(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.contains(&offset))
}

/// Whether `offset` lies in the table's header (`header`) or any of its keys and values.
fn table_holds(table: &dyn TableLike, header: Option<Range<usize>>, offset: usize) -> bool {
    holds(header, offset)
        || table.iter().any(|(name, item)| {
            let key_span = table.get_key_value(name).and_then(|(k, _)| k.span());
            holds(key_span, offset)
                || match item {
                    Item::Value(v) => holds(v.span(), offset),
                    Item::Table(t) => table_holds(t, t.span(), offset),
                    Item::ArrayOfTables(a) => a.iter().any(|t| table_holds(t, t.span(), offset)),
                    Item::None => false,
                }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source<'_> {
        Source::parse(text, "t.toml").unwrap()
    }

    #[test]
    fn key_paths_read_like_the_file() {
        let p = KeyPath::stream(1, "rgb").key("bitrate");
        assert_eq!(p.to_string(), "stream \"rgb\".bitrate");
        assert_eq!(KeyPath::stream(2, "").to_string(), "stream[2]");
        assert_eq!(
            KeyPath::top("recording").key("chunk_length_s").to_string(),
            "recording.chunk_length_s"
        );
    }

    #[test]
    fn mistakes_are_placed_at_their_value() {
        let text = "[recording]\nchunk_length_s = 5\n\n[[stream]]\nname = \"a\"\n\n[[stream]]\nname = \"b\"\noptions = { g = \"x\" }\n";
        let s = source(text);
        let placed = |m: Mistake| s.place(m).to_string();
        let key = KeyPath::top("recording").key("chunk_length_s");
        assert_eq!(
            placed(Mistake::at(key, "too long")),
            "config t.toml:2:18: recording.chunk_length_s: too long"
        );
        let key = KeyPath::stream(1, "b").key("options").key("g");
        assert_eq!(
            placed(Mistake::at(key, "bad")),
            "config t.toml:9:17: stream \"b\".options.g: bad"
        );
        // A missing key points at its table.
        let key = KeyPath::stream(0, "a").key("width");
        assert_eq!(
            placed(Mistake::at(key, "missing")),
            "config t.toml:4:1: stream \"a\".width: missing"
        );
    }

    #[test]
    fn a_span_finds_its_key() {
        let text = "[recording]\nchunk_length_s = 5\n\n[[stream]]\nname = \"a\"\n\n[[stream]]\nname = \"b\"\noptions = { g = \"x\" }\n";
        let s = source(text);
        let at = |needle: &str| key_at(s.table(), text.find(needle).unwrap()).to_string();
        assert_eq!(at("5"), "recording.chunk_length_s");
        assert_eq!(at("chunk_length_s"), "recording.chunk_length_s");
        assert_eq!(at("\"b\""), "stream \"b\".name");
        assert_eq!(at("\"x\""), "stream \"b\".options.g");
    }
}
