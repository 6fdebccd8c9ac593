//! Tokens of the policy language. Keywords are case-insensitive and bare names
//! fold to lowercase, as in SQL; a name with capitals, spaces or other letters is
//! written in double quotes (`"createdAt"`, `"Order Items"`), also as in SQL.

use crate::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Word(String),
    /// A double-quoted name: exactly as written, never a keyword.
    Quoted(String),
    Text(String),
    Number(String),
    LParen,
    RParen,
    Comma,
    Dot,
    LBracket,
    RBracket,
    LongArrow,
    Cmp(&'static str),
}

pub fn tokens(source: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let byte = bytes[at];
        let token = match byte {
            b' ' | b'\t' | b'\n' | b'\r' => {
                at += 1;
                continue;
            }
            b'(' => Token::LParen,
            b')' => Token::RParen,
            b',' => Token::Comma,
            b'[' => Token::LBracket,
            b']' => Token::RBracket,
            b'.' => Token::Dot,
            b'=' => Token::Cmp("="),
            b'<' | b'>' | b'!' | b'-' => {
                let two = source.get(at..at + 2).unwrap_or("");
                let three = source.get(at..at + 3).unwrap_or("");
                let (token, len) = if three == "->>" {
                    (Token::LongArrow, 3)
                } else {
                    match two {
                        "<=" => (Token::Cmp("<="), 2),
                        ">=" => (Token::Cmp(">="), 2),
                        "<>" | "!=" => (Token::Cmp("<>"), 2),
                        _ if byte == b'<' => (Token::Cmp("<"), 1),
                        _ if byte == b'>' => (Token::Cmp(">"), 1),
                        _ if byte == b'-' && bytes.get(at + 1).is_some_and(u8::is_ascii_digit) => {
                            let end = number_end(bytes, at + 1);
                            at = end;
                            out.push((start, Token::Number(source[start..end].to_owned())));
                            continue;
                        }
                        _ => {
                            return Err(ParseError::at(
                                start,
                                format!("unexpected {:?}", byte as char),
                            ));
                        }
                    }
                };
                at += len;
                out.push((start, token));
                continue;
            }
            b'\'' => {
                let mut text = String::new();
                at += 1;
                loop {
                    match bytes.get(at) {
                        None => return Err(ParseError::at(start, "unterminated string")),
                        Some(b'\'') if bytes.get(at + 1) == Some(&b'\'') => {
                            text.push('\'');
                            at += 2;
                        }
                        Some(b'\'') => {
                            at += 1;
                            break;
                        }
                        Some(_) => {
                            let ch = source[at..].chars().next().unwrap_or('\0');
                            text.push(ch);
                            at += ch.len_utf8();
                        }
                    }
                }
                out.push((start, Token::Text(text)));
                continue;
            }
            b'"' => {
                let rest = &source[at + 1..];
                let end = rest
                    .find('"')
                    .ok_or_else(|| ParseError::at(start, "unterminated quoted name"))?;
                if end == 0 {
                    return Err(ParseError::at(start, "an empty quoted name"));
                }
                out.push((start, Token::Quoted(rest[..end].to_owned())));
                at += end + 2;
                continue;
            }
            b'0'..=b'9' => {
                let end = number_end(bytes, at);
                at = end;
                out.push((start, Token::Number(source[start..end].to_owned())));
                continue;
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let end = bytes[at..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map_or(bytes.len(), |n| at + n);
                at = end;
                out.push((start, Token::Word(source[start..end].to_ascii_lowercase())));
                continue;
            }
            _ => {
                let ch = source[at..].chars().next().unwrap_or('\0');
                return Err(ParseError::at(start, format!("unexpected {ch:?}")));
            }
        };
        at += 1;
        out.push((start, token));
    }
    Ok(out)
}

fn number_end(bytes: &[u8], mut at: usize) -> usize {
    let mut seen_dot = false;
    while let Some(b) = bytes.get(at) {
        match b {
            b'0'..=b'9' => at += 1,
            b'.' if !seen_dot && bytes.get(at + 1).is_some_and(u8::is_ascii_digit) => {
                seen_dot = true;
                at += 1;
            }
            _ => break,
        }
    }
    at
}
