//! The four ways PostgreSQL reads a search query (`to_tsquery`,
//! `plainto_tsquery`, `phraseto_tsquery`, `websearch_to_tsquery`) into one tree.
//!
//! Phrases are kept flat: each lexeme at its offset from the phrase's start,
//! which is also how stop words inside a phrase become wider gaps
//! (`cat <-> in <-> the <-> hat` is `cat` then `hat` three positions on).

use crate::text::lexemes;
use crate::{Language, SearchError};

/// Nesting allowed in a `to_tsquery` expression.
const MAX_DEPTH: usize = 32;
/// PostgreSQL's largest `<N>` distance.
const MAX_DISTANCE: u32 = 16_384;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Term {
    pub lexeme: String,
    /// `:*`: any lexeme starting with this one.
    pub prefix: bool,
    /// Weights were asked for and none is D, the only weight `to_tsvector`
    /// gives: the term can never match.
    pub never: bool,
}

/// Lexemes at offsets; a position may hold alternatives (`(a | b) <-> c`), and
/// a negated position must hold none of them (`!a <-> b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub offset: u32,
    pub terms: Vec<Term>,
    pub negated: bool,
}

/// Positions `0..=width` a phrase spans, with what must (not) be at some of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Phrase {
    pub slots: Vec<Slot>,
    pub width: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Phrase(Phrase),
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
}

impl Phrase {
    /// Only stop words: nothing to look for.
    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn from_text(language: Language, text: &str, prefix: bool, never: bool) -> Self {
        let lexemes = lexemes(language, text);
        let slots = lexemes
            .items
            .into_iter()
            .map(|(lexeme, position)| Slot {
                offset: position - 1,
                terms: vec![Term {
                    lexeme,
                    prefix,
                    never,
                }],
                negated: false,
            })
            .collect();
        Phrase {
            slots,
            width: lexemes.positions.saturating_sub(1),
        }
    }

    /// `self <distance> next`.
    fn then(mut self, distance: u32, next: Phrase) -> Phrase {
        let shift = self.width + distance;
        self.slots.extend(next.slots.into_iter().map(|slot| Slot {
            offset: slot.offset + shift,
            ..slot
        }));
        self.width = shift + next.width;
        self
    }
}

/// Empty phrases (stop words) drop out of `&`, `|` and `!`, as PostgreSQL's
/// query cleaning does; `None` is a query left with nothing to look for.
fn and(items: Vec<Node>) -> Option<Node> {
    combine(items, Node::And)
}

fn or(items: Vec<Node>) -> Option<Node> {
    let items: Vec<Node> = items.into_iter().filter(|n| !n.is_empty()).collect();
    // Single-lexeme alternatives share one slot, so they can stand in a phrase.
    let single = |node: &Node| match node {
        Node::Phrase(p) => p.slots.len() == 1 && p.width == 0 && !p.slots[0].negated,
        _ => false,
    };
    if items.len() > 1 && items.iter().all(single) {
        let terms = items
            .into_iter()
            .flat_map(|node| match node {
                Node::Phrase(p) => p.slots.into_iter().flat_map(|s| s.terms).collect(),
                _ => Vec::new(),
            })
            .collect();
        return Some(Node::Phrase(Phrase {
            slots: vec![Slot {
                offset: 0,
                terms,
                negated: false,
            }],
            width: 0,
        }));
    }
    combine(items, Node::Or)
}

fn combine(items: Vec<Node>, make: fn(Vec<Node>) -> Node) -> Option<Node> {
    let mut items: Vec<Node> = items.into_iter().filter(|n| !n.is_empty()).collect();
    match items.len() {
        0 => None,
        1 => items.pop(),
        _ => Some(make(items)),
    }
}

impl Node {
    fn is_empty(&self) -> bool {
        matches!(self, Node::Phrase(p) if p.is_empty())
    }

    fn empty() -> Node {
        Node::Phrase(Phrase {
            slots: Vec::new(),
            width: 0,
        })
    }
}

/// `plainto_tsquery`: every lexeme, all required.
pub(crate) fn plain(language: Language, text: &str) -> Option<Node> {
    let words = lexemes(language, text)
        .items
        .into_iter()
        .map(|(lexeme, _)| {
            Node::Phrase(Phrase {
                slots: vec![Slot {
                    offset: 0,
                    terms: vec![Term {
                        lexeme,
                        prefix: false,
                        never: false,
                    }],
                    negated: false,
                }],
                width: 0,
            })
        });
    and(words.collect())
}

/// `phraseto_tsquery`: every lexeme, in order, at its distance.
pub(crate) fn phrase(language: Language, text: &str) -> Option<Node> {
    let phrase = Phrase::from_text(language, text, false, false);
    and(vec![Node::Phrase(trimmed(phrase))])
}

/// A phrase measured from its first lexeme.
fn trimmed(mut phrase: Phrase) -> Phrase {
    if let Some(first) = phrase.slots.first().map(|s| s.offset) {
        for slot in &mut phrase.slots {
            slot.offset -= first;
        }
        phrase.width -= first;
    }
    phrase
}

/// `websearch_to_tsquery`: words are required, `"…"` is a phrase, `or`
/// between words is either, a leading `-` is not. It never fails.
pub(crate) fn websearch(language: Language, text: &str) -> Option<Node> {
    let chars: Vec<char> = text.chars().collect();
    let separator = |c: char| c.is_whitespace() || "!&|()<:\"".contains(c);
    // Alternatives, each a list of required (possibly negated) items.
    let mut alternatives: Vec<Vec<Node>> = vec![Vec::new()];
    let mut negations = 0usize;
    let mut after_operand = false;
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        let operand = if ch == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|c| *c == '"')
                .map_or(chars.len(), |at| i + 1 + at);
            let quoted: String = chars[i + 1..end].iter().collect();
            i = end + 1;
            Node::Phrase(trimmed(Phrase::from_text(language, &quoted, false, false)))
        } else if ch == '-' {
            negations += 1;
            i += 1;
            continue;
        } else if separator(ch) {
            i += 1;
            continue;
        } else {
            let end = chars[i..]
                .iter()
                .position(|c| separator(*c))
                .map_or(chars.len(), |at| i + at);
            let word: String = chars[i..end].iter().collect();
            i = end;
            // `or` between two operands is either; anywhere else it is a word.
            let more = chars[i..].iter().any(|c| !separator(*c) || *c == '"');
            if word.eq_ignore_ascii_case("or") && after_operand && more {
                negations = 0;
                after_operand = false;
                alternatives.push(Vec::new());
                continue;
            }
            Node::Phrase(trimmed(Phrase::from_text(language, &word, false, false)))
        };
        after_operand = true;
        let mut node = operand;
        for _ in 0..std::mem::take(&mut negations) {
            if !node.is_empty() {
                node = Node::Not(Box::new(node));
            }
        }
        if !node.is_empty()
            && let Some(items) = alternatives.last_mut()
        {
            items.push(node);
        }
    }
    or(alternatives.into_iter().filter_map(and).collect())
}

/// `to_tsquery`: operands joined by `&`, `|`, `<->` or `<N>`, with `!` and
/// parentheses; an operand may end in `:*` (a prefix) or weights.
pub(crate) fn tsquery(language: Language, text: &str) -> Result<Option<Node>, SearchError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        at: 0,
        language,
    };
    parser.skip_space();
    if parser.at == parser.chars.len() {
        return Ok(None);
    }
    let node = parser.or(0)?;
    parser.skip_space();
    if parser.at != parser.chars.len() {
        return Err(parser.error("expected &, |, <-> or the end"));
    }
    Ok(if node.is_empty() { None } else { Some(node) })
}

struct Parser {
    chars: Vec<char>,
    at: usize,
    language: Language,
}

impl Parser {
    fn error(&self, message: &str) -> SearchError {
        SearchError::Syntax(format!("{message} at character {}", self.at + 1))
    }

    fn skip_space(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.chars.get(self.at).copied()
    }

    fn or(&mut self, depth: usize) -> Result<Node, SearchError> {
        let mut items = vec![self.and(depth)?];
        while self.peek() == Some('|') {
            self.at += 1;
            items.push(self.and(depth)?);
        }
        Ok(or(items).unwrap_or_else(Node::empty))
    }

    fn and(&mut self, depth: usize) -> Result<Node, SearchError> {
        let mut items = vec![self.phrase(depth)?];
        while self.peek() == Some('&') {
            self.at += 1;
            items.push(self.phrase(depth)?);
        }
        Ok(and(items).unwrap_or_else(Node::empty))
    }

    fn phrase(&mut self, depth: usize) -> Result<Node, SearchError> {
        let mut node = self.unary(depth)?;
        while let Some(distance) = self.distance()? {
            let next = self.unary(depth)?;
            let (Some(left), Some(right)) = (as_phrase(node), as_phrase(next)) else {
                return Err(SearchError::Unsupported(
                    "<-> and <N> join words, phrases, negated words and \
                     alternatives of single words"
                        .into(),
                ));
            };
            node = Node::Phrase(left.then(distance, right));
        }
        match node {
            // Stop words around a negated word leave just the negation.
            Node::Phrase(Phrase { mut slots, .. }) if slots.len() == 1 && slots[0].negated => {
                slots[0].negated = false;
                let word = Phrase { slots, width: 0 };
                Ok(Node::Not(Box::new(Node::Phrase(word))))
            }
            Node::Phrase(phrase)
                if !phrase.is_empty() && phrase.slots.iter().all(|s| s.negated) =>
            {
                Err(SearchError::Unsupported(
                    "a phrase needs at least one word that is not negated".into(),
                ))
            }
            node => Ok(node),
        }
    }

    /// `<->` (1) or `<N>`, if next.
    fn distance(&mut self) -> Result<Option<u32>, SearchError> {
        if self.peek() != Some('<') {
            return Ok(None);
        }
        let close = self.chars[self.at..]
            .iter()
            .position(|c| *c == '>')
            .ok_or_else(|| self.error("unclosed <"))?;
        let inside: String = self.chars[self.at + 1..self.at + close].iter().collect();
        let distance = match inside.as_str() {
            "-" => 1,
            digits => digits
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= MAX_DISTANCE)
                .ok_or_else(|| self.error("expected <-> or <N> with N up to 16384"))?,
        };
        self.at += close + 1;
        Ok(Some(distance))
    }

    fn unary(&mut self, depth: usize) -> Result<Node, SearchError> {
        if depth > MAX_DEPTH {
            return Err(self.error("the query nests too deeply"));
        }
        match self.peek() {
            Some('!') => {
                self.at += 1;
                let inner = self.unary(depth + 1)?;
                Ok(if inner.is_empty() {
                    inner
                } else {
                    Node::Not(Box::new(inner))
                })
            }
            Some('(') => {
                self.at += 1;
                let inner = self.or(depth + 1)?;
                if self.peek() != Some(')') {
                    return Err(self.error("expected )"));
                }
                self.at += 1;
                Ok(inner)
            }
            Some(_) => self.operand(),
            None => Err(self.error("expected a word")),
        }
    }

    fn operand(&mut self) -> Result<Node, SearchError> {
        let text = if self.chars[self.at] == '\'' {
            let mut text = String::new();
            self.at += 1;
            loop {
                match self.chars.get(self.at) {
                    None => return Err(self.error("unclosed quote")),
                    Some('\'') if self.chars.get(self.at + 1) == Some(&'\'') => {
                        text.push('\'');
                        self.at += 2;
                    }
                    Some('\'') => {
                        self.at += 1;
                        break;
                    }
                    Some('\\') if self.at + 1 < self.chars.len() => {
                        text.push(self.chars[self.at + 1]);
                        self.at += 2;
                    }
                    Some(ch) => {
                        text.push(*ch);
                        self.at += 1;
                    }
                }
            }
            text
        } else {
            let start = self.at;
            while self
                .chars
                .get(self.at)
                .is_some_and(|c| !c.is_whitespace() && !"!&|()<:'".contains(*c))
            {
                self.at += 1;
            }
            if self.at == start {
                return Err(self.error("expected a word"));
            }
            self.chars[start..self.at].iter().collect()
        };
        let (mut prefix, mut weights) = (false, None::<String>);
        if self.chars.get(self.at) == Some(&':') {
            self.at += 1;
            let start = self.at;
            while let Some(ch) = self.chars.get(self.at).copied() {
                match ch.to_ascii_uppercase() {
                    '*' => prefix = true,
                    'A'..='D' => weights
                        .get_or_insert_default()
                        .push(ch.to_ascii_uppercase()),
                    _ => break,
                }
                self.at += 1;
            }
            if self.at == start {
                return Err(self.error("expected * or weights A to D after :"));
            }
        }
        let never = weights.is_some_and(|w| !w.contains('D'));
        Ok(Node::Phrase(trimmed(Phrase::from_text(
            self.language,
            &text,
            prefix,
            never,
        ))))
    }
}

/// A node that can stand in a phrase: a phrase, or a negated single word.
fn as_phrase(node: Node) -> Option<Phrase> {
    match node {
        Node::Phrase(phrase) => Some(phrase),
        Node::Not(inner) => match *inner {
            Node::Phrase(Phrase { mut slots, width }) if slots.len() == 1 && width == 0 => {
                slots[0].negated = !slots[0].negated;
                Some(Phrase { slots, width })
            }
            _ => None,
        },
        _ => None,
    }
}
