//! Parser: builds the syntax tree of a Sieve script from tokens (RFC 5228 §8.2 grammar).
//!
//! Trusts nothing. Every error carries a `line:column` and names what was expected; after
//! an error the parser skips to the end of the command (`;` or a closing block) and goes
//! on, so one pass reports many errors. Block nesting is bounded by `max_nesting`, so a
//! hostile script cannot exhaust the stack.

use crate::error::{CompileError, Diagnostics};
use crate::lexer::{Lexer, Pos, Token};

/// A string literal with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrLit {
    /// The literal text after escapes and dot-unstuffing.
    pub value: String,
    /// Where it starts.
    pub pos: Pos,
}

/// One argument of a command or test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// `:name`
    Tag(String, Pos),
    /// A number.
    Number(u64, Pos),
    /// A single string.
    Str(StrLit),
    /// A bracketed string list.
    List(Vec<StrLit>, Pos),
}

impl Arg {
    /// Where the argument starts.
    pub fn pos(&self) -> Pos {
        match self {
            Arg::Tag(_, p) | Arg::Number(_, p) | Arg::List(_, p) => *p,
            Arg::Str(s) => s.pos,
        }
    }
}

/// A test, possibly with nested tests (`not`, `allof`, `anyof`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestNode {
    /// Lower-cased test name.
    pub name: String,
    /// Where the name starts.
    pub pos: Pos,
    /// Arguments in order.
    pub args: Vec<Arg>,
    /// Nested tests.
    pub tests: Vec<TestNode>,
    /// Whether the nested tests were a parenthesised list.
    pub test_list: bool,
}

/// A command, possibly with a test and a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandNode {
    /// Lower-cased command name.
    pub name: String,
    /// Where the name starts.
    pub pos: Pos,
    /// Arguments in order.
    pub args: Vec<Arg>,
    /// Tests (for `if`, `elsif`; empty otherwise unless misused).
    pub tests: Vec<TestNode>,
    /// Whether the tests were a parenthesised list.
    pub test_list: bool,
    /// The block, if the command ended with one.
    pub block: Option<Vec<CommandNode>>,
}

/// Most arguments one command or test may have.
pub const MAX_ARGUMENTS: usize = 32;

struct Parser<'a> {
    lexer: Lexer<'a>,
    tok: Token,
    pos: Pos,
    diag: &'a mut Diagnostics,
    max_nesting: usize,
    /// Set after a nesting error: unwind without further messages.
    bail: bool,
}

/// Parse a whole script. Errors are added to `diag`; the tree is returned even when
/// errors occurred (it holds what could be parsed).
pub fn parse(src: &[u8], max_nesting: usize, diag: &mut Diagnostics) -> Vec<CommandNode> {
    let mut lexer = Lexer::new(src);
    let (pos, tok) = lexer.next_token();
    let mut p = Parser {
        lexer,
        tok,
        pos,
        diag,
        max_nesting,
        bail: false,
    };
    p.skip_lex_errors();
    let cmds = p.commands(0);
    if p.tok != Token::Eof {
        let (pos, what) = (p.pos, p.tok.describe());
        p.err(pos, format!("unexpected {what}, expected a command"));
    }
    cmds
}

impl Parser<'_> {
    fn err(&mut self, pos: Pos, msg: String) {
        if !self.bail {
            self.diag.push(CompileError::new(pos, msg));
        }
    }

    fn advance(&mut self) {
        let (pos, tok) = self.lexer.next_token();
        self.pos = pos;
        self.tok = tok;
        self.skip_lex_errors();
    }

    /// Report lexical errors; an error token stays current so the parser also reports
    /// what it expected there.
    fn skip_lex_errors(&mut self) {
        for (p, m) in std::mem::take(&mut self.lexer.soft_errors) {
            self.err(p, m);
        }
        if let Token::Error(msg) = &self.tok {
            let msg = msg.clone();
            let pos = self.pos;
            self.err(pos, msg);
        }
    }

    /// Skip to the end of the current command after an error.
    fn recover(&mut self) {
        let mut depth = 0usize;
        loop {
            match self.tok {
                Token::Eof => return,
                Token::Semicolon if depth == 0 => {
                    self.advance();
                    return;
                }
                Token::LBrace => depth += 1,
                Token::RBrace => {
                    if depth == 0 {
                        return;
                    }
                    depth -= 1;
                    if depth == 0 {
                        self.advance();
                        return;
                    }
                }
                _ => {}
            }
            self.advance();
        }
    }

    fn commands(&mut self, depth: usize) -> Vec<CommandNode> {
        let mut out = Vec::new();
        loop {
            match &self.tok {
                Token::Eof | Token::RBrace => return out,
                Token::Identifier(_) => {
                    if let Some(c) = self.command(depth) {
                        out.push(c);
                    }
                }
                other => {
                    let what = other.describe();
                    let pos = self.pos;
                    self.err(
                        pos,
                        format!("unexpected {what}, expected a command identifier"),
                    );
                    self.recover();
                    if self.tok == Token::RBrace && depth == 0 {
                        self.advance();
                    }
                }
            }
        }
    }

    fn command(&mut self, depth: usize) -> Option<CommandNode> {
        let Token::Identifier(name) = &self.tok else {
            return None;
        };
        let name = name.to_ascii_lowercase();
        let pos = self.pos;
        self.advance();
        let Some((args, tests, test_list)) = self.arguments(0) else {
            self.recover();
            self.bail = false;
            return None;
        };
        let mut node = CommandNode {
            name,
            pos,
            args,
            tests,
            test_list,
            block: None,
        };
        match self.tok {
            Token::Semicolon => {
                self.advance();
                Some(node)
            }
            Token::LBrace => {
                if depth + 1 > self.max_nesting {
                    let p = self.pos;
                    self.err(
                        p,
                        format!("blocks nested deeper than {} levels", self.max_nesting),
                    );
                    self.recover();
                    return None;
                }
                self.advance();
                let body = self.commands(depth + 1);
                if self.tok != Token::RBrace {
                    let (p, what) = (self.pos, self.tok.describe());
                    self.err(
                        p,
                        format!(
                            "unexpected {what}, expected '}}' to close the block of '{}'",
                            node.name
                        ),
                    );
                    return None;
                }
                self.advance();
                node.block = Some(body);
                Some(node)
            }
            _ => {
                let (p, what) = (self.pos, self.tok.describe());
                self.err(
                    p,
                    format!(
                        "unexpected {what}, expected ';' or '{{' after command '{}'",
                        node.name
                    ),
                );
                self.recover();
                None
            }
        }
    }

    /// `*argument [test / test-list]`
    fn arguments(&mut self, depth: usize) -> Option<(Vec<Arg>, Vec<TestNode>, bool)> {
        let mut args = Vec::new();
        loop {
            let pos = self.pos;
            if args.len() > MAX_ARGUMENTS {
                self.err(
                    pos,
                    format!("too many arguments (more than {MAX_ARGUMENTS})"),
                );
                return None;
            }
            match &self.tok {
                Token::Tag(t) => {
                    args.push(Arg::Tag(t.to_ascii_lowercase(), pos));
                    self.advance();
                }
                Token::Number(n) => {
                    args.push(Arg::Number(*n, pos));
                    self.advance();
                }
                Token::Quoted(s) | Token::MultiLine(s) => {
                    args.push(Arg::Str(StrLit {
                        value: s.clone(),
                        pos,
                    }));
                    self.advance();
                }
                Token::LBracket => {
                    self.advance();
                    let list = self.string_list()?;
                    args.push(Arg::List(list, pos));
                }
                _ => break,
            }
        }
        match &self.tok {
            Token::Identifier(_) => {
                let t = self.test(depth + 1)?;
                Some((args, vec![t], false))
            }
            Token::LParen => {
                self.advance();
                let tests = self.test_list(depth + 1)?;
                Some((args, tests, true))
            }
            _ => Some((args, Vec::new(), false)),
        }
    }

    fn string_list(&mut self) -> Option<Vec<StrLit>> {
        let mut out = Vec::new();
        loop {
            let pos = self.pos;
            match &self.tok {
                Token::Quoted(s) | Token::MultiLine(s) => {
                    out.push(StrLit {
                        value: s.clone(),
                        pos,
                    });
                    self.advance();
                }
                other => {
                    let what = other.describe();
                    self.err(
                        pos,
                        format!("unexpected {what}, expected a string in the string list"),
                    );
                    return None;
                }
            }
            match self.tok {
                Token::Comma => self.advance(),
                Token::RBracket => {
                    self.advance();
                    return Some(out);
                }
                _ => {
                    let (p, what) = (self.pos, self.tok.describe());
                    self.err(
                        p,
                        format!("unexpected {what}, expected ',' or ']' in the string list"),
                    );
                    return None;
                }
            }
        }
    }

    fn test(&mut self, depth: usize) -> Option<TestNode> {
        if depth > self.max_nesting {
            let p = self.pos;
            self.err(
                p,
                format!("tests nested deeper than {} levels", self.max_nesting),
            );
            self.bail = true;
            return None;
        }
        let Token::Identifier(name) = &self.tok else {
            let (p, what) = (self.pos, self.tok.describe());
            self.err(p, format!("unexpected {what}, expected a test identifier"));
            return None;
        };
        let name = name.to_ascii_lowercase();
        let pos = self.pos;
        self.advance();
        let (args, tests, test_list) = self.arguments(depth)?;
        Some(TestNode {
            name,
            pos,
            args,
            tests,
            test_list,
        })
    }

    fn test_list(&mut self, depth: usize) -> Option<Vec<TestNode>> {
        let mut out = Vec::new();
        loop {
            out.push(self.test(depth)?);
            match self.tok {
                Token::Comma => self.advance(),
                Token::RParen => {
                    self.advance();
                    return Some(out);
                }
                _ => {
                    let (p, what) = (self.pos, self.tok.describe());
                    self.err(
                        p,
                        format!("unexpected {what}, expected ',' or ')' in the test list"),
                    );
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(src: &str) -> Vec<CommandNode> {
        let mut d = Diagnostics::default();
        let c = parse(src.as_bytes(), 32, &mut d);
        assert!(d.errors.is_empty(), "{src}: {:?}", d.errors);
        c
    }

    #[test]
    fn shapes() {
        let c = parse_ok("if anyof (true, not false) { keep; } else { discard; }");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].tests[0].name, "anyof");
        assert_eq!(c[0].tests[0].tests.len(), 2);
        let c = parse_ok("fileinto :copy [\"a\", \"b\"];");
        assert_eq!(c[0].args.len(), 2);
    }

    #[test]
    fn errors_name_position_and_expectation() {
        let cases = [
            ("keep", "1:5", "expected ';'"),
            ("if true { keep;", "1:16", "expected '}'"),
            ("fileinto [\"a\" \"b\"];", "1:15", "expected ',' or ']'"),
        ];
        for (src, pos, want) in cases {
            let mut d = Diagnostics::default();
            parse(src.as_bytes(), 32, &mut d);
            let e = d.errors.first().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.starts_with(pos) && e.contains(want), "{src}: {e}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let src = "if true {".repeat(100);
        let mut d = Diagnostics::default();
        parse(src.as_bytes(), 32, &mut d);
        assert!(!d.errors.is_empty());
    }
}
