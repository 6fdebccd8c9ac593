//! `select=id,name,author:users(id,name),orders!inner(*)`.

use crate::path::{JsonStep, steps};
use crate::{MAX_ITEMS, MAX_NESTING, QueryError, invalid};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectItem {
    Star,
    Column {
        name: String,
        alias: Option<String>,
        /// Into a JSON column: `address->city`, `data->tags->>0`.
        path: Vec<JsonStep>,
    },
    /// A related table along a declared foreign key.
    Embed {
        relation: String,
        alias: Option<String>,
        /// `!hint`: which foreign key, when several could apply.
        hint: Option<String>,
        /// `!inner`: drop parent rows without a match.
        inner: bool,
        items: Vec<SelectItem>,
    },
}

pub fn parse(text: &str) -> Result<Vec<SelectItem>, QueryError> {
    let mut parser = Parser { text, at: 0 };
    let items = parser.items(0)?;
    if parser.at != text.len() {
        return Err(invalid(
            "select",
            format!("unexpected {:?}", &text[parser.at..]),
        ));
    }
    Ok(items)
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.at..].chars().next()
    }

    /// A name: bare, or in double quotes (`"Order Items"`), as supabase-js sends
    /// names holding spaces (it strips whitespace outside quotes).
    fn word(&mut self) -> String {
        let rest = &self.text[self.at..];
        if let Some(quoted) = rest.strip_prefix('"')
            && let Some(end) = quoted.find('"')
        {
            self.at += end + 2;
            return quoted[..end].to_owned();
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(rest.len());
        self.at += end;
        rest[..end].to_owned()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(' ') {
            self.at += 1;
        }
    }

    fn items(&mut self, depth: usize) -> Result<Vec<SelectItem>, QueryError> {
        if depth > MAX_NESTING {
            return Err(invalid("select", "embedded resources nest too deeply"));
        }
        let mut items = vec![self.item(depth)?];
        while self.peek() == Some(',') {
            self.at += 1;
            items.push(self.item(depth)?);
            if items.len() > MAX_ITEMS {
                return Err(invalid("select", "too many columns"));
            }
        }
        Ok(items)
    }

    fn item(&mut self, depth: usize) -> Result<SelectItem, QueryError> {
        self.skip_spaces();
        if self.peek() == Some('*') {
            self.at += 1;
            return Ok(SelectItem::Star);
        }
        let mut name = self.word();
        let mut alias = None;
        if self.peek() == Some(':') && !self.text[self.at..].starts_with("::") {
            self.at += 1;
            alias = Some(name);
            name = self.word();
        }
        if name.is_empty() {
            return Err(invalid(
                "select",
                format!("expected a column name at {:?}", &self.text[self.at..]),
            ));
        }
        let mut hint = None;
        let mut inner = false;
        while self.peek() == Some('!') {
            self.at += 1;
            match self.word().as_str() {
                "inner" => inner = true,
                "left" => inner = false,
                "" => return Err(invalid("select", "expected a name after '!'")),
                other => hint = Some(other.to_owned()),
            }
        }
        self.skip_spaces();
        if self.peek() == Some('(') {
            self.at += 1;
            let items = if self.peek() == Some(')') {
                vec![]
            } else {
                self.items(depth + 1)?
            };
            if self.peek() != Some(')') {
                return Err(invalid(
                    "select",
                    format!("expected ')' after the columns of {name}"),
                ));
            }
            self.at += 1;
            return Ok(SelectItem::Embed {
                relation: name,
                alias,
                hint,
                inner,
                items,
            });
        }
        if hint.is_some() || inner {
            return Err(invalid(
                "select",
                format!("'!' applies to embedded resources, not to column {name}"),
            ));
        }
        let path = self.path()?;
        if self.text[self.at..].starts_with("::") {
            return Err(invalid("select", "casts in select are not supported"));
        }
        Ok(SelectItem::Column { name, alias, path })
    }

    /// `->key`, `->0`, `->>key` steps after a column name, up to the item's end.
    fn path(&mut self) -> Result<Vec<JsonStep>, QueryError> {
        let rest = &self.text[self.at..];
        if !rest.starts_with("->") {
            return Ok(Vec::new());
        }
        let mut quoted = false;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                quoted ^= c == '"';
                !quoted && matches!(c, ',' | ')' | ':')
            })
            .map_or(rest.len(), |(at, _)| at);
        self.at += end;
        steps("select", &rest[..end])
    }
}
