//! gRPC status → HTTP (googleapis' google/rpc/code.proto mapping) with a JSON `google.rpc.Status`
//! body — for backend errors and the gateway's own (400, 404, 405, 413, 415, 504...) alike.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use crate::frontends::ResponseBody;
pub use crate::transcode::status::{http_status, status_json};

/// A complete JSON error response.
pub fn error_response(status: &tonic::Status, pool: Option<&prost_reflect::DescriptorPool>) -> Response<ResponseBody> {
    json_response(http_status(status.code()), status_json(status, pool))
}

/// The body format a REST client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    /// `application/xml`, by the XML mapping (crate::transcode::xml).
    Xml,
}

impl Format {
    /// XML when `Accept` lists an XML type first, or when the request's body is read as XML
    /// (`xml_body`: not a raw `google.api.HttpBody`) and `Accept` does not ask for JSON; JSON
    /// otherwise. A browser's `Accept` starts with `text/html`: JSON.
    pub fn of(headers: &http::HeaderMap, xml_body: bool) -> Format {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let first = accept.split(',').next().unwrap_or_default();
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let by_body = xml_body && is_xml(content_type) && !accept.contains("json");
        if is_xml(Some(first)) || by_body { Format::Xml } else { Format::Json }
    }

    /// The error response in this format.
    pub fn error(self, status: &tonic::Status, pool: Option<&prost_reflect::DescriptorPool>) -> Response<ResponseBody> {
        match self {
            Format::Json => error_response(status, pool),
            Format::Xml => {
                let body = crate::transcode::status::status_xml(status, pool).into_bytes();
                typed_response(http_status(status.code()), body, XML)
            }
        }
    }
}

/// The content type of XML replies.
pub const XML: &str = "application/xml; charset=utf-8";

/// `application/xml` or `text/xml`, with any parameters.
pub fn is_xml(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let essence = ct.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/xml") || essence.eq_ignore_ascii_case("text/xml")
}

/// A JSON response with a status code.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response<ResponseBody> {
    typed_response(status, body, "application/json")
}

fn typed_response(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn every_code_maps_as_code_proto_says() {
        let table = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }
}
