//! Text to positioned lexemes, as PostgreSQL's default parser and its `english`
//! and `simple` configurations make them for `to_tsvector`.
//!
//! The parser is followed where prose needs it: words of letters (any script),
//! words mixing letters and digits, hyphenated words (the whole, then each
//! part, each at its own position), signed and dotted numbers, dotted or `@`
//! names (hosts, emails, `e.g`) and slashed paths as one token, and URLs as
//! the whole, the host and the path (the protocol is not indexed). Every other
//! character separates tokens. Where PostgreSQL's parser is more particular
//! (which endings count as a host, `..` after a word, XML tags and entities),
//! a text can tokenize differently.

use rust_stemmers::{Algorithm, Stemmer};

use crate::Language;

/// PostgreSQL keeps positions up to this; later ones all count as it.
const MAX_POSITION: u32 = 16_383;
/// PostgreSQL does not index longer words (in bytes).
const MAX_WORD_BYTES: usize = 2_047;

/// PostgreSQL's `english` stop words (its `english.stop`, Snowball's list).
const ENGLISH_STOP_WORDS: [&str; 127] = [
    "i",
    "me",
    "my",
    "myself",
    "we",
    "our",
    "ours",
    "ourselves",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "he",
    "him",
    "his",
    "himself",
    "she",
    "her",
    "hers",
    "herself",
    "it",
    "its",
    "itself",
    "they",
    "them",
    "their",
    "theirs",
    "themselves",
    "what",
    "which",
    "who",
    "whom",
    "this",
    "that",
    "these",
    "those",
    "am",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "having",
    "do",
    "does",
    "did",
    "doing",
    "a",
    "an",
    "the",
    "and",
    "but",
    "if",
    "or",
    "because",
    "as",
    "until",
    "while",
    "of",
    "at",
    "by",
    "for",
    "with",
    "about",
    "against",
    "between",
    "into",
    "through",
    "during",
    "before",
    "after",
    "above",
    "below",
    "to",
    "from",
    "up",
    "down",
    "in",
    "out",
    "on",
    "off",
    "over",
    "under",
    "again",
    "further",
    "then",
    "once",
    "here",
    "there",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "nor",
    "not",
    "only",
    "own",
    "same",
    "so",
    "than",
    "too",
    "very",
    "s",
    "t",
    "can",
    "will",
    "just",
    "don",
    "should",
    "now",
];

/// A token of the text: letters only (a stemmer's word) or anything else
/// (numbers, mixed words, hosts), which is only lower-cased.
struct Token {
    text: String,
    letters_only: bool,
}

/// The lexemes of `text` with their positions (from 1), and how many
/// positions the text used (stop words take one without giving a lexeme).
pub(crate) struct Lexemes {
    pub items: Vec<(String, u32)>,
    pub positions: u32,
}

pub(crate) fn lexemes(language: Language, text: &str) -> Lexemes {
    let stemmer = (language == Language::English).then(|| Stemmer::create(Algorithm::English));
    let mut items = Vec::new();
    let mut positions = 0u32;
    for token in tokens(text) {
        if token.text.len() > MAX_WORD_BYTES {
            continue;
        }
        positions += 1;
        let position = positions.min(MAX_POSITION);
        let lexeme = match &stemmer {
            Some(stemmer) if token.letters_only => {
                if ENGLISH_STOP_WORDS.contains(&token.text.as_str()) {
                    continue;
                }
                stemmer.stem(&token.text).into_owned()
            }
            _ => token.text,
        };
        items.push((lexeme, position));
    }
    Lexemes { items, positions }
}

fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or(' ');
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        if ch == '-' && at(i + 1).is_ascii_digit() {
            // A signed number (`-5`, and `-19` in `covid-19`).
            let end = joined_end(&chars, i + 1, ".");
            tokens.push(other(&chars[i..end]));
            i = end;
            continue;
        }
        if ch == '/' && at(i + 1).is_alphanumeric() {
            // An absolute path.
            let end = joined_end(&chars, i + 1, ".@/-");
            tokens.push(other(&chars[i..end]));
            i = end;
            continue;
        }
        if !ch.is_alphanumeric() {
            i += 1;
            continue;
        }
        let run = run_end(&chars, i);
        if chars[i..run].iter().all(char::is_ascii_alphabetic)
            && (at(run), at(run + 1), at(run + 2)) == (':', '/', '/')
            && at(run + 3).is_alphanumeric()
        {
            // `https://`: a protocol, which PostgreSQL does not index.
            i = run + 3;
            continue;
        }
        let end = joined_end(&chars, i, ".@/-");
        let span = &chars[i..end];
        match span.iter().position(|c| *c == '/') {
            Some(slash) if is_host(&span[..slash]) => {
                // A URL: the whole, its host, then its path to the next space.
                let mut path_end = end;
                while path_end < chars.len() && !chars[path_end].is_whitespace() {
                    path_end += 1;
                }
                tokens.push(other(&chars[i..path_end]));
                tokens.push(other(&span[..slash]));
                tokens.push(other(&chars[i + slash..path_end]));
                i = path_end;
            }
            Some(_) => {
                tokens.push(other(span));
                i = end;
            }
            None if span.iter().any(|c| matches!(c, '.' | '@')) => {
                // A host, an email, a dotted number or abbreviation.
                tokens.push(other(span));
                i = end;
            }
            None if end > run => {
                // A hyphenated word: the whole, then each part.
                tokens.push(word(
                    span,
                    span.iter().all(|c| c.is_alphabetic() || *c == '-'),
                ));
                for part in span.split(|c| *c == '-') {
                    tokens.push(word(part, part.iter().all(|c| c.is_alphabetic())));
                }
                i = end;
            }
            None => {
                tokens.push(word(span, span.iter().all(|c| c.is_alphabetic())));
                i = end;
            }
        }
    }
    tokens
}

/// The end of the run of letters and digits starting at `from`.
fn run_end(chars: &[char], from: usize) -> usize {
    let mut end = from;
    while end < chars.len() && chars[end].is_alphanumeric() {
        end += 1;
    }
    end
}

/// The end of runs joined by single characters of `joiners` (`3.14`,
/// `my-site.org`, `a/b`). A hyphen joins only a following letter: in
/// `covid-19`, `-19` is a number of its own.
fn joined_end(chars: &[char], from: usize, joiners: &str) -> usize {
    let mut end = run_end(chars, from);
    while end + 1 < chars.len() && joiners.contains(chars[end]) {
        let next = chars[end + 1];
        let joins = if chars[end] == '-' {
            next.is_alphabetic()
        } else {
            next.is_alphanumeric()
        };
        if !joins {
            break;
        }
        end = run_end(chars, end + 1);
    }
    end
}

/// `example.com`: dotted labels ending in letters, as a URL's host.
fn is_host(chars: &[char]) -> bool {
    let text: String = chars.iter().collect();
    !text.contains('@')
        && text
            .rsplit_once('.')
            .is_some_and(|(_, last)| last.chars().all(char::is_alphabetic))
}

fn word(chars: &[char], letters_only: bool) -> Token {
    Token {
        text: chars.iter().collect::<String>().to_lowercase(),
        letters_only,
    }
}

fn other(chars: &[char]) -> Token {
    word(chars, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(language: Language, text: &str) -> String {
        lexemes(language, text)
            .items
            .iter()
            .map(|(lexeme, position)| format!("{lexeme}:{position}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn follows_postgres_english_on_prose() {
        // Each expectation is what PostgreSQL 15's to_tsvector('english', …) gives.
        assert_eq!(
            shown(
                Language::English,
                "The cat in the hat sat on a well-known mat"
            ),
            "cat:2 hat:5 sat:6 well-known:9 well:10 known:11 mat:12"
        );
        assert_eq!(
            shown(Language::English, "covid-19 café's rates: 3.14 and -5"),
            "covid:1 -19:2 café:3 rate:5 3.14:6 -5:8"
        );
        assert_eq!(
            shown(Language::English, "e.g. bob@example.com x2y naïve Ünïcode"),
            "e.g:1 bob@example.com:2 x2y:3 naïv:4 ünïcode:5"
        );
        assert_eq!(
            shown(Language::English, "state-of-the-art"),
            "state-of-the-art:1 state:2 art:5"
        );
    }

    #[test]
    fn urls_hosts_and_paths_are_single_tokens() {
        assert_eq!(
            shown(Language::English, "x https://Example.com/a/B.html. y"),
            "x:1 example.com/a/b.html.:2 example.com:3 /a/b.html.:4 y:5"
        );
        assert_eq!(
            shown(Language::English, "a my-site.org b, see /usr/bin now"),
            "my-site.org:2 b:3 see:4 /usr/bin:5"
        );
        assert_eq!(shown(Language::English, "e-mail"), "e-mail:1 e:2 mail:3");
    }

    #[test]
    fn simple_only_lowercases() {
        assert_eq!(
            shown(Language::Simple, "The Running dogs"),
            "the:1 running:2 dogs:3"
        );
    }

    #[test]
    fn stop_words_still_take_a_position() {
        let lexemes = lexemes(Language::English, "to be or not");
        assert!(lexemes.items.is_empty());
        assert_eq!(lexemes.positions, 4);
    }
}
