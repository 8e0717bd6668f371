//! The WSDL 1.1 of one service, written from its descriptors: document/literal wrapped, a SOAP
//! 1.1 and a SOAP 1.2 binding, and an XML Schema per proto package for the types it uses — the
//! schema of the XML mapping in [`crate::transcode::xml`], which the frontend reads and writes.
//!
//! Each operation's request is the element named after the method, of the input message's type;
//! its response the element `<Method>Response`, of the output's. A streaming side is a sequence
//! of `<message>` elements of its type (see the frontend's documentation).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write;

use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, ServiceDescriptor};

use crate::catalog::comment_at;
use crate::transcode::xml::{Item, Special, escape, layout, local_type_name, namespace, strip_package};

pub(super) const SOAP11_BINDING: &str = "http://schemas.xmlsoap.org/wsdl/soap/";
pub(super) const SOAP12_BINDING: &str = "http://schemas.xmlsoap.org/wsdl/soap12/";

/// A service's WSDL with holes where its address goes (the address depends on the request).
pub struct Wsdl {
    parts: Vec<String>,
}

impl Wsdl {
    /// The document, with `address` (already a valid URL, escaped here) as the endpoint.
    pub fn with_address(&self, address: &str) -> String {
        let escaped = escape(address);
        self.parts.join(&escaped)
    }
}

/// The SOAPAction of a method: `urn:dragoman:<package.Service>/<Method>`.
pub fn action(method: &MethodDescriptor) -> String {
    format!("urn:dragoman:{}/{}", method.parent_service().full_name(), method.name())
}

/// The WSDL of `service`.
pub fn build(service: &ServiceDescriptor) -> Wsdl {
    let tns = namespace(service.package_name());
    let types = Types::of(service);
    // Prefixes: `tns` for the service's package, `p1`, `p2`... for the others, in name order.
    let mut prefixes: BTreeMap<String, String> = BTreeMap::new();
    prefixes.insert(service.package_name().to_owned(), "tns".to_owned());
    for package in types.packages.keys() {
        let next = format!("p{}", prefixes.len());
        prefixes.entry(package.clone()).or_insert(next);
    }
    let names = Names { prefixes: &prefixes };
    let mut out = String::with_capacity(16 << 10);
    let name = service.name();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<wsdl:definitions name=\"{name}\" targetNamespace=\"{tns}\" xmlns:wsdl=\"http://schemas.xmlsoap.org/wsdl/\" \
         xmlns:soap=\"{SOAP11_BINDING}\" xmlns:soap12=\"{SOAP12_BINDING}\" \
         xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" xmlns:tns=\"{tns}\">"
    );
    documentation(&mut out, "wsdl", comment_at(&service.parent_file(), service.path()).as_deref(), 1);
    out.push_str("  <wsdl:types>\n");
    // Every package the service touches has a schema, the service's own first.
    let mut packages: Vec<&String> = prefixes.keys().collect();
    packages.sort_by_key(|p| (*p != service.package_name(), (*p).clone()));
    for package in packages {
        schema(&mut out, &names, &types, package, (package == service.package_name()).then_some(service));
    }
    out.push_str("  </wsdl:types>\n");
    for method in service.methods() {
        let m = method.name();
        let _ = write!(
            out,
            "  <wsdl:message name=\"{m}Request\"><wsdl:part name=\"parameters\" element=\"tns:{m}\"/></wsdl:message>\n  \
             <wsdl:message name=\"{m}Response\"><wsdl:part name=\"parameters\" element=\"tns:{m}Response\"/></wsdl:message>\n"
        );
    }
    let _ = writeln!(out, "  <wsdl:portType name=\"{name}\">");
    for method in service.methods() {
        let m = method.name();
        let _ = writeln!(out, "    <wsdl:operation name=\"{m}\">");
        documentation(&mut out, "wsdl", operation_comment(&method).as_deref(), 3);
        let _ = write!(
            out,
            "      <wsdl:input message=\"tns:{m}Request\"/>\n      <wsdl:output message=\"tns:{m}Response\"/>\n    </wsdl:operation>\n"
        );
    }
    out.push_str("  </wsdl:portType>\n");
    for (binding, soap) in [("Soap", "soap"), ("Soap12", "soap12")] {
        let _ = write!(
            out,
            "  <wsdl:binding name=\"{name}{binding}\" type=\"tns:{name}\">\n    \
             <{soap}:binding style=\"document\" transport=\"http://schemas.xmlsoap.org/soap/http\"/>\n"
        );
        for method in service.methods() {
            let _ = write!(
                out,
                "    <wsdl:operation name=\"{}\">\n      <{soap}:operation soapAction=\"{}\" style=\"document\"/>\n      \
                 <wsdl:input><{soap}:body use=\"literal\"/></wsdl:input>\n      \
                 <wsdl:output><{soap}:body use=\"literal\"/></wsdl:output>\n    </wsdl:operation>\n",
                method.name(),
                action(&method)
            );
        }
        out.push_str("  </wsdl:binding>\n");
    }
    let _ = write!(
        out,
        "  <wsdl:service name=\"{name}\">\n    <wsdl:port name=\"{name}Soap\" binding=\"tns:{name}Soap\"><soap:address location=\""
    );
    let mut parts = vec![std::mem::take(&mut out)];
    let _ = write!(
        out,
        "\"/></wsdl:port>\n    <wsdl:port name=\"{name}Soap12\" binding=\"tns:{name}Soap12\"><soap12:address location=\""
    );
    parts.push(std::mem::take(&mut out));
    out.push_str("\"/></wsdl:port>\n  </wsdl:service>\n</wsdl:definitions>\n");
    parts.push(out);
    Wsdl { parts }
}

/// The method's comment, and what SOAP does with its streams.
fn operation_comment(method: &MethodDescriptor) -> Option<String> {
    let comment = comment_at(&method.parent_file(), method.path());
    let stream = match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => None,
        (true, false) => Some("A client stream: the request holds its messages as <message> elements, sent in order."),
        (false, true) => Some("A server stream: the response collects its messages as <message> elements."),
        (true, true) => Some(
            "A bidirectional stream, half-duplex: the request's <message> elements are sent, then the response collects the replies.",
        ),
    };
    match (comment, stream) {
        (Some(c), Some(s)) => Some(format!("{c}\n{s}")),
        (c, s) => c.or(s.map(str::to_owned)),
    }
}

/// The message and enum types a service's methods reach, by package.
struct Types {
    packages: BTreeMap<String, (Vec<MessageDescriptor>, Vec<EnumDescriptor>)>,
}

impl Types {
    fn of(service: &ServiceDescriptor) -> Self {
        let mut seen = BTreeSet::new();
        let mut queue: VecDeque<MessageDescriptor> = VecDeque::new();
        let mut packages: BTreeMap<String, (Vec<MessageDescriptor>, Vec<EnumDescriptor>)> = BTreeMap::new();
        let mut enums = BTreeSet::new();
        for method in service.methods() {
            queue.push_back(method.input());
            queue.push_back(method.output());
        }
        while let Some(message) = queue.pop_front() {
            if !seen.insert(message.full_name().to_owned()) || Special::of(&message).is_some() {
                continue;
            }
            for field in message.fields() {
                match field.kind() {
                    Kind::Message(m) => queue.push_back(m),
                    Kind::Enum(e) if enums.insert(e.full_name().to_owned()) => {
                        packages.entry(e.package_name().to_owned()).or_default().1.push(e);
                    }
                    _ => {}
                }
            }
            packages.entry(message.package_name().to_owned()).or_default().0.push(message);
        }
        for (messages, enums) in packages.values_mut() {
            messages.sort_by(|a, b| a.full_name().cmp(b.full_name()));
            enums.sort_by(|a, b| a.full_name().cmp(b.full_name()));
        }
        Types { packages }
    }
}

/// Qualified names in the WSDL.
struct Names<'a> {
    prefixes: &'a BTreeMap<String, String>,
}

impl Names<'_> {
    fn message(&self, m: &MessageDescriptor) -> String {
        format!("{}:{}", self.prefix(m.package_name()), local_type_name(m))
    }

    fn enumeration(&self, e: &EnumDescriptor) -> String {
        format!("{}:{}", self.prefix(e.package_name()), strip_package(e.full_name(), e.package_name()))
    }

    /// Every package a type is named from has its prefix ([`Types::of`] saw it).
    fn prefix(&self, package: &str) -> &str {
        self.prefixes.get(package).map_or("tns", String::as_str)
    }

    /// The schema type of one value of a field of `kind`, and whether it is nillable.
    fn value_type(&self, kind: &Kind) -> (String, bool) {
        let simple = |t: &str| (format!("xs:{t}"), false);
        match kind {
            Kind::Double => simple("double"),
            Kind::Float => simple("float"),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => simple("int"),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => simple("long"),
            Kind::Uint32 | Kind::Fixed32 => simple("unsignedInt"),
            Kind::Uint64 | Kind::Fixed64 => simple("unsignedLong"),
            Kind::Bool => simple("boolean"),
            Kind::String => simple("string"),
            Kind::Bytes => simple("base64Binary"),
            Kind::Enum(e) => (self.enumeration(e), false),
            Kind::Message(m) => match Special::of(m) {
                None => (self.message(m), false),
                Some(Special::Timestamp) => simple("dateTime"),
                Some(Special::Duration) => simple("duration"),
                Some(Special::JsonString | Special::JsonText) => simple("string"),
                Some(Special::Wrapper) => {
                    let value = m.get_field_by_name("value").map(|f| f.kind()).unwrap_or(Kind::String);
                    (self.value_type(&value).0, true)
                }
            },
        }
    }
}

/// The schema of one package: its types, and for the service's own package the operations'
/// elements.
fn schema(out: &mut String, names: &Names<'_>, types: &Types, package: &str, service: Option<&ServiceDescriptor>) {
    let _ = write!(
        out,
        "    <xs:schema targetNamespace=\"{}\" elementFormDefault=\"qualified\" xmlns:xs=\"http://www.w3.org/2001/XMLSchema\"",
        namespace(package)
    );
    for (other, prefix) in names.prefixes {
        let _ = write!(out, " xmlns:{prefix}=\"{}\"", namespace(other));
    }
    out.push_str(">\n");
    for other in names.prefixes.keys().filter(|p| *p != package) {
        let _ = writeln!(out, "      <xs:import namespace=\"{}\"/>", namespace(other));
    }
    if let Some(service) = service {
        for method in service.methods() {
            operation_element(out, names, method.name(), &method.input(), method.is_client_streaming());
            let response = format!("{}Response", method.name());
            operation_element(out, names, &response, &method.output(), method.is_server_streaming());
        }
    }
    let empty = (Vec::new(), Vec::new());
    let (messages, enums) = types.packages.get(package).unwrap_or(&empty);
    for message in messages {
        complex_type(out, names, message);
    }
    for e in enums {
        enum_type(out, e);
    }
    out.push_str("    </xs:schema>\n");
}

/// `<xs:element name="GetOrder" type="tns:GetOrderRequest"/>`, or for a stream a sequence of
/// `<message>` elements of the type.
fn operation_element(out: &mut String, names: &Names<'_>, name: &str, message: &MessageDescriptor, stream: bool) {
    let (type_name, _) = names.value_type(&Kind::Message(message.clone()));
    if stream {
        let _ = writeln!(
            out,
            "      <xs:element name=\"{name}\"><xs:complexType><xs:sequence>\
             <xs:element name=\"message\" type=\"{type_name}\" minOccurs=\"0\" maxOccurs=\"unbounded\"/>\
             </xs:sequence></xs:complexType></xs:element>"
        );
    } else {
        let _ = writeln!(out, "      <xs:element name=\"{name}\" type=\"{type_name}\"/>");
    }
}

fn complex_type(out: &mut String, names: &Names<'_>, message: &MessageDescriptor) {
    let _ = writeln!(out, "      <xs:complexType name=\"{}\">", local_type_name(message));
    let mut comment = comment_at(&message.parent_file(), message.path());
    if message.is_map_entry() {
        comment = Some("One entry of a map.".to_owned());
    }
    documentation(out, "xs", comment.as_deref(), 4);
    out.push_str("        <xs:sequence>\n");
    for item in layout(message) {
        match item {
            Item::Field(field) => field_element(out, names, &field, "          ", true),
            Item::Choice(oneof) => {
                let _ = writeln!(out, "          <xs:choice minOccurs=\"0\">");
                for field in oneof.fields() {
                    field_element(out, names, &field, "            ", false);
                }
                out.push_str("          </xs:choice>\n");
            }
        }
    }
    out.push_str("        </xs:sequence>\n      </xs:complexType>\n");
}

fn field_element(out: &mut String, names: &Names<'_>, field: &FieldDescriptor, indent: &str, optional: bool) {
    let (type_name, nillable) = names.value_type(&field.kind());
    let _ = write!(out, "{indent}<xs:element name=\"{}\" type=\"{type_name}\"", field.json_name());
    if optional {
        out.push_str(" minOccurs=\"0\"");
    }
    if field.is_list() || field.is_map() {
        out.push_str(" maxOccurs=\"unbounded\"");
    }
    // A list item cannot be nil (the mapping refuses it); a single wrapper can.
    if nillable && !field.is_list() {
        out.push_str(" nillable=\"true\"");
    }
    let mut comment = comment_at(&field.parent_file(), field.path());
    if let Kind::Message(m) = field.kind() {
        let json = match Special::of(&m) {
            Some(Special::JsonText) => Some(format!("A {} as its proto3 JSON text.", m.full_name())),
            Some(Special::JsonString) => {
                Some(format!("A {} as its proto3 JSON string (paths joined by commas).", m.full_name()))
            }
            _ => None,
        };
        if let Some(json) = json {
            comment = Some(match comment {
                Some(c) => format!("{c}\n{json}"),
                None => json,
            });
        }
    }
    match comment {
        None => out.push_str("/>\n"),
        Some(text) => {
            out.push_str(">\n");
            documentation(out, "xs", Some(&text), indent.len() / 2 + 1);
            let _ = writeln!(out, "{indent}</xs:element>");
        }
    }
}

fn enum_type(out: &mut String, e: &EnumDescriptor) {
    let _ = writeln!(out, "      <xs:simpleType name=\"{}\">", strip_package(e.full_name(), e.package_name()));
    documentation(out, "xs", comment_at(&e.parent_file(), e.path()).as_deref(), 4);
    out.push_str("        <xs:restriction base=\"xs:string\">\n");
    for value in e.values() {
        let _ = writeln!(out, "          <xs:enumeration value=\"{}\"/>", value.name());
    }
    out.push_str("        </xs:restriction>\n      </xs:simpleType>\n");
}

/// `<xs:annotation><xs:documentation>` (or `<wsdl:documentation>`) holding a comment.
fn documentation(out: &mut String, prefix: &str, text: Option<&str>, depth: usize) {
    let Some(text) = text else { return };
    let indent = "  ".repeat(depth);
    let text = escape(text);
    if prefix == "xs" {
        let _ = writeln!(out, "{indent}<xs:annotation><xs:documentation>{text}</xs:documentation></xs:annotation>");
    } else {
        let _ = writeln!(out, "{indent}<wsdl:documentation>{text}</wsdl:documentation>");
    }
}
