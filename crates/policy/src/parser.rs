//! A recursive-descent parser for the policy subset:
//!
//! ```text
//! expr    := and (OR and)*
//! and     := not (AND not)*
//! not     := NOT not | EXISTS '(' SELECT 1 FROM name [[AS] alias] WHERE expr ')'
//!          | '(' expr ')' | operand [cmp operand | [NOT] IN '(' operands ')' | IS [NOT] NULL]
//! operand := 'text' | number | TRUE | FALSE | NULL | name[.name]
//!          | auth.uid() | auth.role() | auth.jwt() ->> 'claim'
//!          | storage.foldername(name)[n] | (storage.foldername(name))[n]
//!          | storage.filename(name) | storage.extension(name)
//! ```
//!
//! Anything else is an error naming the offset, so no construct slips through
//! that the compiler does not know how to render safely.

use crate::ast::{Expr, Operand};
use crate::lexer::{Token, tokens};
use crate::{ParseError, PathPart};

/// Nesting beyond this is refused, so a hostile declaration cannot overflow the stack.
const MAX_DEPTH: usize = 32;

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    end: usize,
    depth: usize,
}

pub fn parse(source: &str) -> Result<Expr, ParseError> {
    let mut parser = Parser {
        tokens: tokens(source)?,
        at: 0,
        end: source.len(),
        depth: 0,
    };
    let expr = parser.expr()?;
    match parser.peek() {
        None => Ok(expr),
        Some(token) => Err(parser.error(format!("unexpected {}", describe(token)))),
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Word(word) => format!("'{word}'"),
        Token::Quoted(name) => format!("\"{name}\""),
        Token::Text(text) => format!("string '{text}'"),
        Token::Number(number) => format!("number {number}"),
        Token::LParen => "'('".into(),
        Token::RParen => "')'".into(),
        Token::Comma => "','".into(),
        Token::Dot => "'.'".into(),
        Token::LBracket => "'['".into(),
        Token::RBracket => "']'".into(),
        Token::LongArrow => "'->>'".into(),
        Token::Cmp(op) => format!("'{op}'"),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(_, token)| token)
    }

    /// `.name(` next: a qualified function call rather than a qualified column.
    fn function_follows(&self) -> bool {
        let token = |n: usize| self.tokens.get(self.at + n).map(|(_, token)| token);
        token(0) == Some(&Token::Dot)
            && matches!(token(1), Some(Token::Word(_)))
            && token(2) == Some(&Token::LParen)
    }

    fn offset(&self) -> usize {
        self.tokens
            .get(self.at)
            .map_or(self.end, |(offset, _)| *offset)
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError::at(self.offset(), message)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).map(|(_, token)| token.clone());
        self.at += 1;
        token
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w == word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, expected: &Token, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(expected) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(format!("expected {what}")))
        }
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), ParseError> {
        if self.keyword(word) {
            Ok(())
        } else {
            Err(self.error(format!("expected {}", word.to_uppercase())))
        }
    }

    fn name(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Some(Token::Word(word) | Token::Quoted(word)) => Ok(word),
            _ => {
                self.at -= 1;
                Err(self.error("expected a name"))
            }
        }
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("the expression nests too deeply"));
        }
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.not()?;
        while self.keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.keyword("not") {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(self.error("the expression nests too deeply"));
            }
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if self.keyword("exists") {
            return self.exists();
        }
        if self.peek() == Some(&Token::LParen) {
            self.at += 1;
            // `(storage.foldername(name))[1]`, as Supabase's policies write it;
            // anything else in parentheses is an expression.
            let start = self.at;
            if let Ok(operand @ Operand::Path { .. }) = self.operand()
                && self.peek() == Some(&Token::RParen)
                && self.tokens.get(self.at + 1).map(|(_, token)| token) == Some(&Token::LBracket)
            {
                self.at += 1;
                let operand = self.folder_index(operand)?;
                return self.predicate(operand);
            }
            self.at = start;
            let inner = self.expr()?;
            self.expect(&Token::RParen, "')'")?;
            return Ok(inner);
        }
        let operand = self.operand()?;
        self.predicate(operand)
    }

    fn exists(&mut self) -> Result<Expr, ParseError> {
        self.expect(&Token::LParen, "'(' after EXISTS")?;
        self.expect_keyword("select")?;
        if !matches!(self.next(), Some(Token::Number(n)) if n == "1") {
            self.at -= 1;
            return Err(self.error("write EXISTS (SELECT 1 FROM table WHERE …)"));
        }
        self.expect_keyword("from")?;
        let table = self.name()?;
        let named = self.keyword("as")
            || matches!(self.peek(), Some(Token::Word(w)) if w != "where")
            || matches!(self.peek(), Some(Token::Quoted(_)));
        let alias = if named { Some(self.name()?) } else { None };
        self.expect_keyword("where")?;
        let condition = self.expr()?;
        self.expect(&Token::RParen, "')' closing EXISTS")?;
        Ok(Expr::Exists {
            table,
            alias,
            condition: Box::new(condition),
        })
    }

    fn predicate(&mut self, operand: Operand) -> Result<Expr, ParseError> {
        if let Some(Token::Cmp(op)) = self.peek() {
            let op = *op;
            self.at += 1;
            let right = self.operand()?;
            return Ok(Expr::Compare(operand, op, right));
        }
        let negated = self.keyword("not");
        if self.keyword("in") {
            self.expect(&Token::LParen, "'(' after IN")?;
            let mut list = vec![self.operand()?];
            while self.peek() == Some(&Token::Comma) {
                self.at += 1;
                list.push(self.operand()?);
            }
            self.expect(&Token::RParen, "')' closing IN")?;
            return Ok(Expr::In {
                operand,
                list,
                negated,
            });
        }
        if negated {
            return Err(self.error("expected IN after NOT"));
        }
        if self.keyword("is") {
            let negated = self.keyword("not");
            self.expect_keyword("null")?;
            return Ok(Expr::IsNull { operand, negated });
        }
        Ok(Expr::Truth(operand))
    }

    fn operand(&mut self) -> Result<Operand, ParseError> {
        let at = self.offset();
        match self.next() {
            Some(Token::Text(text)) => Ok(Operand::Text(text)),
            Some(Token::Number(number)) => Ok(Operand::Number(number)),
            Some(Token::Quoted(name)) => self.column(name, at),
            Some(Token::Word(word)) => match word.as_str() {
                "true" => Ok(Operand::Bool(true)),
                "false" => Ok(Operand::Bool(false)),
                "null" => Ok(Operand::Null),
                "auth" if self.peek() == Some(&Token::Dot) => self.auth_function(),
                "storage" if self.function_follows() => self.storage_function(),
                _ if self.peek() == Some(&Token::LParen) => {
                    Err(ParseError::at(at, format!("unknown function {word}()")))
                }
                _ => self.column(word, at),
            },
            Some(token) => {
                self.at -= 1;
                Err(self.error(format!(
                    "expected a value or a column, found {}",
                    describe(&token)
                )))
            }
            None => Err(self.error("expected a value or a column, found the end")),
        }
    }

    /// A column, `name` or `qualifier.name`, whose first part has been read.
    fn column(&mut self, first: String, at: usize) -> Result<Operand, ParseError> {
        if self.peek() != Some(&Token::Dot) {
            return Ok(Operand::Column {
                qualifier: None,
                name: first,
                at,
            });
        }
        self.at += 1;
        Ok(Operand::Column {
            qualifier: Some(first),
            name: self.name()?,
            at,
        })
    }

    /// `storage.foldername(col)` (then indexed), `storage.filename(col)`,
    /// `storage.extension(col)`: parts of an object path, as in Supabase.
    fn storage_function(&mut self) -> Result<Operand, ParseError> {
        self.at += 1; // the dot
        let function = self.name()?;
        self.expect(&Token::LParen, "'('")?;
        let column = self.operand()?;
        if !matches!(column, Operand::Column { .. }) {
            return Err(self.error("storage functions take a column, such as name"));
        }
        self.expect(&Token::RParen, "')'")?;
        let part = match function.as_str() {
            // The index follows, here or after a closing parenthesis.
            "foldername" => PathPart::Folder(0),
            "filename" => PathPart::Filename,
            "extension" => PathPart::Extension,
            other => {
                return Err(self.error(format!(
                    "unknown function storage.{other}(): use storage.foldername(name)[n], \
                     storage.filename(name) or storage.extension(name)"
                )));
            }
        };
        let operand = Operand::Path {
            part,
            column: Box::new(column),
        };
        if self.peek() == Some(&Token::LBracket) {
            return self.folder_index(operand);
        }
        Ok(operand)
    }

    /// `[n]` after `storage.foldername(col)`: the n-th folder, counted from 1.
    fn folder_index(&mut self, operand: Operand) -> Result<Operand, ParseError> {
        let Operand::Path {
            part: PathPart::Folder(0),
            column,
        } = operand
        else {
            return Err(self.error("only storage.foldername(…) takes an index"));
        };
        self.expect(&Token::LBracket, "'[n]' after storage.foldername(…)")?;
        let index = match self.next() {
            Some(Token::Number(n)) => n.parse::<u16>().ok().filter(|n| (1..=64).contains(n)),
            _ => None,
        };
        let Some(index) = index else {
            self.at -= 1;
            return Err(self.error("a folder index is a number from 1 to 64"));
        };
        self.expect(&Token::RBracket, "']'")?;
        Ok(Operand::Path {
            part: PathPart::Folder(index),
            column,
        })
    }

    fn auth_function(&mut self) -> Result<Operand, ParseError> {
        self.at += 1; // the dot
        let function = self.name()?;
        self.expect(&Token::LParen, "'('")?;
        self.expect(&Token::RParen, "')'")?;
        match function.as_str() {
            "uid" => Ok(Operand::AuthUid),
            "role" => Ok(Operand::AuthRole),
            "jwt" => {
                self.expect(&Token::LongArrow, "->> 'claim' after auth.jwt()")?;
                match self.next() {
                    Some(Token::Text(claim)) => Ok(Operand::JwtClaim(claim)),
                    _ => {
                        self.at -= 1;
                        Err(self.error("expected the claim name as a string"))
                    }
                }
            }
            other => Err(self.error(format!(
                "unknown function auth.{other}(): use auth.uid(), auth.role() or auth.jwt()"
            ))),
        }
    }
}
