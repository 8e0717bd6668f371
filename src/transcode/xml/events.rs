//! The safe event reader every XML input goes through: quick-xml's namespace-aware reader, with
//! DTDs refused, only predefined entities and character references, bounded depth, UTF-8 only.

use std::rc::Rc;

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

use super::{MAX_ATTRIBUTES, MAX_DEPTH, MAX_NAME, XSI, XmlError};

/// How many namespaces a reader keeps allocated for reuse.
const NAMESPACE_CACHE: usize = 16;

/// What the decoder sees of a document.
#[derive(Debug)]
pub enum Node {
    Start(Element),
    /// Character data: a text run, a CDATA section, or one resolved reference.
    Text(String),
    End,
    Eof,
}

/// An opening tag, by namespace URI and local name.
#[derive(Debug)]
pub struct Element {
    /// `None`: in no namespace.
    pub namespace: Option<Rc<str>>,
    pub name: String,
    /// `xsi:nil="true"`.
    pub nil: bool,
    /// Its other attributes (not namespace declarations): namespace, local name, value.
    pub attributes: Vec<(Option<String>, String, String)>,
}

impl Element {
    /// In `namespace`, or in none.
    pub fn is_in(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    /// In the namespace of `package`, or in none.
    pub fn is_in_package(&self, package: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| super::is_namespace_of(ns, package))
    }

    /// The value of the attribute `name` in `namespace`.
    pub fn attribute(&self, namespace: &str, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(ns, n, _)| ns.as_deref() == Some(namespace) && n == name)
            .map(|(_, _, v)| v.as_str())
    }
}

/// A document read event by event.
pub struct Events<'a> {
    reader: NsReader<&'a [u8]>,
    depth: usize,
    /// Element names from the root, for error messages.
    /// `/a/b/c`: one buffer, not a string per element.
    path: String,
    /// Where each open element's name starts in `path`.
    levels: Vec<usize>,
    /// The first namespaces seen, each allocated once (an honest document has a handful; past
    /// [`NAMESPACE_CACHE`] they are allocated per element, so a lookup stays cheap).
    namespaces: Vec<Rc<str>>,
}

impl<'a> Events<'a> {
    pub fn new(xml: &'a [u8]) -> Self {
        let mut reader = NsReader::from_reader(xml);
        let config = reader.config_mut();
        config.expand_empty_elements = true;
        config.check_end_names = true;
        Events { reader, depth: 0, path: String::new(), levels: Vec::new(), namespaces: Vec::new() }
    }

    /// Where the reader is, as element names from the root: `/Envelope/Body/GetOrder`.
    pub fn path(&self) -> String {
        if self.path.is_empty() { "/".to_owned() } else { self.path.clone() }
    }

    /// An error at the current element.
    pub fn error(&self, message: impl std::fmt::Display) -> XmlError {
        XmlError::new(format!("{message} (at {})", self.path()))
    }

    pub fn node(&mut self) -> Result<Node, XmlError> {
        loop {
            let position = self.reader.buffer_position();
            let (resolved, event) = self
                .reader
                .read_resolved_event()
                .map_err(|e| XmlError::new(format!("malformed XML at byte {position}: {e}")))?;
            let namespace = match resolved {
                ResolveResult::Bound(ns) => {
                    let ns = ns.as_ref();
                    match self.namespaces.iter().find(|known| known.as_bytes() == ns) {
                        Some(known) => Some(known.clone()),
                        None => {
                            let new: Rc<str> = utf8(ns)?.into();
                            if self.namespaces.len() < NAMESPACE_CACHE {
                                self.namespaces.push(new.clone());
                            }
                            Some(new)
                        }
                    }
                }
                ResolveResult::Unbound => None,
                ResolveResult::Unknown(prefix) => {
                    let prefix = String::from_utf8_lossy(&prefix).into_owned();
                    return Err(self.error(format!("the namespace prefix {prefix:?} is not declared")));
                }
            };
            return match event {
                Event::Start(start) => {
                    self.depth += 1;
                    if start.name().as_ref().len() > MAX_NAME {
                        return Err(self.error(format!("an element name longer than {MAX_NAME} bytes")));
                    }
                    let name = utf8(start.local_name().as_ref())?.to_owned();
                    self.levels.push(self.path.len());
                    self.path.push('/');
                    self.path.push_str(&name);
                    if self.depth > MAX_DEPTH {
                        return Err(self.error(format!("elements nest deeper than {MAX_DEPTH} levels")));
                    }
                    let mut attributes = Vec::new();
                    // Checked for duplicates (quadratic in their number, hence the bound).
                    for (n, attribute) in start.attributes().enumerate() {
                        if n == MAX_ATTRIBUTES {
                            return Err(self.error(format!("an element with more than {MAX_ATTRIBUTES} attributes")));
                        }
                        let attribute = attribute.map_err(|e| self.error(format!("malformed attribute: {e}")))?;
                        let key = attribute.key.as_ref();
                        if key == b"xmlns" || key.starts_with(b"xmlns:") {
                            continue;
                        }
                        let (ns, local) = self.reader.resolve_attribute(attribute.key);
                        let ns = match ns {
                            ResolveResult::Bound(n) => Some(utf8(n.as_ref())?.to_owned()),
                            _ => None,
                        };
                        let value = attribute
                            .unescape_value()
                            .map_err(|e| self.error(format!("malformed attribute value: {e}")))?;
                        attributes.push((ns, utf8(local.as_ref())?.to_owned(), value.into_owned()));
                    }
                    let mut element = Element { namespace, name, nil: false, attributes };
                    element.nil = match element.attribute(XSI, "nil").map(str::trim) {
                        None | Some("false" | "0") => false,
                        Some("true" | "1") => true,
                        Some(other) => return Err(self.error(format!("xsi:nil must be true or false, not {other:?}"))),
                    };
                    Ok(Node::Start(element))
                }
                Event::End(_) => {
                    self.depth -= 1;
                    if let Some(start) = self.levels.pop() {
                        self.path.truncate(start);
                    }
                    Ok(Node::End)
                }
                Event::Text(text) => self.character_data(&text),
                Event::CData(data) => self.character_data(&data),
                Event::GeneralRef(reference) => {
                    if let Some(c) = reference.resolve_char_ref().map_err(|e| self.error(e))? {
                        if !is_xml_char(c) {
                            return Err(self.error(format!(
                                "character reference to U+{:04X}, which XML 1.0 does not allow",
                                c as u32
                            )));
                        }
                        return Ok(Node::Text(c.to_string()));
                    }
                    let name = utf8(&reference)?;
                    match quick_xml::escape::resolve_predefined_entity(name) {
                        Some(text) => Ok(Node::Text(text.to_owned())),
                        None => Err(self.error(format!(
                            "the entity &{name}; is not defined: only the five predefined XML entities are accepted"
                        ))),
                    }
                }
                Event::DocType(_) => Err(XmlError::new(
                    "a document type declaration (DTD) is not accepted: Dragoman does not process DTDs or entities",
                )),
                Event::Decl(decl) => {
                    if let Some(Ok(encoding)) = decl.encoding() {
                        if !encoding.eq_ignore_ascii_case(b"utf-8") && !encoding.eq_ignore_ascii_case(b"utf8") {
                            let encoding = String::from_utf8_lossy(&encoding).into_owned();
                            return Err(XmlError::new(format!("the document is in {encoding}: only UTF-8 is read")));
                        }
                    }
                    continue;
                }
                Event::Comment(_) | Event::PI(_) => continue,
                Event::Empty(_) => unreachable!("empty elements are expanded"),
                Event::Eof => Ok(Node::Eof),
            };
        }
    }

    /// Text as XML 1.0 reads it: only its characters, line ends as LF (section 2.11).
    fn character_data(&self, raw: &[u8]) -> Result<Node, XmlError> {
        let text = utf8(raw)?;
        if let Some(c) = text.chars().find(|c| !is_xml_char(*c)) {
            return Err(self.error(format!("U+{:04X}, which XML 1.0 does not allow", c as u32)));
        }
        Ok(Node::Text(if text.contains('\r') {
            text.replace("\r\n", "\n").replace('\r', "\n")
        } else {
            text.to_owned()
        }))
    }

    /// Reads the rest of the current element, whatever it holds.
    pub fn skip(&mut self) -> Result<(), XmlError> {
        let mut depth = 0usize;
        loop {
            match self.node()? {
                Node::Start(_) => depth += 1,
                Node::End if depth == 0 => return Ok(()),
                Node::End => depth -= 1,
                Node::Text(_) => {}
                Node::Eof => return Err(self.error("the document ends inside an element")),
            }
        }
    }

    /// The text content of the current element, which must hold no elements.
    pub fn text(&mut self) -> Result<String, XmlError> {
        let mut text = String::new();
        loop {
            match self.node()? {
                Node::Text(t) if text.is_empty() => text = t,
                Node::Text(t) => text.push_str(&t),
                Node::End => return Ok(text),
                Node::Start(element) => {
                    return Err(self.error(format!("element <{}> where only text is expected", element.name)));
                }
                Node::Eof => return Err(self.error("the document ends inside an element")),
            }
        }
    }

    /// Reads to the end of the document, which must hold nothing more than whitespace.
    pub fn finish(&mut self) -> Result<(), XmlError> {
        loop {
            match self.node()? {
                Node::Eof => return Ok(()),
                Node::Text(t) if t.trim().is_empty() => {}
                _ => return Err(self.error("content after the document's root element")),
            }
        }
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, XmlError> {
    std::str::from_utf8(bytes).map_err(|_| XmlError::new("the document is not valid UTF-8"))
}

/// XML 1.0's `Char` production.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}
