//! Lexer: turns Sieve script bytes into tokens with `line:column` positions (RFC 5228 §2.2-2.4, §8.1).
//!
//! Trusts nothing: the input is arbitrary bytes. It never panics; malformed input yields
//! error tokens that name what was expected and the lexer resynchronises at the next byte,
//! so that one compile reports every lexical error. Numbers that overflow 64 bits and
//! identifiers longer than [`MAX_IDENTIFIER`] are errors, as in Pigeonhole.

use std::fmt;

/// Longest identifier or tag name accepted (Pigeonhole's limit).
pub const MAX_IDENTIFIER: usize = 32;

/// A position in the script, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line number, starting at 1.
    pub line: u32,
    /// Column (in bytes) starting at 1.
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One lexical token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// An identifier (command or test name).
    Identifier(String),
    /// A tagged argument, without its colon.
    Tag(String),
    /// A number with its quantifier applied.
    Number(u64),
    /// A quoted string, escapes resolved.
    Quoted(String),
    /// A `text:` multi-line string, dot-unstuffed.
    MultiLine(String),
    /// `;`
    Semicolon,
    /// `,`
    Comma,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `[`
    LBracket,
    /// `]`
    RBracket,
    /// `{`
    LBrace,
    /// `}`
    RBrace,
    /// A lexical error: the message says what was expected.
    Error(String),
    /// End of input.
    Eof,
}

impl Token {
    /// A short human description of the token, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Token::Identifier(s) => format!("identifier '{s}'"),
            Token::Tag(s) => format!("tag ':{s}'"),
            Token::Number(n) => format!("number {n}"),
            Token::Quoted(_) | Token::MultiLine(_) => "string".into(),
            Token::Semicolon => "';'".into(),
            Token::Comma => "','".into(),
            Token::LParen => "'('".into(),
            Token::RParen => "')'".into(),
            Token::LBracket => "'['".into(),
            Token::RBracket => "']'".into(),
            Token::LBrace => "'{'".into(),
            Token::RBrace => "'}'".into(),
            Token::Error(_) => "invalid token".into(),
            Token::Eof => "end of script".into(),
        }
    }
}

/// The lexer state over a byte slice.
pub struct Lexer<'a> {
    src: &'a [u8],
    at: usize,
    line: u32,
    col: u32,
    /// Errors that did not stop the token (number too large, name too long).
    pub soft_errors: Vec<(Pos, String)>,
}

impl<'a> Lexer<'a> {
    /// A lexer over `src`.
    pub fn new(src: &'a [u8]) -> Self {
        Lexer {
            src,
            at: 0,
            line: 1,
            col: 1,
            soft_errors: Vec::new(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.at).copied()
    }

    fn peek_at(&self, off: usize) -> Option<u8> {
        self.src.get(self.at + off).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.at += 1;
        if c == b'\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }

    /// Skip whitespace and comments; an unterminated bracket comment is an error token.
    fn skip_blank(&mut self) -> Option<(Pos, Token)> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => {
                    self.bump();
                }
                Some(b'#') => {
                    while let Some(c) = self.bump() {
                        if c == b'\n' {
                            break;
                        }
                    }
                }
                Some(b'/') if self.peek_at(1) == Some(b'*') => {
                    let start = self.pos();
                    self.bump();
                    self.bump();
                    loop {
                        match self.bump() {
                            None => {
                                return Some((
                                    start,
                                    Token::Error(
                                        "end of bracket comment '*/' before end of script".into(),
                                    ),
                                ));
                            }
                            Some(b'*') if self.peek() == Some(b'/') => {
                                self.bump();
                                break;
                            }
                            Some(_) => {}
                        }
                    }
                }
                _ => return None,
            }
        }
    }

    /// The next token and where it starts.
    pub fn next_token(&mut self) -> (Pos, Token) {
        if let Some(err) = self.skip_blank() {
            return err;
        }
        let pos = self.pos();
        let Some(c) = self.peek() else {
            return (pos, Token::Eof);
        };
        let tok = match c {
            b';' => self.single(Token::Semicolon),
            b',' => self.single(Token::Comma),
            b'(' => self.single(Token::LParen),
            b')' => self.single(Token::RParen),
            b'[' => self.single(Token::LBracket),
            b']' => self.single(Token::RBracket),
            b'{' => self.single(Token::LBrace),
            b'}' => self.single(Token::RBrace),
            b'"' => self.quoted(),
            b':' => {
                self.bump();
                match self.peek() {
                    Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                        let name = self.ident_chars();
                        if name.len() > MAX_IDENTIFIER {
                            self.soft_errors
                                .push((pos, format!("tag ':{}...' is too long", prefix(&name))));
                        }
                        Token::Tag(name)
                    }
                    _ => Token::Error("expected a tag name after ':'".into()),
                }
            }
            b'0'..=b'9' => self.number(pos),
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let name = self.ident_chars();
                if name.eq_ignore_ascii_case("text") && self.peek() == Some(b':') {
                    self.bump();
                    self.multiline()
                } else {
                    if name.len() > MAX_IDENTIFIER {
                        self.soft_errors.push((
                            pos,
                            format!("identifier '{}...' is too long", prefix(&name)),
                        ));
                    }
                    Token::Identifier(name)
                }
            }
            other => {
                // A run of garbage is one error (the first byte is always consumed).
                self.bump();
                while let Some(c) = self.peek() {
                    if c.is_ascii_alphanumeric() || b" \t\r\n;,()[]{}\":#/_".contains(&c) {
                        break;
                    }
                    self.bump();
                }
                Token::Error(format!(
                    "unexpected character '{}'",
                    char::from(other).escape_default()
                ))
            }
        };
        (pos, tok)
    }

    fn single(&mut self, t: Token) -> Token {
        self.bump();
        t
    }

    fn ident_chars(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'_' {
                s.push(char::from(c));
                self.bump();
            } else {
                break;
            }
        }
        s
    }

    fn number(&mut self, pos: Pos) -> Token {
        let mut value: Option<u64> = Some(0);
        while let Some(c) = self.peek() {
            if !c.is_ascii_digit() {
                break;
            }
            self.bump();
            value = value
                .and_then(|v| v.checked_mul(10))
                .and_then(|v| v.checked_add(u64::from(c - b'0')));
        }
        let mult: u64 = match self.peek() {
            Some(b'k' | b'K') => 1 << 10,
            Some(b'm' | b'M') => 1 << 20,
            Some(b'g' | b'G') => 1 << 30,
            _ => 1,
        };
        if mult != 1 {
            self.bump();
        }
        match value.and_then(|v| v.checked_mul(mult)) {
            Some(v) => Token::Number(v),
            None => {
                self.soft_errors.push((pos, "number is too large".into()));
                Token::Number(u64::MAX)
            }
        }
    }

    fn quoted(&mut self) -> Token {
        self.bump();
        let mut out = Vec::new();
        loop {
            match self.bump() {
                None => {
                    return Token::Error("end of quoted string '\"' before end of script".into());
                }
                Some(b'"') => break,
                Some(b'\\') => match self.bump() {
                    Some(c) => out.push(c),
                    None => {
                        return Token::Error("end of quoted string before end of script".into());
                    }
                },
                Some(b'\r') if self.peek() == Some(b'\n') => {}
                Some(b'\n') => out.extend_from_slice(b"\r\n"),
                Some(c) => out.push(c),
            }
        }
        match String::from_utf8(out) {
            Ok(s) => Token::Quoted(s),
            Err(_) => Token::Error("string is not valid UTF-8".into()),
        }
    }

    fn multiline(&mut self) -> Token {
        // After "text:" only whitespace and a hash comment may follow on the line.
        loop {
            match self.peek() {
                Some(b' ' | b'\t') => {
                    self.bump();
                }
                Some(b'#') => {
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                Some(b'\r') if self.peek_at(1) == Some(b'\n') => {
                    self.bump();
                }
                Some(b'\n') => {
                    self.bump();
                    break;
                }
                None => {
                    return Token::Error("end of multi-line string before end of script".into());
                }
                Some(_) => {
                    self.bump();
                    return Token::Error("expected a line break after 'text:'".into());
                }
            }
        }
        let mut out: Vec<u8> = Vec::new();
        loop {
            let mut line = Vec::new();
            let mut ended = false;
            while let Some(c) = self.bump() {
                if c == b'\n' {
                    ended = true;
                    break;
                }
                line.push(c);
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line == b"." {
                break;
            }
            if !ended {
                return Token::Error("end of multi-line string '.' before end of script".into());
            }
            let body = if line.starts_with(b"..") {
                line.get(1..).unwrap_or_default()
            } else {
                &line[..]
            };
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        }
        match String::from_utf8(out) {
            Ok(s) => Token::MultiLine(s),
            Err(_) => Token::Error("string is not valid UTF-8".into()),
        }
    }
}

fn prefix(s: &str) -> &str {
    s.get(..MAX_IDENTIFIER).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Token> {
        let mut l = Lexer::new(s.as_bytes());
        let mut v = Vec::new();
        loop {
            let (_, t) = l.next_token();
            if t == Token::Eof {
                return v;
            }
            v.push(t);
        }
    }

    #[test]
    fn table() {
        let cases: &[(&str, Vec<Token>)] = &[
            (
                "keep;",
                vec![Token::Identifier("keep".into()), Token::Semicolon],
            ),
            (
                "size :over 1K",
                vec![
                    Token::Identifier("size".into()),
                    Token::Tag("over".into()),
                    Token::Number(1024),
                ],
            ),
            ("\"a\\\"b\\c\"", vec![Token::Quoted("a\"bc".into())]),
            (
                "text: # c\nx\n..y\n.\n",
                vec![Token::MultiLine("x\r\n.y\r\n".into())],
            ),
            ("/* c */ # x\nstop", vec![Token::Identifier("stop".into())]),
            ("18446744073709551616", vec![Token::Number(u64::MAX)]),
            ("18446744073709551615", vec![Token::Number(u64::MAX)]),
            // Regression: a lone '/' used to yield an empty error token forever.
            (
                "/x",
                vec![
                    Token::Error("unexpected character '/'".into()),
                    Token::Identifier("x".into()),
                ],
            ),
            (
                "$$$;",
                vec![
                    Token::Error("unexpected character '$'".into()),
                    Token::Semicolon,
                ],
            ),
        ];
        for (src, want) in cases {
            assert_eq!(&toks(src), want, "{src}");
        }
    }

    #[test]
    fn positions() {
        let mut l = Lexer::new(b"a\n  b");
        assert_eq!(l.next_token().0, Pos { line: 1, col: 1 });
        assert_eq!(l.next_token().0, Pos { line: 2, col: 3 });
    }
}
