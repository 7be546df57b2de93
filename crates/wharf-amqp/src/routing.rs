//! Exchange types and how each matches a binding: direct (key equality), fanout (always),
//! topic (`*` one word, `#` zero or more words, words split on `.`), headers (`x-match`
//! all or any over the binding's arguments; `x-` keys are not matched).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "direct" => Some(Self::Direct),
            "fanout" => Some(Self::Fanout),
            "topic" => Some(Self::Topic),
            "headers" => Some(Self::Headers),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

/// A header or binding-argument value, as far as matching cares.
pub type Headers = BTreeMap<String, String>;

/// Whether a binding with `binding_key` and `arguments` takes a message with `routing_key`
/// and `headers` on an exchange of `kind`.
pub fn matches(
    kind: ExchangeKind,
    binding_key: &str,
    arguments: &Headers,
    routing_key: &str,
    headers: &Headers,
) -> bool {
    match kind {
        ExchangeKind::Direct => binding_key == routing_key,
        ExchangeKind::Fanout => true,
        ExchangeKind::Topic => topic_matches(binding_key, routing_key),
        ExchangeKind::Headers => headers_match(arguments, headers),
    }
}

/// AMQP topic matching: `*` is exactly one word, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    };
    words_match(&pattern, &key)
}

fn words_match(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| words_match(rest, &key[skip..])),
        Some((word, rest)) => match key.split_first() {
            Some((k, key_rest)) => (*word == "*" || word == k) && words_match(rest, key_rest),
            None => false,
        },
    }
}

fn headers_match(arguments: &Headers, headers: &Headers) -> bool {
    let any = arguments
        .get("x-match")
        .is_some_and(|m| m.starts_with("any"));
    let mut wanted = arguments
        .iter()
        .filter(|(k, _)| !k.starts_with("x-"))
        .peekable();
    if wanted.peek().is_none() {
        return !any;
    }
    let mut hit =
        |(k, v): (&String, &String)| headers.get(k).is_some_and(|h| v.is_empty() || h == v);
    if any {
        wanted.any(&mut hit)
    } else {
        wanted.all(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("a.*.c", "a.b.c"));
        assert!(!topic_matches("a.*.c", "a.b.b.c"));
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("a.#", "a.b.c"));
        assert!(topic_matches("#.c", "a.b.c"));
        assert!(topic_matches("#", ""));
        assert!(!topic_matches("*", ""));
        assert!(!topic_matches("a.b", "a.b.c"));
        assert!(topic_matches("a.#.c", "a.c"));
    }

    #[test]
    fn headers_all_and_any() {
        let h = |pairs: &[(&str, &str)]| -> Headers {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        let all = h(&[("x-match", "all"), ("a", "1"), ("b", "2")]);
        let any = h(&[("x-match", "any"), ("a", "1"), ("b", "2")]);
        assert!(headers_match(
            &all,
            &h(&[("a", "1"), ("b", "2"), ("c", "3")])
        ));
        assert!(!headers_match(&all, &h(&[("a", "1")])));
        assert!(headers_match(&any, &h(&[("a", "1")])));
        assert!(!headers_match(&any, &h(&[("a", "2")])));
        assert!(
            headers_match(&h(&[]), &h(&[("a", "1")])),
            "no arguments: all matches"
        );
    }
}
