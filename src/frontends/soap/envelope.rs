//! SOAP envelopes: which version a request speaks, what operation it calls with which messages,
//! and the response envelope. Parsing goes through the XML mapping's safe reader.

use std::sync::Arc;

use prost_reflect::DynamicMessage;

use super::Service;
use super::fault::Fault;
use crate::catalog::MethodRoute;
use crate::transcode::xml::{self, DecodeOptions, Element, Events, Node, Writer, XmlError};

pub(super) const SOAP11_ENVELOPE: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub(super) const SOAP12_ENVELOPE: &str = "http://www.w3.org/2003/05/soap-envelope";
/// The actors (1.1) and roles (1.2) the gateway plays as the message's ultimate receiver; a
/// header block aimed at another is not its to understand.
const OWN_ROLES: [&str; 3] = [
    "http://schemas.xmlsoap.org/soap/actor/next",
    "http://www.w3.org/2003/05/soap-envelope/role/next",
    "http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `text/xml`, the action in `SOAPAction`.
    V11,
    /// `application/soap+xml`, the action in its `action` parameter.
    V12,
}

impl Version {
    pub fn envelope_namespace(self) -> &'static str {
        match self {
            Version::V11 => SOAP11_ENVELOPE,
            Version::V12 => SOAP12_ENVELOPE,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Version::V11 => "text/xml; charset=utf-8",
            Version::V12 => "application/soap+xml; charset=utf-8",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Version::V11 => "SOAP 1.1 (text/xml)",
            Version::V12 => "SOAP 1.2 (application/soap+xml)",
        }
    }

    /// The version a content type says, and for SOAP 1.2 its `action` parameter.
    pub fn of(content_type: &str) -> Option<(Version, Option<String>)> {
        let mut parts = content_type.split(';');
        let essence = parts.next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("text/xml") {
            return Some((Version::V11, None));
        }
        if !essence.eq_ignore_ascii_case("application/soap+xml") {
            return None;
        }
        let action = parts.find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim().eq_ignore_ascii_case("action").then(|| unquote(value.trim()).to_owned())
        });
        Some((Version::V12, action))
    }
}

/// A header value or parameter without its surrounding quotes.
pub(super) fn unquote(value: &str) -> &str {
    value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value)
}

/// A call as an envelope asks for it.
pub(super) struct Request {
    pub(super) method: Arc<MethodRoute>,
    /// One message, or for a client stream its messages in order.
    pub(super) messages: Vec<DynamicMessage>,
}

/// Reads a request envelope of `version` for `service`. The operation is the one `action`
/// names, else the one named by the body's first element.
pub(super) fn read(
    body: &[u8],
    version: Version,
    service: &Service,
    action: Option<&str>,
    options: DecodeOptions,
    max_messages: usize,
) -> Result<Request, Fault> {
    let mut events = Events::new(body);
    let env = version.envelope_namespace();
    let sender = |e: XmlError| Fault::sender(e.message);
    let root = first_element(&mut events, "the body holds no XML element: expected a SOAP Envelope").map_err(sender)?;
    if root.name != "Envelope" || root.namespace.is_none() {
        return Err(Fault::sender(format!("the root element is <{}>, not a SOAP Envelope", root.name)));
    }
    if root.namespace.as_deref() != Some(env) {
        let found = root.namespace.as_deref().unwrap_or_default();
        let other =
            if found == SOAP11_ENVELOPE || found == SOAP12_ENVELOPE { " of the other SOAP version" } else { "" };
        return Err(Fault::version_mismatch(format!(
            "the envelope's namespace is {found:?}{other}: a request sent as {} needs {env:?}",
            version.name()
        )));
    }
    let mut element = first_element(&mut events, "the Envelope is empty: expected a Body").map_err(sender)?;
    if element.name == "Header" && element.namespace.as_deref() == Some(env) {
        headers(&mut events, version)?;
        element = first_element(&mut events, "the Envelope has no Body").map_err(sender)?;
    }
    if element.name != "Body" || element.namespace.as_deref() != Some(env) {
        return Err(Fault::sender(format!("expected the envelope's Body, found <{}>", element.name)));
    }
    let operation = first_element(&mut events, "the Body holds no operation element").map_err(sender)?;
    let method = operation_of(service, action, &operation)?;
    let input = method.descriptor.input();
    let mut messages = Vec::new();
    if method.descriptor.is_client_streaming() {
        loop {
            match events.node().map_err(sender)? {
                Node::Start(e) if e.name == "message" && e.is_in(&service.namespace) => {
                    if messages.len() == max_messages {
                        return Err(Fault::status(tonic::Status::resource_exhausted(format!(
                            "the request stream has more than {max_messages} messages (soap.max_stream_messages)"
                        ))));
                    }
                    messages.push(xml::decode_element(&mut events, input.clone(), options).map_err(sender)?);
                }
                Node::Start(e) => {
                    return Err(Fault::sender(format!(
                        "<{}> holds the stream's <message> elements, not <{}>",
                        operation.name, e.name
                    )));
                }
                Node::Text(t) if t.trim().is_empty() => {}
                Node::Text(_) => return Err(Fault::sender(format!("text inside <{}>", operation.name))),
                Node::End => break,
                Node::Eof => return Err(Fault::sender("the document ends inside the operation")),
            }
        }
    } else {
        messages.push(xml::decode_element(&mut events, input, options).map_err(sender)?);
    }
    // The Body holds one element, and the Envelope nothing after the Body.
    for inside in ["Body", "Envelope"] {
        loop {
            match events.node().map_err(sender)? {
                Node::End => break,
                Node::Text(t) if t.trim().is_empty() => {}
                Node::Start(e) => {
                    return Err(Fault::sender(format!("unexpected <{}> in the {inside} after the operation", e.name)));
                }
                _ => return Err(Fault::sender(format!("unexpected content in the {inside} after the operation"))),
            }
        }
    }
    events.finish().map_err(sender)?;
    Ok(Request { method, messages })
}

/// The next element, skipping whitespace; `missing` when the current element ends first.
fn first_element(events: &mut Events<'_>, missing: &str) -> Result<Element, XmlError> {
    loop {
        match events.node()? {
            Node::Start(element) => return Ok(element),
            Node::Text(t) if t.trim().is_empty() => {}
            Node::Text(t) => {
                let shown: String = t.trim().chars().take(40).collect();
                return Err(events.error(format!("text {shown:?} where an element is expected")));
            }
            Node::End | Node::Eof => return Err(XmlError::new(missing)),
        }
    }
}

/// The header blocks: none is understood, so one that must be is a MustUnderstand fault.
fn headers(events: &mut Events<'_>, version: Version) -> Result<(), Fault> {
    let env = version.envelope_namespace();
    loop {
        match events.node().map_err(|e| Fault::sender(e.message))? {
            Node::Start(block) => {
                let must = matches!(block.attribute(env, "mustUnderstand").map(str::trim), Some("1" | "true"));
                let role = block.attribute(env, if version == Version::V11 { "actor" } else { "role" });
                let ours = role.is_none_or(|r| OWN_ROLES.contains(&r.trim()));
                if must && ours {
                    let ns = block.namespace.as_deref().unwrap_or_default();
                    return Err(Fault::must_understand(format!(
                        "the header block {{{ns}}}{} must be understood, and this gateway processes no header blocks",
                        block.name
                    )));
                }
                events.skip().map_err(|e| Fault::sender(e.message))?;
            }
            Node::End => return Ok(()),
            Node::Text(t) if t.trim().is_empty() => {}
            Node::Text(_) => return Err(Fault::sender("text inside the envelope's Header")),
            Node::Eof => return Err(Fault::sender("the document ends inside the Header")),
        }
    }
}

/// The method an envelope calls: by its action when it has one, else by the operation element's
/// name; the element must match the action and be in the service's namespace (or none).
fn operation_of(service: &Service, action: Option<&str>, operation: &Element) -> Result<Arc<MethodRoute>, Fault> {
    let action = action.map(str::trim).filter(|a| !a.is_empty());
    let method = match action {
        Some(action) => service.by_action(action).ok_or_else(|| {
            Fault::no_operation(format!(
                "{} has no operation with the action {action:?}; its WSDL lists them",
                service.name
            ))
        })?,
        None => service.operations.get(operation.name.as_str()).cloned().ok_or_else(|| {
            Fault::no_operation(format!("{} has no operation <{}>; its WSDL lists them", service.name, operation.name))
        })?,
    };
    let name = method.descriptor.name();
    if operation.name != name {
        return Err(Fault::sender(format!("the action calls {name}, but the Body holds <{}>", operation.name)));
    }
    if !operation.is_in(&service.namespace) {
        let ns = operation.namespace.as_deref().unwrap_or_default();
        return Err(Fault::sender(format!(
            "<{name}> is in namespace {ns:?}; the service's is {:?}",
            service.namespace
        )));
    }
    Ok(method)
}

/// The response envelope: `<Method>Response` holding the reply, or for a server stream its
/// messages as `<message>` elements.
pub(super) fn response(
    version: Version,
    service: &Service,
    method: &MethodRoute,
    replies: &[DynamicMessage],
) -> Result<String, XmlError> {
    let env = version.envelope_namespace();
    let mut writer = Writer::new(String::with_capacity(512));
    writer.raw(&format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<env:Envelope xmlns:env=\"{env}\"><env:Body>"));
    let name = format!("{}Response", method.descriptor.name());
    let package = method.descriptor.parent_service().package_name();
    if method.descriptor.is_server_streaming() {
        writer.raw(&format!("<{name} xmlns=\"{}\">", service.namespace));
        for reply in replies {
            writer.message("message", package, Some(package), reply)?;
        }
        writer.raw(&format!("</{name}>"));
    } else {
        let reply = replies.first().ok_or_else(|| XmlError::new("no reply"))?;
        writer.message(&name, package, None, reply)?;
    }
    writer.raw("</env:Body></env:Envelope>\n");
    Ok(writer.into_string())
}
