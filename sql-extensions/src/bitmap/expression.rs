//! Tag expressions: the audience language of `audience('...')` / `audience_bitmap('...')`.
//!
//! ```text
//! (high_spender | vip) & country:tw - churned
//! ```
//!
//! - `name` is a boolean tag; `name:value` one value of a valued tag (`lifecycle:active`); a value
//!   with other characters is double-quoted: `tier:"gold plus"`.
//! - `&` and, `^` xor, `|` or, `-` and not; parentheses group. `&` binds tighter than `^`, which
//!   binds tighter than `|` and `-`; operators of one level apply left to right, as in set algebra:
//!   `a | b - c` is `(a | b) - c`.
//!
//! Parsing needs no tags; evaluation asks a resolver for each tag's bitmap, so an unknown tag is
//! reported by whoever knows the tags (the engine's catalog), naming it.

use std::fmt;

use datafusion::common::plan_err;
use datafusion::error::Result;
use roaring::RoaringTreemap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagExpr {
    Tag { name: String, value: Option<String> },
    And(Box<TagExpr>, Box<TagExpr>),
    Xor(Box<TagExpr>, Box<TagExpr>),
    Or(Box<TagExpr>, Box<TagExpr>),
    AndNot(Box<TagExpr>, Box<TagExpr>),
}

impl fmt::Display for TagExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagExpr::Tag { name, value: None } => write!(f, "{name}"),
            TagExpr::Tag {
                name,
                value: Some(value),
            } => {
                if value.chars().all(is_value_char) && !value.is_empty() {
                    write!(f, "{name}:{value}")
                } else {
                    write!(f, "{name}:\"{}\"", value.replace('"', "\\\""))
                }
            }
            TagExpr::And(l, r) => write!(f, "({l} & {r})"),
            TagExpr::Xor(l, r) => write!(f, "({l} ^ {r})"),
            TagExpr::Or(l, r) => write!(f, "({l} | {r})"),
            TagExpr::AndNot(l, r) => write!(f, "({l} - {r})"),
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_value_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.')
}

impl TagExpr {
    /// Parses `text`; errors name the position (in characters) and what was expected.
    pub fn parse(text: &str) -> Result<TagExpr> {
        let mut parser = Parser {
            chars: text.chars().collect(),
            at: 0,
            depth: 0,
            terms: 0,
        };
        let expr = parser.union()?;
        parser.skip_spaces();
        match parser.peek() {
            None => Ok(expr),
            Some(')') => parser.error("')' without a matching '('"),
            Some(c) => parser.error(&format!("expected an operator (& ^ | -), found '{c}'")),
        }
    }

    /// Every (tag, value) the expression refers to, in order of appearance.
    pub fn tags(&self) -> Vec<(&str, Option<&str>)> {
        match self {
            TagExpr::Tag { name, value } => vec![(name.as_str(), value.as_deref())],
            TagExpr::And(l, r) | TagExpr::Xor(l, r) | TagExpr::Or(l, r) | TagExpr::AndNot(l, r) => {
                let mut tags = l.tags();
                tags.extend(r.tags());
                tags
            }
        }
    }

    /// The users the expression selects, given each tag's users.
    pub fn evaluate(
        &self,
        resolve: &mut dyn FnMut(&str, Option<&str>) -> Result<RoaringTreemap>,
    ) -> Result<RoaringTreemap> {
        Ok(match self {
            TagExpr::Tag { name, value } => resolve(name, value.as_deref())?,
            TagExpr::And(l, r) => l.evaluate(resolve)? & r.evaluate(resolve)?,
            TagExpr::Xor(l, r) => l.evaluate(resolve)? ^ r.evaluate(resolve)?,
            TagExpr::Or(l, r) => l.evaluate(resolve)? | r.evaluate(resolve)?,
            TagExpr::AndNot(l, r) => l.evaluate(resolve)? - r.evaluate(resolve)?,
        })
    }
}

/// Parsing, evaluation and dropping recurse over the tree: bounding its depth and size keeps a
/// hostile expression from overflowing the stack (found by the `tag_expression` fuzz target).
const MAX_DEPTH: usize = 64;
const MAX_TERMS: usize = 1000;

struct Parser {
    chars: Vec<char>,
    at: usize,
    depth: usize,
    terms: usize,
}

impl Parser {
    fn error<T>(&self, message: &str) -> Result<T> {
        plan_err!("tag expression: {message} at position {}", self.at)
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    /// The next operator among `ops`, consumed.
    fn operator(&mut self, ops: &[char]) -> Option<char> {
        self.skip_spaces();
        let op = self.peek().filter(|c| ops.contains(c))?;
        self.at += 1;
        Some(op)
    }

    fn union(&mut self) -> Result<TagExpr> {
        let mut left = self.xor()?;
        while let Some(op) = self.operator(&['|', '-']) {
            let right = Box::new(self.xor()?);
            left = if op == '|' {
                TagExpr::Or(Box::new(left), right)
            } else {
                TagExpr::AndNot(Box::new(left), right)
            };
        }
        Ok(left)
    }

    fn xor(&mut self) -> Result<TagExpr> {
        let mut left = self.and()?;
        while self.operator(&['^']).is_some() {
            left = TagExpr::Xor(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<TagExpr> {
        let mut left = self.primary()?;
        while self.operator(&['&']).is_some() {
            left = TagExpr::And(Box::new(left), Box::new(self.primary()?));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<TagExpr> {
        self.skip_spaces();
        match self.peek() {
            Some('(') => {
                if self.depth == MAX_DEPTH {
                    return self.error(&format!("nested more than {MAX_DEPTH} levels deep"));
                }
                self.at += 1;
                self.depth += 1;
                let inner = self.union()?;
                self.depth -= 1;
                self.skip_spaces();
                if self.peek() != Some(')') {
                    return self.error("expected ')'");
                }
                self.at += 1;
                Ok(inner)
            }
            Some(c) if is_name_char(c) => {
                self.terms += 1;
                if self.terms > MAX_TERMS {
                    return self.error(&format!("more than {MAX_TERMS} tags in one expression"));
                }
                let name = self.take_while(is_name_char);
                let value = if self.peek() == Some(':') {
                    self.at += 1;
                    Some(self.value()?)
                } else {
                    None
                };
                Ok(TagExpr::Tag { name, value })
            }
            Some(c) => self.error(&format!("expected a tag name or '(', found '{c}'")),
            None => self.error("expected a tag name or '(', found the end"),
        }
    }

    fn value(&mut self) -> Result<String> {
        if self.peek() != Some('"') {
            let value = self.take_while(is_value_char);
            if value.is_empty() {
                return self.error("expected a tag value after ':'");
            }
            return Ok(value);
        }
        self.at += 1;
        let mut value = String::new();
        loop {
            match self.peek() {
                None => return self.error("unterminated quoted value"),
                Some('\\') if self.chars.get(self.at + 1) == Some(&'"') => {
                    value.push('"');
                    self.at += 2;
                }
                Some('"') => {
                    self.at += 1;
                    return Ok(value);
                }
                Some(c) => {
                    value.push(c);
                    self.at += 1;
                }
            }
        }
    }

    fn take_while(&mut self, keep: fn(char) -> bool) -> String {
        let start = self.at;
        while self.peek().is_some_and(keep) {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parsed(text: &str) -> String {
        TagExpr::parse(text).unwrap().to_string()
    }

    #[test]
    fn precedence_is_and_then_xor_then_union_left_to_right() {
        assert_eq!(parsed("a | b & c"), "(a | (b & c))");
        assert_eq!(parsed("a ^ b & c | d"), "((a ^ (b & c)) | d)");
        assert_eq!(parsed("a | b - c"), "((a | b) - c)");
        assert_eq!(parsed("a - b | c"), "((a - b) | c)");
        assert_eq!(
            parsed("(high_spender | vip) & country:tw - churned"),
            "(((high_spender | vip) & country:tw) - churned)"
        );
        assert_eq!(parsed("tier:\"gold plus\"&x"), "(tier:\"gold plus\" & x)");
    }

    #[test]
    fn hostile_depth_and_length_are_errors_not_stack_overflows() {
        let deep = format!("{}a{}", "(".repeat(200_000), ")".repeat(200_000));
        let err = TagExpr::parse(&deep).unwrap_err().to_string();
        assert!(err.contains("nested more than 64"), "{err}");
        let long = vec!["a"; 200_000].join(" & ");
        let err = TagExpr::parse(&long).unwrap_err().to_string();
        assert!(err.contains("more than 1000 tags"), "{err}");
        let fine = format!("{}a{}", "(".repeat(64), ")".repeat(64));
        TagExpr::parse(&fine).unwrap();
    }

    #[test]
    fn malformed_expressions_name_the_position() {
        for (text, message) in [
            (
                "",
                "expected a tag name or '(', found the end at position 0",
            ),
            ("a &", "found the end at position 3"),
            ("(a | b", "expected ')' at position 6"),
            ("a | b)", "')' without a matching '(' at position 5"),
            (
                "a b",
                "expected an operator (& ^ | -), found 'b' at position 2",
            ),
            ("a:", "expected a tag value after ':' at position 2"),
            ("a:\"x", "unterminated quoted value at position 4"),
            ("a * b", "found '*' at position 2"),
        ] {
            let error = TagExpr::parse(text).unwrap_err().to_string();
            assert!(error.contains(message), "{text:?}: {error}");
        }
    }

    #[test]
    fn evaluates_with_set_algebra_and_reports_unknown_tags() {
        let tags: HashMap<&str, RoaringTreemap> = [
            ("a", [1, 2, 3].into_iter().collect()),
            ("b", [2, 3, 4].into_iter().collect()),
            ("c", [3, 1 << 40].into_iter().collect()),
        ]
        .into_iter()
        .collect();
        let mut resolve = |name: &str, _: Option<&str>| match tags.get(name) {
            Some(b) => Ok(b.clone()),
            None => plan_err!("unknown tag '{name}'"),
        };
        let eval =
            |text: &str, resolve: &mut dyn FnMut(&str, Option<&str>) -> Result<RoaringTreemap>| {
                TagExpr::parse(text)
                    .and_then(|e| e.evaluate(resolve))
                    .map(|b| b.iter().collect::<Vec<_>>())
            };
        assert_eq!(eval("a & b", &mut resolve).unwrap(), vec![2, 3]);
        assert_eq!(
            eval("a ^ b | c", &mut resolve).unwrap(),
            vec![1, 3, 4, 1 << 40]
        );
        assert_eq!(eval("a | b - c", &mut resolve).unwrap(), vec![1, 2, 4]);
        let error = eval("a & nope", &mut resolve).unwrap_err().to_string();
        assert!(error.contains("unknown tag 'nope'"), "{error}");
    }
}
