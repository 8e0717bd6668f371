//! A gRPC status for the other protocols: its HTTP status (google/rpc/code.proto's mapping), its
//! code's name, and `google.rpc.Status` as JSON (`{"code", "message", "details"}`: REST's error
//! body, WebSocket's final frame) or XML (REST's XML errors; SOAP faults carry its details).

use prost::Message;

/// `google.rpc.Status` as carried in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// The JSON body of an error: `{"code", "message", "details"}`. Details are rendered as the
/// Any JSON mapping when their type is in `pool`, else as `{"@type", "value": <base64>}`.
pub fn status_json(status: &tonic::Status, pool: Option<&prost_reflect::DescriptorPool>) -> Vec<u8> {
    let details = details_json(status, pool);
    /// Field order as in google.rpc.Status.
    #[derive(serde::Serialize)]
    struct Body<'a> {
        code: i32,
        message: &'a str,
        details: Vec<serde_json::Value>,
    }
    let body = Body { code: status.code() as i32, message: status.message(), details };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The XML body of an error: `google.rpc.Status` by the XML mapping (crate::transcode::xml),
/// each detail an Any, so its JSON text (see [`status_json`]).
pub fn status_xml(status: &tonic::Status, pool: Option<&prost_reflect::DescriptorPool>) -> String {
    use super::xml::escape;
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Status xmlns=\"{}\"><code>{}</code><message>{}</message>",
        super::xml::namespace("google.rpc"),
        status.code() as i32,
        escape(status.message())
    );
    for detail in details_json(status, pool) {
        out.push_str("<details>");
        out.push_str(&escape(&detail.to_string()));
        out.push_str("</details>");
    }
    out.push_str("</Status>");
    out
}

/// The status's details (`grpc-status-details-bin`), each as the Any JSON mapping (see
/// [`status_json`]).
pub fn details_json(status: &tonic::Status, pool: Option<&prost_reflect::DescriptorPool>) -> Vec<serde_json::Value> {
    RpcStatus::decode(status.details())
        .map(|s| s.details)
        .unwrap_or_default()
        .into_iter()
        .map(|any| detail_json(&any, pool))
        .collect()
}

/// The HTTP status for a gRPC code (google/rpc/code.proto).
pub fn http_status(code: tonic::Code) -> http::StatusCode {
    use http::StatusCode;
    use tonic::Code;
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
    }
}

/// A code's name as google/rpc/code.proto spells it: `NOT_FOUND`.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// google/rpc/error_details.proto, which the gateway's own refusals use (RetryInfo, ErrorInfo):
/// known whatever descriptors the call's service came with.
fn error_details() -> Option<&'static prost_reflect::DescriptorPool> {
    static POOL: std::sync::OnceLock<Option<prost_reflect::DescriptorPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| prost_reflect::DescriptorPool::decode(tonic_types::pb::FILE_DESCRIPTOR_SET).ok()).as_ref()
}

fn detail_json(any: &prost_types::Any, pool: Option<&prost_reflect::DescriptorPool>) -> serde_json::Value {
    let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
    let known = pool
        .and_then(|p| p.get_message_by_name(type_name))
        .or_else(|| error_details().and_then(|p| p.get_message_by_name(type_name)));
    if let Some(descriptor) = known {
        let message = prost_reflect::DynamicMessage::decode(descriptor, any.value.as_slice()).ok();
        // A detail nesting Anys without bound would overflow the stack when written: base64 then.
        if let Some(message) = message.filter(|m| super::json::check_nesting(m).is_ok()) {
            if let Ok(serde_json::Value::Object(mut fields)) = serde_json::to_value(&message) {
                fields.insert("@type".into(), any.type_url.clone().into());
                return serde_json::Value::Object(fields);
            }
        }
    }
    use base64::Engine;
    serde_json::json!({ "@type": any.type_url, "value": base64::engine::general_purpose::STANDARD.encode(&any.value) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn a_detail_nesting_anys_without_bound_is_sent_as_base64() {
        let mut any = prost_types::Any { type_url: "type.googleapis.com/google.protobuf.Empty".into(), value: vec![] };
        for _ in 0..3000 {
            let value = any.encode_to_vec();
            any = prost_types::Any { type_url: "type.googleapis.com/google.protobuf.Any".into(), value };
        }
        let rpc = RpcStatus { code: 13, message: "deep".into(), details: vec![any] };
        let status = tonic::Status::with_details(Code::Internal, "deep", rpc.encode_to_vec().into());
        let pool = prost_reflect::DescriptorPool::global();
        let json: serde_json::Value = serde_json::from_slice(&status_json(&status, Some(&pool))).expect("json");
        assert_eq!(json["details"][0]["@type"], "type.googleapis.com/google.protobuf.Any");
        assert!(json["details"][0]["value"].is_string(), "as base64, not opened: {json}");
    }

    #[test]
    fn the_gateways_own_details_are_rendered_whatever_the_pool() {
        let error =
            crate::error::GatewayError::new(Code::ResourceExhausted, crate::error::Origin::Gateway, "slow down")
                .advised(
                    crate::error::Advice::default()
                        .retry_after(std::time::Duration::from_millis(1500))
                        .reason("RATE_LIMITED")
                        .metadata("limit", "per-ip"),
                );
        let json: serde_json::Value = serde_json::from_slice(&status_json(&error.to_status(), None)).expect("json");
        let details = json["details"].as_array().expect("details");
        let retry = details.iter().find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo").expect("retry");
        assert_eq!(retry["retryDelay"], "1.500s");
        let info = details.iter().find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo").expect("info");
        assert_eq!(info["reason"], "RATE_LIMITED");
        assert_eq!(info["domain"], "dragoman");
        assert_eq!(info["metadata"]["limit"], "per-ip");
    }

    #[test]
    fn details_travel_as_any_json() {
        let detail = prost_types::Any { type_url: "type.googleapis.com/example.Unknown".into(), value: vec![1, 2, 3] };
        let rpc = RpcStatus { code: 5, message: "gone".into(), details: vec![detail] };
        let status = tonic::Status::with_details(Code::NotFound, "gone", rpc.encode_to_vec().into());
        let json: serde_json::Value = serde_json::from_slice(&status_json(&status, None)).expect("json");
        assert_eq!(json["code"], 5);
        assert_eq!(json["message"], "gone");
        assert_eq!(json["details"][0]["@type"], "type.googleapis.com/example.Unknown");
        assert_eq!(json["details"][0]["value"], "AQID");
    }
}
