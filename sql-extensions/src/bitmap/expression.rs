//! Tag expressions: the audience language of `audience('...')` / `audience_bitmap('...')`.
//!
//! ```text
//! (high_spender | vip) & country:tw - churned & lifetime_orders >= 3 & ltv:[100,500)
//! ```
//!
//! - `name` is a boolean tag; `name:value` one value of a valued tag (`lifecycle:active`); a value
//!   with other characters is double-quoted: `tier:"gold plus"`.
//! - Comparisons select by a trait's value: `name >= 3`, `>`, `<`, `<=`, `=`, `!=`, and
//!   intervals `name:[100,500)` (`[`/`]` include the bound, `(`/`)` exclude it; an empty
//!   bound is open: `ltv:[100,)`). A literal is a number, a word (`true`, `shoes`) or a
//!   double-quoted text (`last_seen >= "2026-11-01"`); its type is the trait's.
//! - `&` and, `^` xor, `|` or, `-` and not; parentheses group. `&` binds tighter than `^`, which
//!   binds tighter than `|` and `-`; operators of one level apply left to right, as in set algebra:
//!   `a | b - c` is `(a | b) - c`.
//!
//! Parsing needs no tags; evaluation asks a resolver for each term's bitmap, so an unknown tag is
//! reported by whoever knows the tags (the engine's catalog), naming it.

use std::fmt;
use std::ops::Bound;

use datafusion::common::plan_err;
use datafusion::error::Result;
use roaring::RoaringTreemap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagExpr {
    Term(Term),
    And(Box<TagExpr>, Box<TagExpr>),
    Xor(Box<TagExpr>, Box<TagExpr>),
    Or(Box<TagExpr>, Box<TagExpr>),
    AndNot(Box<TagExpr>, Box<TagExpr>),
}

/// One leaf of an expression: what a resolver turns into a bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// `name` or `name:value`.
    Tag { name: String, value: Option<String> },
    /// `name op literal`.
    Compare {
        name: String,
        op: CompareOp,
        literal: String,
    },
    /// `name:[low,high)`; an unbounded side is open.
    Interval {
        name: String,
        low: Bound<String>,
        high: Bound<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }
}

/// A range of values by its bounds, as literals not yet typed.
pub type LiteralRange = (Bound<String>, Bound<String>);

impl Term {
    pub fn name(&self) -> &str {
        match self {
            Term::Tag { name, .. } | Term::Compare { name, .. } | Term::Interval { name, .. } => {
                name
            }
        }
    }

    /// The value ranges a comparison or interval selects, whose union is the selection
    /// (`!=` is the two sides of the value); `None` for a tag term.
    pub fn ranges(&self) -> Option<Vec<LiteralRange>> {
        use Bound::{Excluded, Included, Unbounded};
        match self {
            Term::Tag { .. } => None,
            Term::Interval { low, high, .. } => Some(vec![(low.clone(), high.clone())]),
            Term::Compare { op, literal, .. } => {
                let v = || literal.clone();
                Some(match op {
                    CompareOp::Eq => vec![(Included(v()), Included(v()))],
                    CompareOp::Ne => vec![(Unbounded, Excluded(v())), (Excluded(v()), Unbounded)],
                    CompareOp::Lt => vec![(Unbounded, Excluded(v()))],
                    CompareOp::Le => vec![(Unbounded, Included(v()))],
                    CompareOp::Gt => vec![(Excluded(v()), Unbounded)],
                    CompareOp::Ge => vec![(Included(v()), Unbounded)],
                })
            }
        }
    }
}

fn write_literal(f: &mut fmt::Formatter<'_>, literal: &str) -> fmt::Result {
    if is_plain_literal(literal) {
        write!(f, "{literal}")
    } else {
        write!(f, "\"{}\"", literal.replace('"', "\\\""))
    }
}

/// A literal that needs no quotes: a word or a number (`-` only in front).
fn is_plain_literal(literal: &str) -> bool {
    let body = literal.strip_prefix('-').unwrap_or(literal);
    !body.is_empty() && body.chars().all(is_value_char)
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::Tag { name, value: None } => write!(f, "{name}"),
            Term::Tag {
                name,
                value: Some(value),
            } => {
                if value.chars().all(is_value_char) && !value.is_empty() {
                    write!(f, "{name}:{value}")
                } else {
                    write!(f, "{name}:\"{}\"", value.replace('"', "\\\""))
                }
            }
            Term::Compare { name, op, literal } => {
                write!(f, "{name} {} ", op.symbol())?;
                write_literal(f, literal)
            }
            Term::Interval { name, low, high } => {
                write!(f, "{name}:")?;
                match low {
                    Bound::Included(v) => {
                        f.write_str("[")?;
                        write_literal(f, v)?;
                    }
                    Bound::Excluded(v) => {
                        f.write_str("(")?;
                        write_literal(f, v)?;
                    }
                    Bound::Unbounded => f.write_str("(")?,
                }
                f.write_str(",")?;
                match high {
                    Bound::Included(v) => {
                        write_literal(f, v)?;
                        f.write_str("]")
                    }
                    Bound::Excluded(v) => {
                        write_literal(f, v)?;
                        f.write_str(")")
                    }
                    Bound::Unbounded => f.write_str(")"),
                }
            }
        }
    }
}

impl fmt::Display for TagExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagExpr::Term(term) => write!(f, "{term}"),
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

    /// Every term of the expression, in order of appearance.
    pub fn terms(&self) -> Vec<&Term> {
        match self {
            TagExpr::Term(term) => vec![term],
            TagExpr::And(l, r) | TagExpr::Xor(l, r) | TagExpr::Or(l, r) | TagExpr::AndNot(l, r) => {
                let mut terms = l.terms();
                terms.extend(r.terms());
                terms
            }
        }
    }

    /// The users the expression selects, given each term's users.
    pub fn evaluate(
        &self,
        resolve: &mut dyn FnMut(&Term) -> Result<RoaringTreemap>,
    ) -> Result<RoaringTreemap> {
        Ok(match self {
            TagExpr::Term(term) => resolve(term)?,
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
                if self.peek() == Some(':') {
                    self.at += 1;
                    if matches!(self.peek(), Some('[' | '(')) {
                        return self.interval(name);
                    }
                    let value = Some(self.value()?);
                    return Ok(TagExpr::Term(Term::Tag { name, value }));
                }
                match self.compare_op() {
                    Some(op) => {
                        let literal = self.literal(op.symbol())?;
                        Ok(TagExpr::Term(Term::Compare { name, op, literal }))
                    }
                    None => Ok(TagExpr::Term(Term::Tag { name, value: None })),
                }
            }
            Some(c) => self.error(&format!("expected a tag name or '(', found '{c}'")),
            None => self.error("expected a tag name or '(', found the end"),
        }
    }

    /// A comparison operator after a name, consumed.
    fn compare_op(&mut self) -> Option<CompareOp> {
        let start = self.at;
        self.skip_spaces();
        let next = self.chars.get(self.at + 1).copied();
        let (op, width) = match (self.peek(), next) {
            (Some('>'), Some('=')) => (CompareOp::Ge, 2),
            (Some('<'), Some('=')) => (CompareOp::Le, 2),
            (Some('!'), Some('=')) => (CompareOp::Ne, 2),
            (Some('>'), _) => (CompareOp::Gt, 1),
            (Some('<'), _) => (CompareOp::Lt, 1),
            (Some('='), _) => (CompareOp::Eq, 1),
            _ => {
                self.at = start;
                return None;
            }
        };
        self.at += width;
        Some(op)
    }

    /// A literal: a double-quoted text, or a word or number (with an optional leading `-`).
    fn literal(&mut self, after: &str) -> Result<String> {
        self.skip_spaces();
        if self.peek() == Some('"') {
            return self.quoted();
        }
        let negative = self.peek() == Some('-');
        if negative {
            self.at += 1;
        }
        let body = self.take_while(is_value_char);
        if body.is_empty() {
            return self.error(&format!("expected a value after '{after}'"));
        }
        Ok(if negative { format!("-{body}") } else { body })
    }

    /// `[low,high)` after `name:`; either bound may be left empty (open).
    fn interval(&mut self, name: String) -> Result<TagExpr> {
        let low_included = self.peek() == Some('[');
        self.at += 1;
        self.skip_spaces();
        let low = if self.peek() == Some(',') {
            Bound::Unbounded
        } else {
            let value = self.literal("[")?;
            if low_included {
                Bound::Included(value)
            } else {
                Bound::Excluded(value)
            }
        };
        self.skip_spaces();
        if self.peek() != Some(',') {
            return self.error("expected ',' between the bounds of an interval");
        }
        self.at += 1;
        self.skip_spaces();
        let high = if matches!(self.peek(), Some(']' | ')')) {
            None
        } else {
            Some(self.literal(",")?)
        };
        self.skip_spaces();
        let high = match (self.peek(), high) {
            (Some(']' | ')'), None) => Bound::Unbounded,
            (Some(']'), Some(value)) => Bound::Included(value),
            (Some(')'), Some(value)) => Bound::Excluded(value),
            _ => return self.error("expected ']' or ')' to close the interval"),
        };
        self.at += 1;
        Ok(TagExpr::Term(Term::Interval { name, low, high }))
    }

    fn value(&mut self) -> Result<String> {
        if self.peek() != Some('"') {
            let value = self.take_while(is_value_char);
            if value.is_empty() {
                return self.error("expected a tag value after ':'");
            }
            return Ok(value);
        }
        self.quoted()
    }

    /// A double-quoted text (`\"` is a quote inside it), the opening quote next.
    fn quoted(&mut self) -> Result<String> {
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
    fn comparisons_and_intervals_are_terms() {
        assert_eq!(
            parsed("vip & lifetime_orders >= 3 & ltv:[100,500)"),
            "((vip & lifetime_orders >= 3) & ltv:[100,500))"
        );
        assert_eq!(parsed("a>-1.5|b!=x"), "(a > -1.5 | b != x)");
        assert_eq!(
            parsed("seen < \"2026-11-01 10:00\" - ltv:(,0]"),
            "(seen < \"2026-11-01 10:00\" - ltv:(,0])"
        );
        assert_eq!(parsed("ltv:( 1 , )"), "ltv:(1,)");
        // `-` after a name is still "and not".
        assert_eq!(parsed("a - b"), "(a - b)");
        let term = |text: &str| TagExpr::parse(text).unwrap().terms()[0].clone();
        use Bound::{Excluded, Included, Unbounded};
        assert_eq!(
            term("x != 3").ranges().unwrap(),
            vec![
                (Unbounded, Excluded("3".to_string())),
                (Excluded("3".to_string()), Unbounded)
            ]
        );
        assert_eq!(
            term("x:[1,2]").ranges().unwrap(),
            vec![(Included("1".to_string()), Included("2".to_string()))]
        );
        assert_eq!(term("x:y").ranges(), None);
        // Display parses back to the same expression.
        for text in ["a = \"q\\\"x\"", "t:(-1,\"z z\"]", "a <= b & c:[,)"] {
            let once = TagExpr::parse(text).unwrap();
            assert_eq!(TagExpr::parse(&once.to_string()).unwrap(), once, "{text}");
        }
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
            ("ltv >=", "expected a value after '>=' at position 6"),
            (
                "ltv:[1 2)",
                "expected ',' between the bounds of an interval at position 7",
            ),
            (
                "ltv:[1,2",
                "expected ']' or ')' to close the interval at position 8",
            ),
            ("x = \"a", "unterminated quoted value"),
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
        let mut resolve = |term: &Term| match tags.get(term.name()) {
            Some(b) => Ok(b.clone()),
            None => plan_err!("unknown tag '{}'", term.name()),
        };
        let eval = |text: &str, resolve: &mut dyn FnMut(&Term) -> Result<RoaringTreemap>| {
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
