//! Full-text search over events (README "Search"): the query language, one parse shared
//! by both stores, and a tenant's search index as the admin API reports it.
//!
//! An event's searchable text is its type and every string value of its properties,
//! nested ones included. Text is split into words at every character that is not a
//! letter or a digit and lowercased, by the server's own rule on both sides, so
//! `page_view`, `alice@example.com` and `/docs/getting-started` are searched as the
//! phrases of their words on PostgreSQL and SQLite alike.

use chrono::{DateTime, Utc};
use eventline_proto::v1;

use crate::{
    Error, TenantId,
    query::{EventFilter, Position},
    time,
};

/// Longest query text, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// Most terms (words and phrases, negated or not) in one query.
pub const MAX_QUERY_TERMS: usize = 16;

/// A parsed search query: every `include` term must be in the event's text, no
/// `exclude` term may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText {
    pub include: Vec<Phrase>,
    pub exclude: Vec<Phrase>,
}

/// Words that must appear next to each other, in order; one word is a phrase of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phrase(pub Vec<String>);

impl SearchText {
    /// Parses `text`: words and `"quoted phrases"`, all required; a leading `-` excludes
    /// a term. A word with punctuation inside (`page_view`) is the phrase of its words.
    pub fn parse(field: &str, text: &str) -> Result<Self, Error> {
        if text.chars().count() > MAX_QUERY_CHARS {
            return Err(Error::invalid(
                field,
                format!("must be at most {MAX_QUERY_CHARS} characters"),
            ));
        }
        let mut parsed = Self {
            include: Vec::new(),
            exclude: Vec::new(),
        };
        let mut rest = text.trim_start();
        while !rest.is_empty() {
            let (negated, term) = match rest.strip_prefix('-') {
                Some(after) => (true, after),
                None => (false, rest),
            };
            let (raw, after) = if let Some(quoted) = term.strip_prefix('"') {
                match quoted.find('"') {
                    Some(end) => (&quoted[..end], &quoted[end + 1..]),
                    None => {
                        return Err(Error::invalid(field, "has a phrase with no closing quote"));
                    }
                }
            } else {
                let end = term.find(char::is_whitespace).unwrap_or(term.len());
                (&term[..end], &term[end..])
            };
            let phrase = Phrase(words(raw).collect());
            if !phrase.0.is_empty() {
                if negated {
                    parsed.exclude.push(phrase);
                } else {
                    parsed.include.push(phrase);
                }
            }
            rest = after.trim_start();
        }
        if parsed.include.is_empty() {
            return Err(Error::invalid(
                field,
                "must hold at least one word to find (letters or digits, not only excluded terms)",
            ));
        }
        if parsed.include.len() + parsed.exclude.len() > MAX_QUERY_TERMS {
            return Err(Error::invalid(
                field,
                format!("must hold at most {MAX_QUERY_TERMS} words and phrases"),
            ));
        }
        Ok(parsed)
    }

    /// The query as PostgreSQL's `to_tsquery('simple', …)` reads it. Words are letters
    /// and digits only, so they need no quoting.
    pub fn to_tsquery(&self) -> String {
        let phrase = |phrase: &Phrase| format!("({})", phrase.0.join(" <-> "));
        let mut terms: Vec<String> = self.include.iter().map(phrase).collect();
        terms.extend(self.exclude.iter().map(|term| format!("!{}", phrase(term))));
        terms.join(" & ")
    }

    /// The query as SQLite's FTS5 `MATCH` reads it: quoted phrases joined by `AND`, the
    /// excluded ones after `NOT` (FTS5 has no unary NOT).
    pub fn to_fts5(&self) -> String {
        let phrase = |phrase: &Phrase| format!("\"{}\"", phrase.0.join(" "));
        let mut query = self
            .include
            .iter()
            .map(phrase)
            .collect::<Vec<_>>()
            .join(" AND ");
        for term in &self.exclude {
            query = format!("({query}) NOT {}", phrase(term));
        }
        query
    }

    /// A stable text of the query, for binding page tokens to it.
    pub fn fingerprint(&self) -> String {
        format!("{:?}", (&self.include, &self.exclude))
    }
}

/// The words of `text`: runs of letters and digits, lowercased.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
}

/// The searchable text of an event as both stores index it: its type and its string
/// property values (from the stored JSON object), as words separated by single spaces.
/// Values are joined in the order they are stored.
pub fn document(event_type: &str, properties_json: &str) -> String {
    fn strings<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::String(text) => out.push(text),
            serde_json::Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
            serde_json::Value::Object(map) => map.values().for_each(|item| strings(item, out)),
            _ => {}
        }
    }
    // Stored properties are valid JSON; were they not, the type alone is still found.
    let properties: serde_json::Value =
        serde_json::from_str(properties_json).unwrap_or(serde_json::Value::Null);
    let mut values = vec![event_type];
    strings(&properties, &mut values);
    values
        .into_iter()
        .flat_map(words)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One page of a search, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub tenant_id: TenantId,
    pub text: SearchText,
    pub filter: EventFilter,
    /// Inclusive.
    pub start: DateTime<Utc>,
    /// Exclusive.
    pub end: DateTime<Utc>,
    /// Continue strictly after this position, newest first.
    pub after: Option<Position>,
    pub limit: usize,
}

/// A tenant's search index: off until an admin turns it on; then the server indexes the
/// tenant's events in commit order, its history first, in the background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchIndex {
    pub tenant_id: TenantId,
    pub enabled: bool,
    /// When it was last turned on.
    pub enabled_at: Option<DateTime<Utc>>,
    /// Events indexed since it was turned on.
    pub events_indexed: u64,
    /// Whether the last indexing pass reached the tenant's newest committed event.
    pub caught_up: bool,
}

impl SearchIndex {
    /// The API message.
    pub fn to_proto(&self) -> v1::SearchIndex {
        v1::SearchIndex {
            tenant_id: self.tenant_id.to_string(),
            enabled: self.enabled,
            enable_time: self.enabled_at.map(time::to_proto),
            events_indexed: self.events_indexed,
            caught_up: self.caught_up,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SearchText {
        SearchText::parse("query", text).unwrap()
    }

    #[test]
    fn words_phrases_and_exclusions_parse_into_both_dialects() {
        let text = parse(r#"Timeout "payment gateway" -retry page_view"#);
        assert_eq!(
            text.include,
            vec![
                Phrase(vec!["timeout".into()]),
                Phrase(vec!["payment".into(), "gateway".into()]),
                Phrase(vec!["page".into(), "view".into()]),
            ]
        );
        assert_eq!(text.exclude, vec![Phrase(vec!["retry".into()])]);
        assert_eq!(
            text.to_tsquery(),
            "(timeout) & (payment <-> gateway) & (page <-> view) & !(retry)"
        );
        assert_eq!(
            text.to_fts5(),
            r#"("timeout" AND "payment gateway" AND "page view") NOT "retry""#
        );
    }

    #[test]
    fn bad_queries_name_the_field() {
        for bad in ["", "   ", "-only", "\"open", "!!! ---", &"w ".repeat(17)] {
            let error = SearchText::parse("query", bad).unwrap_err();
            assert!(error.to_string().contains("query"), "{bad:?}: {error}");
        }
        let long = "a".repeat(MAX_QUERY_CHARS + 1);
        assert!(SearchText::parse("query", &long).is_err());
    }

    #[test]
    fn the_document_holds_the_type_and_every_string_value() {
        let properties = serde_json::json!({
            "email": "Alice@Example.com", "amount": 12, "tags": ["Blue", {"deep": "Dive"}]
        });
        assert_eq!(
            document("page_view", &properties.to_string()),
            "page view alice example com blue dive"
        );
    }
}
