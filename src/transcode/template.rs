//! Path templates of `google.api.HttpRule` (google/api/http.proto, "Path template syntax"):
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! Parsed once per catalog snapshot; matching a request path allocates only the bound values.

use std::fmt;

/// One segment of a template, variables flattened into the segments they cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    Single,
    /// `**`: zero or more segments; only last.
    Multi,
}

/// A variable: which field it sets and which segments it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// `book.name` → `["book", "name"]`.
    pub field_path: Vec<String>,
    pub start: usize,
    pub end: usize,
}

impl Variable {
    pub fn field(&self) -> String {
        self.field_path.join(".")
    }
}

/// A compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
    pub verb: Option<String>,
    pub variables: Vec<Variable>,
}

/// A template that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template {template:?}: {reason}")]
pub struct TemplateError {
    pub template: String,
    pub reason: String,
}

impl Template {
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let fail = |reason: &str| TemplateError { template: template.to_owned(), reason: reason.to_owned() };
        let rest = template.strip_prefix('/').ok_or_else(|| fail("must start with '/'"))?;
        // The verb is a ':' after the last '/' that is not inside a variable.
        let (path, verb) = split_verb(rest);
        if verb.is_some_and(|v| v.is_empty() || v.contains(['/', '{', '}'])) {
            return Err(fail("the verb after ':' must be a plain literal"));
        }
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        for part in split_top_level(path).map_err(|r| fail(&r))? {
            if let Some(inner) = part.strip_prefix('{') {
                let inner = inner.strip_suffix('}').ok_or_else(|| fail("unclosed '{'"))?;
                let (field, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                let field_path: Vec<String> = field.split('.').map(str::to_owned).collect();
                if field_path.iter().any(|f| !is_ident(f)) {
                    return Err(fail(&format!("bad field path {field:?}")));
                }
                if variables.iter().any(|v: &Variable| v.field_path == field_path) {
                    return Err(fail(&format!("field {field} is bound twice")));
                }
                let start = segments.len();
                for sub in pattern.split('/') {
                    if sub.contains(['{', '}']) {
                        return Err(fail("variables cannot nest"));
                    }
                    segments.push(literal_or_wildcard(sub).map_err(|r| fail(&r))?);
                }
                variables.push(Variable { field_path, start, end: segments.len() });
            } else {
                segments.push(literal_or_wildcard(part).map_err(|r| fail(&r))?);
            }
        }
        if let Some(i) = segments.iter().position(|s| *s == Segment::Multi) {
            if i + 1 != segments.len() {
                return Err(fail("'**' must be the last segment"));
            }
        }
        Ok(Template { segments, verb: verb.map(str::to_owned), variables })
    }

    /// Binds `path` (no query string) to this template: each variable's value, percent-decoded
    /// by the spec's rules — a single-segment variable decodes everything, a multi-segment one
    /// leaves `%2F` as it is. None when the path does not match.
    pub fn matches(&self, path: &str) -> Option<Vec<(usize, String)>> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => rest.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        let parts: Vec<&str> = if rest.is_empty() { Vec::new() } else { rest.split('/').collect() };
        let multi = self.segments.last() == Some(&Segment::Multi);
        let fixed = self.segments.len() - usize::from(multi);
        if parts.len() < fixed || (!multi && parts.len() != fixed) {
            return None;
        }
        for (segment, part) in self.segments.iter().zip(&parts) {
            match segment {
                Segment::Literal(literal) if literal != part => return None,
                Segment::Single if part.is_empty() => return None,
                _ => {}
            }
        }
        let mut bound = Vec::with_capacity(self.variables.len());
        for (i, variable) in self.variables.iter().enumerate() {
            let covers_multi = variable.end == self.segments.len() && multi;
            let end = if covers_multi { parts.len() } else { variable.end };
            let raw = parts[variable.start..end].join("/");
            let single = variable.end - variable.start == 1 && !covers_multi;
            bound.push((i, decode(&raw, single)?));
        }
        Some(bound)
    }

    /// Orders templates so that the more specific is tried first: segment by segment, a literal
    /// before `*` before `**`; then longer before shorter; a verb before none.
    pub fn specificity(&self) -> Vec<u8> {
        let mut key: Vec<u8> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 3,
                Segment::Single => 2,
                Segment::Multi => 1,
            })
            .collect();
        key.push(0);
        key.push(u8::from(self.verb.is_some()));
        key
    }

    /// True when both templates match exactly the same paths.
    pub fn same_shape(&self, other: &Template) -> bool {
        self.segments == other.segments && self.verb == other.verb
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        while i < self.segments.len() {
            f.write_str("/")?;
            if let Some(v) = self.variables.iter().find(|v| v.start == i) {
                write!(f, "{{{}", v.field())?;
                let plain = v.end - v.start == 1 && self.segments[i] == Segment::Single;
                if !plain {
                    f.write_str("=")?;
                    for (n, s) in self.segments[v.start..v.end].iter().enumerate() {
                        if n > 0 {
                            f.write_str("/")?;
                        }
                        write_segment(f, s)?;
                    }
                }
                f.write_str("}")?;
                i = v.end;
            } else {
                write_segment(f, &self.segments[i])?;
                i += 1;
            }
        }
        if let Some(verb) = &self.verb {
            write!(f, ":{verb}")?;
        }
        Ok(())
    }
}

fn write_segment(f: &mut fmt::Formatter<'_>, s: &Segment) -> fmt::Result {
    match s {
        Segment::Literal(l) => f.write_str(l),
        Segment::Single => f.write_str("*"),
        Segment::Multi => f.write_str("**"),
    }
}

fn split_verb(rest: &str) -> (&str, Option<&str>) {
    let mut depth = 0usize;
    let mut last_colon = None;
    for (i, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '/' if depth == 0 => last_colon = None,
            ':' if depth == 0 => last_colon = Some(i),
            _ => {}
        }
    }
    match last_colon {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

/// Splits on '/' outside braces.
fn split_top_level(path: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in path.char_indices() {
        match c {
            '{' if depth > 0 => return Err("variables cannot nest".into()),
            '{' => depth = 1,
            '}' if depth == 0 => return Err("unmatched '}'".into()),
            '}' => depth = 0,
            '/' if depth == 0 => {
                out.push(&path[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err("unclosed '{'".into());
    }
    out.push(&path[start..]);
    Ok(out)
}

fn literal_or_wildcard(s: &str) -> Result<Segment, String> {
    match s {
        "*" => Ok(Segment::Single),
        "**" => Ok(Segment::Multi),
        "" => Err("empty segment".into()),
        l if l.contains(['*', '{', '}', '?', '#']) => Err(format!("bad literal {l:?}")),
        l => Ok(Segment::Literal(l.to_owned())),
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Percent-decodes a bound value; a multi-segment value keeps `%2F` encoded. None when the
/// result is not UTF-8.
fn decode(raw: &str, single: bool) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                let byte = (hi * 16 + lo) as u8;
                if byte == b'/' && !single {
                    out.extend_from_slice(&bytes[i..i + 3]);
                } else {
                    out.push(byte);
                }
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        let t = Template::parse(template).expect("valid template");
        t.matches(path).map(|b| b.into_iter().map(|(i, v)| (t.variables[i].field(), v)).collect())
    }

    fn pairs(p: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(p.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect())
    }

    #[test]
    fn http_proto_examples() {
        // The examples of googleapis' google/api/http.proto.
        assert_eq!(bind("/v1/{name=messages/*}", "/v1/messages/123456"), pairs(&[("name", "messages/123456")]));
        assert_eq!(bind("/v1/messages/{message_id}", "/v1/messages/123456"), pairs(&[("message_id", "123456")]));
        assert_eq!(
            bind("/v1/users/{user_id}/messages/{message_id}", "/v1/users/me/messages/123456"),
            pairs(&[("user_id", "me"), ("message_id", "123456")])
        );
        assert_eq!(
            bind("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/2"),
            pairs(&[("name", "shelves/1/books/2")])
        );
        assert_eq!(
            bind("/v1/{book.name=shelves/*/books/*}", "/v1/shelves/1/books/2"),
            pairs(&[("book.name", "shelves/1/books/2")])
        );
        assert_eq!(
            bind("/v1/{name=projects/*/locations/*}/foo", "/v1/projects/p/locations/l/foo"),
            pairs(&[("name", "projects/p/locations/l")])
        );
    }

    #[test]
    fn wildcards_verbs_and_decoding() {
        assert_eq!(bind("/v1/{name=files/**}", "/v1/files/a/b/c.txt"), pairs(&[("name", "files/a/b/c.txt")]));
        assert_eq!(bind("/v1/{name=files/**}", "/v1/files"), pairs(&[("name", "files")]));
        assert_eq!(bind("/v1/**", "/v1/anything/at/all"), pairs(&[]));
        assert_eq!(bind("/v1/*/x", "/v1/a/x"), pairs(&[]));
        assert_eq!(bind("/v1/*/x", "/v1/a/b/x"), None);
        assert_eq!(bind("/v1/orders/{id}:watch", "/v1/orders/o-1:watch"), pairs(&[("id", "o-1")]));
        assert_eq!(bind("/v1/orders/{id}:watch", "/v1/orders/o-1"), None);
        assert_eq!(bind("/v1/orders:addLineItems", "/v1/orders:addLineItems"), pairs(&[]));
        // A colon inside a variable is data when the template has no verb.
        assert_eq!(bind("/v1/users/{id}", "/v1/users/a:b"), pairs(&[("id", "a:b")]));
        // Single-segment variables decode everything; multi-segment ones keep %2F.
        assert_eq!(bind("/v1/users/{id}", "/v1/users/a%2Fb%20c"), pairs(&[("id", "a/b c")]));
        assert_eq!(bind("/v1/{name=files/**}", "/v1/files/a%2Fb/c%20d"), pairs(&[("name", "files/a%2Fb/c d")]));
        assert_eq!(bind("/v1/users/{id}", "/v1/users/"), None);
        assert_eq!(bind("/v1/users/{id}", "/v1/users/%ff"), None, "not UTF-8");
    }

    #[test]
    fn bad_templates_are_rejected() {
        for bad in
            ["v1/x", "/v1/{a", "/v1/a}", "/v1/{a={b}}", "/v1/**/x", "/v1//x", "/v1/{a.}", "/v1/{a}/{a}", "/v1/x:"]
        {
            assert!(Template::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn display_round_trips() {
        for t in [
            "/v1/{name=shelves/*/books/*}",
            "/v1/users/{id}",
            "/v1/orders/{id}:watch",
            "/v1/{name=files/**}",
            "/v1/*/x",
        ] {
            assert_eq!(Template::parse(t).expect("valid").to_string(), t);
        }
    }

    #[test]
    fn literals_are_more_specific_than_wildcards() {
        let literal = Template::parse("/v1/users/me").expect("valid");
        let variable = Template::parse("/v1/users/{id}").expect("valid");
        let multi = Template::parse("/v1/{name=**}").expect("valid");
        assert!(literal.specificity() > variable.specificity());
        assert!(variable.specificity() > multi.specificity());
        assert!(variable.same_shape(&Template::parse("/v1/users/{name}").expect("valid")));
    }
}

/// Properties over generated templates and paths: templates come from descriptors, paths from
/// clients, and neither may panic the parser or the matcher.
#[cfg(test)]
mod properties {
    use super::*;
    use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
    use proptest::prelude::*;

    /// What a client must escape in a path segment: '/' splits segments, '%' starts an escape.
    const SEGMENT: &AsciiSet = &CONTROLS.add(b'/').add(b'%');

    /// A segment of a generated template.
    #[derive(Debug, Clone)]
    enum Piece {
        Literal(String),
        Star,
    }

    /// A top-level part: a segment, or a variable over a pattern (empty: a plain `{name}`).
    #[derive(Debug, Clone)]
    enum Part {
        Segment(Piece),
        Variable(Vec<Piece>),
    }

    /// What ends the template: nothing, `**`, or a variable whose pattern ends in `**`.
    #[derive(Debug, Clone)]
    enum Tail {
        None,
        Multi,
        Variable(Vec<Piece>),
    }

    #[derive(Debug, Clone)]
    struct Shape {
        parts: Vec<Part>,
        tail: Tail,
        verb: Option<String>,
    }

    fn piece() -> impl Strategy<Value = Piece> {
        prop_oneof![Just(Piece::Star), "[a-zA-Z0-9._~=-]{1,5}".prop_map(Piece::Literal)]
    }

    fn shape() -> impl Strategy<Value = Shape> {
        let part = prop_oneof![
            piece().prop_map(Part::Segment),
            prop::collection::vec(piece(), 0..3).prop_map(Part::Variable),
        ];
        let tail = prop_oneof![
            Just(Tail::None),
            Just(Tail::Multi),
            prop::collection::vec(piece(), 0..2).prop_map(Tail::Variable)
        ];
        (prop::collection::vec(part, 1..5), tail, proptest::option::of("[a-zA-Z][a-zA-Z0-9_]{0,5}"))
            .prop_map(|(parts, tail, verb)| Shape { parts, tail, verb })
    }

    fn write_pieces(out: &mut String, pieces: &[Piece]) {
        for (n, p) in pieces.iter().enumerate() {
            if n > 0 {
                out.push('/');
            }
            out.push_str(match p {
                Piece::Literal(l) => l,
                Piece::Star => "*",
            });
        }
    }

    impl Shape {
        /// The template's text, written as Display writes it.
        fn text(&self) -> String {
            let mut out = String::new();
            for (i, part) in self.parts.iter().enumerate() {
                out.push('/');
                match part {
                    Part::Segment(p) => write_pieces(&mut out, std::slice::from_ref(p)),
                    Part::Variable(pattern) if pattern.is_empty() || matches!(pattern[..], [Piece::Star]) => {
                        out.push_str(&format!("{{v{i}}}"));
                    }
                    Part::Variable(pattern) => {
                        out.push_str(&format!("{{v{i}.x="));
                        write_pieces(&mut out, pattern);
                        out.push('}');
                    }
                }
            }
            match &self.tail {
                Tail::None => {}
                Tail::Multi => out.push_str("/**"),
                Tail::Variable(pattern) => {
                    out.push_str("/{tail=");
                    write_pieces(&mut out, pattern);
                    out.push_str(if pattern.is_empty() { "**}" } else { "/**}" });
                }
            }
            if let Some(verb) = &self.verb {
                out.push(':');
                out.push_str(verb);
            }
            out
        }

        /// A path for this template, taking segment values from `values` in turn and
        /// `multi` segments for the `**`, and the values each variable must bind.
        fn path(&self, values: &[String], multi: &[String], escape: &'static AsciiSet) -> (String, Vec<String>) {
            let mut next = values.iter().cycle();
            let mut segments = Vec::new();
            let mut bound = Vec::new();
            // One segment: its text in the path and its decoded value. A value in a variable of
            // several segments cannot hold '/': its %2F stays encoded (http.proto).
            let mut fill = |p: &Piece, single: bool| match p {
                Piece::Literal(l) => (l.clone(), l.clone()),
                Piece::Star => {
                    let value = next.next().cloned().unwrap_or_else(|| "x".into());
                    let value = if single { value } else { value.replace('/', "_") };
                    (utf8_percent_encode(&value, escape).to_string(), value)
                }
            };
            for part in &self.parts {
                match part {
                    Part::Segment(p) => segments.push(fill(p, true).0),
                    Part::Variable(pattern) if pattern.len() <= 1 => {
                        let (text, value) = fill(pattern.first().unwrap_or(&Piece::Star), true);
                        segments.push(text);
                        bound.push(value);
                    }
                    Part::Variable(pattern) => {
                        let (texts, values): (Vec<_>, Vec<_>) = pattern.iter().map(|p| fill(p, false)).unzip();
                        segments.extend(texts);
                        bound.push(values.join("/"));
                    }
                }
            }
            let mut tail_values = Vec::new();
            if let Tail::Variable(pattern) = &self.tail {
                let (texts, values): (Vec<_>, Vec<_>) = pattern.iter().map(|p| fill(p, false)).unzip();
                segments.extend(texts);
                tail_values = values;
            }
            if !matches!(self.tail, Tail::None) {
                for value in multi {
                    let value = value.replace('/', "_");
                    segments.push(utf8_percent_encode(&value, escape).to_string());
                    tail_values.push(value);
                }
            }
            if let Tail::Variable(_) = self.tail {
                bound.push(tail_values.join("/"));
            }
            let mut path = if segments.is_empty() { "/".to_owned() } else { format!("/{}", segments.join("/")) };
            if let Some(verb) = &self.verb {
                path.push(':');
                path.push_str(verb);
            }
            (path, bound)
        }
    }

    /// A non-empty segment value: any characters, '/' and '%' included.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![prop::collection::vec(any::<char>(), 1..6).prop_map(String::from_iter), "[a-z/%:2F ]{1,6}",]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn parse_never_panics_and_display_reparses_equal(text in "/?[/{}=*.:ab_%?#é0 ]{0,24}") {
            if let Ok(template) = Template::parse(&text) {
                let shown = template.to_string();
                prop_assert_eq!(Template::parse(&shown), Ok(template), "{:?} shown as {:?}", text, shown);
            }
        }

        #[test]
        fn parse_never_panics_on_any_text(text in any::<String>()) {
            let _ = Template::parse(&text);
            let _ = Template::parse(&format!("/{text}"));
        }

        #[test]
        fn generated_templates_parse_and_display_as_written(shape in shape()) {
            let text = shape.text();
            let template = Template::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(template.to_string(), text);
        }

        #[test]
        fn matches_never_panics_on_any_path(shape in shape(), path in "[/:a%2Fé*]{0,20}", any_path in any::<String>()) {
            let template = Template::parse(&shape.text()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let _ = template.matches(&path);
            let _ = template.matches(&any_path);
            let _ = template.matches(&format!("/{any_path}"));
        }

        #[test]
        fn a_path_built_from_a_template_binds_its_values(
            shape in shape(),
            values in prop::collection::vec(value(), 1..8),
            multi in prop::collection::vec(value(), 0..4),
            escape_all in any::<bool>(),
        ) {
            let template = Template::parse(&shape.text()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let escape = if escape_all { NON_ALPHANUMERIC } else { SEGMENT };
            let (path, expected) = shape.path(&values, &multi, escape);
            let bound = template.matches(&path);
            let expected: Vec<(usize, String)> = expected.into_iter().enumerate().collect();
            prop_assert_eq!(bound, Some(expected), "{} on {:?}", template, path);
        }

        #[test]
        fn a_slash_in_a_multi_segment_value_stays_encoded(rest in "[a-z ]{1,6}/[a-z ]{1,6}") {
            let template = Template::parse("/v1/{name=files/**}").map_err(|e| TestCaseError::fail(e.to_string()))?;
            let path = format!("/v1/files/{}", utf8_percent_encode(&rest, NON_ALPHANUMERIC));
            prop_assert_eq!(template.matches(&path), Some(vec![(0, format!("files/{}", rest.replace('/', "%2F")))]));
        }
    }
}
