//! SOAP Faults: a gRPC status in the client's SOAP version, with its HTTP status.
//!
//! SOAP 1.1: `faultcode` `soap:Client` for what the client got wrong (a 4xx code in
//! google/rpc/code.proto's HTTP mapping), `soap:Server` otherwise; HTTP 500 (SOAP 1.1 section
//! 6.2, WS-I Basic Profile R1126) for every fault about an envelope or a call. Requests that
//! reach no SOAP endpoint keep their HTTP meaning, with a fault as the body: 404 (no such
//! service), 405 (wrong HTTP method), 415 (not a SOAP content type). SOAP 1.2: `env:Sender` (HTTP 400) or `env:Receiver`
//! (HTTP 500), with a `env:Subcode` whose value is the gRPC code's name (`grpc:NOT_FOUND`);
//! `VersionMismatch` and `MustUnderstand` are HTTP 500 (SOAP 1.2 part 2, table 20). Both carry the
//! gRPC status in their detail:
//!
//! ```xml
//! <grpc:status xmlns:grpc="urn:dragoman:grpc">
//!   <grpc:code>5</grpc:code><grpc:name>NOT_FOUND</grpc:name><grpc:message>…</grpc:message>
//!   <grpc:details>{"@type": "type.googleapis.com/google.rpc.ErrorInfo", …}</grpc:details>
//! </grpc:status>
//! ```
//!
//! with each of the status's details as its proto3 JSON text.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tonic::Status;

use super::envelope::Version;
use crate::frontends::ResponseBody;
use crate::transcode::status::{code_name, details_json, http_status};
use crate::transcode::xml::escape;

/// The namespace of the gRPC status in a fault's detail.
pub(super) const GRPC_NS: &str = "urn:dragoman:grpc";

/// What kind of fault: SOAP's own codes, or one chosen by the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The envelope is not one of this version (or of any).
    VersionMismatch,
    /// A header block the client says must be understood, and that the gateway does not know.
    MustUnderstand,
    /// By the status: Client/Sender or Server/Receiver.
    Status,
    /// Client/Sender whatever the status (an operation the service does not have: the client's
    /// mistake, though UNIMPLEMENTED is a 5xx code).
    Sender,
}

/// A fault to send.
#[derive(Debug, Clone)]
pub(super) struct Fault {
    pub(super) kind: Kind,
    pub(super) status: Status,
    /// A refusal's HTTP headers (`Retry-After`, `WWW-Authenticate`, `RateLimit`).
    pub(super) headers: http::HeaderMap,
}

impl Fault {
    /// The request was wrong: INVALID_ARGUMENT.
    pub(super) fn sender(message: impl Into<String>) -> Self {
        Fault { kind: Kind::Status, status: Status::invalid_argument(message), headers: http::HeaderMap::new() }
    }

    pub(super) fn status(status: Status) -> Self {
        Fault { kind: Kind::Status, status, headers: http::HeaderMap::new() }
    }

    pub(super) fn version_mismatch(message: impl Into<String>) -> Self {
        Fault {
            kind: Kind::VersionMismatch,
            status: Status::invalid_argument(message),
            headers: http::HeaderMap::new(),
        }
    }

    /// An operation or action the service does not have: UNIMPLEMENTED, the client's fault.
    pub(super) fn no_operation(message: impl Into<String>) -> Self {
        Fault { kind: Kind::Sender, status: Status::unimplemented(message), headers: http::HeaderMap::new() }
    }

    pub(super) fn must_understand(message: impl Into<String>) -> Self {
        Fault { kind: Kind::MustUnderstand, status: Status::invalid_argument(message), headers: http::HeaderMap::new() }
    }

    fn by_sender(&self) -> bool {
        self.kind == Kind::Sender || http_status(self.status.code()).is_client_error()
    }

    /// The fault as an HTTP response in `version`.
    pub(super) fn response(
        &self,
        version: Version,
        pool: Option<&prost_reflect::DescriptorPool>,
    ) -> Response<ResponseBody> {
        let body = self.envelope(version, pool);
        let status = match (version, self.kind) {
            (Version::V12, Kind::Status | Kind::Sender) if self.by_sender() => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = xml_response(status, version, body);
        response.headers_mut().extend(self.headers.clone());
        response
    }

    fn envelope(&self, version: Version, pool: Option<&prost_reflect::DescriptorPool>) -> String {
        let mut out = String::with_capacity(512);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let env = version.envelope_namespace();
        out.push_str(&format!("<env:Envelope xmlns:env=\"{env}\"><env:Body><env:Fault>"));
        let message = escape(self.status.message());
        let detail = self.detail(pool);
        let code = match (self.kind, version) {
            (Kind::VersionMismatch, _) => "VersionMismatch",
            (Kind::MustUnderstand, _) => "MustUnderstand",
            (_, Version::V11) if self.by_sender() => "Client",
            (_, Version::V11) => "Server",
            (_, Version::V12) if self.by_sender() => "Sender",
            (_, Version::V12) => "Receiver",
        };
        match version {
            Version::V11 => out.push_str(&format!(
                "<faultcode>env:{code}</faultcode><faultstring>{message}</faultstring><detail>{detail}</detail>"
            )),
            Version::V12 => {
                let name = code_name(self.status.code());
                out.push_str(&format!(
                    "<env:Code><env:Value>env:{code}</env:Value><env:Subcode><env:Value xmlns:grpc=\"{GRPC_NS}\">grpc:{name}</env:Value></env:Subcode></env:Code>\
                     <env:Reason><env:Text xml:lang=\"en\">{message}</env:Text></env:Reason><env:Detail>{detail}</env:Detail>"
                ));
            }
        }
        out.push_str("</env:Fault></env:Body></env:Envelope>\n");
        out
    }

    fn detail(&self, pool: Option<&prost_reflect::DescriptorPool>) -> String {
        let code = self.status.code();
        let mut out = format!(
            "<grpc:status xmlns:grpc=\"{GRPC_NS}\"><grpc:code>{}</grpc:code><grpc:name>{}</grpc:name><grpc:message>{}</grpc:message>",
            code as i32,
            code_name(code),
            escape(self.status.message())
        );
        for detail in details_json(&self.status, pool) {
            out.push_str("<grpc:details>");
            out.push_str(&escape(&detail.to_string()));
            out.push_str("</grpc:details>");
        }
        out.push_str("</grpc:status>");
        out
    }
}

impl From<crate::error::GatewayError> for Fault {
    fn from(error: crate::error::GatewayError) -> Self {
        let mut fault = Fault::status(error.to_status());
        if let Some(headers) = error.headers() {
            fault.headers = headers.clone();
        }
        fault
    }
}

/// A SOAP message of `version` as the HTTP response.
pub(super) fn xml_response(status: StatusCode, version: Version, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(version.content_type()));
    response
}
