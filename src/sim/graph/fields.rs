//! Parser for the Graph API `fields` parameter.
//!
//! Graph accepts a small recursive language: `id,name,phone_numbers.limit(100){id,status}`.
//! Clients build these strings by hand, so the simulator parses them as strictly as Meta does:
//! a malformed string is a request error, never a silently shortened answer.

use std::fmt;

/// Deeper nesting than this is refused, so a hostile string cannot exhaust the stack.
const MAX_DEPTH: usize = 16;

/// One requested field: a name, an optional `.limit(n)` and optional nested `{...}` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    pub name: String,
    pub limit: Option<usize>,
    pub children: Option<Vec<FieldSpec>>,
}

impl FieldSpec {
    /// A bare field name without modifiers or nested fields.
    pub fn plain(name: &str) -> Self {
        FieldSpec {
            name: name.to_owned(),
            limit: None,
            children: None,
        }
    }
}

impl fmt::Display for FieldSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(limit) = self.limit {
            write!(f, ".limit({limit})")?;
        }
        if let Some(children) = &self.children {
            write!(f, "{{{}}}", fields_to_string(children))?;
        }
        Ok(())
    }
}

/// Writes a field list back in Graph syntax; the simulator needs this to build `paging.next`
/// links that carry the nested fields, as Meta's links do.
pub fn fields_to_string(fields: &[FieldSpec]) -> String {
    fields
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A syntax error, worded like Graph's error 2500 so clients see the familiar text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Syntax error \"{message}\" at character {position}: {input}")]
pub struct FieldsError {
    pub message: String,
    /// Byte offset of the offending character.
    pub position: usize,
    pub input: String,
}

/// Parses a `fields` value. An empty (or all-blank) value is an empty list: Graph then returns
/// only `id`.
pub fn parse_fields(input: &str) -> Result<Vec<FieldSpec>, FieldsError> {
    if input.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut parser = Parser { src: input, pos: 0 };
    let fields = parser.list(0)?;
    parser.skip_ws();
    match parser.peek_char() {
        None => Ok(fields),
        Some(c) => Err(parser.error(format!("Expected end of string instead of \"{c}\"."))),
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    /// The next full character, for error messages (the input may hold non-ASCII text).
    fn peek_char(&self) -> Option<char> {
        self.src
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn error(&self, message: impl Into<String>) -> FieldsError {
        FieldsError {
            message: message.into(),
            position: self.pos,
            input: self.src.to_owned(),
        }
    }

    fn unexpected(&self, wanted: &str) -> FieldsError {
        match self.peek_char() {
            Some(c) => self.error(format!("Expected {wanted} instead of \"{c}\".")),
            None => self.error(format!("Expected {wanted} but found end of string.")),
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), FieldsError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(&format!("\"{}\"", char::from(byte))))
        }
    }

    fn list(&mut self, depth: usize) -> Result<Vec<FieldSpec>, FieldsError> {
        if depth > MAX_DEPTH {
            return Err(self.error("Fields are nested too deeply."));
        }
        let mut fields = Vec::new();
        loop {
            self.skip_ws();
            fields.push(self.field(depth)?);
            self.skip_ws();
            if self.peek() == Some(b',') {
                self.pos += 1;
            } else {
                return Ok(fields);
            }
        }
    }

    fn name(&mut self) -> Result<String, FieldsError> {
        let start = self.pos;
        while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || b == b'_') {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.unexpected("a field name"));
        }
        Ok(self.src[start..self.pos].to_owned())
    }

    fn field(&mut self, depth: usize) -> Result<FieldSpec, FieldsError> {
        let mut spec = FieldSpec::plain(&self.name()?);
        // Graph allows modifiers and the nested block in either order: `e.limit(5){id}` and
        // `e{id}.limit(5)` mean the same.
        loop {
            match self.peek() {
                Some(b'.') => {
                    self.pos += 1;
                    let modifier_at = self.pos;
                    let modifier = self.name()?;
                    self.expect(b'(')?;
                    let arg_start = self.pos;
                    while !matches!(self.peek(), Some(b')') | None) {
                        self.pos += 1;
                    }
                    let arg = self.src[arg_start..self.pos].trim().to_owned();
                    self.expect(b')')?;
                    match modifier.as_str() {
                        "limit" => match arg.parse::<usize>() {
                            Ok(n) => spec.limit = Some(n),
                            Err(_) => {
                                return Err(FieldsError {
                                    message: format!(
                                        "Expected a number in limit() instead of \"{arg}\"."
                                    ),
                                    position: arg_start,
                                    input: self.src.to_owned(),
                                });
                            }
                        },
                        other => {
                            return Err(FieldsError {
                                message: format!("Unsupported modifier \"{other}\"."),
                                position: modifier_at,
                                input: self.src.to_owned(),
                            });
                        }
                    }
                }
                Some(b'{') if spec.children.is_none() => {
                    self.pos += 1;
                    let children = self.list(depth + 1)?;
                    self.skip_ws();
                    self.expect(b'}')?;
                    spec.children = Some(children);
                }
                _ => return Ok(spec),
            }
        }
    }
}

#[cfg(test)]
// A failed unwrap is a failed test, which is what a test wants.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limited(name: &str, limit: usize, children: Vec<FieldSpec>) -> FieldSpec {
        FieldSpec {
            name: name.to_owned(),
            limit: Some(limit),
            children: Some(children),
        }
    }

    #[test]
    fn a_flat_list_parses_into_plain_fields() {
        let fields = parse_fields("id, name ,status").unwrap();
        assert_eq!(
            fields,
            vec![
                FieldSpec::plain("id"),
                FieldSpec::plain("name"),
                FieldSpec::plain("status")
            ]
        );
    }

    #[test]
    fn nested_expansions_keep_their_limits_and_children_at_every_depth() {
        let input = "id,name,health_status,phone_numbers.limit(100){id,status,quality_rating},\
                     owned_whatsapp_business_accounts.limit(100){id,name,phone_numbers.limit(100){id}}";
        let fields = parse_fields(input).unwrap();
        assert_eq!(fields.len(), 5);
        assert_eq!(
            fields[3],
            limited(
                "phone_numbers",
                100,
                vec![
                    FieldSpec::plain("id"),
                    FieldSpec::plain("status"),
                    FieldSpec::plain("quality_rating")
                ]
            )
        );
        assert_eq!(
            fields[4],
            limited(
                "owned_whatsapp_business_accounts",
                100,
                vec![
                    FieldSpec::plain("id"),
                    FieldSpec::plain("name"),
                    limited("phone_numbers", 100, vec![FieldSpec::plain("id")])
                ]
            )
        );
    }

    #[test]
    fn the_limit_may_follow_the_nested_block() {
        let fields = parse_fields("phone_numbers{id}.limit(7)").unwrap();
        assert_eq!(
            fields,
            vec![limited("phone_numbers", 7, vec![FieldSpec::plain("id")])]
        );
    }

    #[test]
    fn a_parsed_list_prints_back_to_the_same_graph_syntax() {
        let input = "id,phone_numbers.limit(100){id,health_status},name";
        assert_eq!(fields_to_string(&parse_fields(input).unwrap()), input);
    }

    #[test]
    fn an_empty_value_means_no_fields() {
        assert_eq!(parse_fields("  ").unwrap(), Vec::new());
    }

    #[test]
    fn malformed_strings_are_syntax_errors_with_a_position() {
        for (input, position) in [
            ("id,name}", 7),
            ("id,,name", 3),
            ("id,", 3),
            ("phone_numbers{id", 16),
            ("phone_numbers{}", 14),
            ("phone_numbers.limit(x){id}", 20),
            ("phone_numbers.limit(5", 21),
            ("phone_numbers.since(5)", 14),
            ("id name", 3),
            ("név", 1),
        ] {
            let error = parse_fields(input).unwrap_err();
            assert_eq!(error.position, position, "position for {input:?}: {error}");
            assert!(error.to_string().starts_with("Syntax error"), "{error}");
        }
    }

    #[test]
    fn absurd_nesting_is_refused_rather_than_recursed_into() {
        let input = format!("{}id{}", "a{".repeat(40), "}".repeat(40));
        assert!(parse_fields(&input).is_err());
    }
}
