//! CORS (the Fetch standard's CORS protocol) and OPTIONS: the gateway answers preflights for
//! every route itself — no OPTIONS binding per method, as Envoy users must add.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Empty};

use crate::config::{CorsFile, RestOptions};
use crate::frontends::ResponseBody;

/// Answers an OPTIONS request for a known path: `Allow`, and for a preflight from an allowed
/// origin the `Access-Control-Allow-*` headers (the origin ones are added by [`decorate`]).
pub(super) fn preflight(request: &HeaderMap, methods: &[Method], options: &RestOptions) -> Response<ResponseBody> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let mut list: Vec<&str> = methods.iter().map(Method::as_str).collect();
    list.push("OPTIONS");
    let list = list.join(", ");
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&list) {
        headers.insert(header::ALLOW, value.clone());
    }
    let (Some(cors), Some(_)) = (&options.cors, request.get(header::ACCESS_CONTROL_REQUEST_METHOD)) else {
        return response;
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&list) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, value);
    }
    let asked = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let allowed: Vec<&str> =
        asked.split(',').map(str::trim).filter(|h| !h.is_empty() && header_allowed(h, cors, options)).collect();
    if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
        if !allowed.is_empty() {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value);
        }
    }
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(cors.max_age));
    response
}

/// A request header a browser may send: the configured list, or by default the ones the
/// gateway reads.
fn header_allowed(name: &str, cors: &CorsFile, options: &RestOptions) -> bool {
    let name = name.to_ascii_lowercase();
    if !cors.allow_headers.is_empty() {
        return cors.allow_headers.iter().any(|h| h.eq_ignore_ascii_case(&name));
    }
    matches!(name.as_str(), "content-type" | "authorization" | "grpc-timeout")
        || name == options.timeout_header.as_str()
        || name.starts_with(&options.metadata_header_prefix)
        || options.forward_headers.iter().any(|h| h.as_str() == name)
}

/// Adds the origin's CORS headers to any response, when the origin is allowed.
pub(super) fn decorate(headers: &mut HeaderMap, origin: &HeaderValue, options: &RestOptions) {
    let Some(cors) = &options.cors else { return };
    let any = cors.allow_origins.iter().any(|o| o == "*");
    let listed = origin.to_str().is_ok_and(|o| cors.allow_origins.iter().any(|a| a == o));
    if !any && !listed {
        return;
    }
    let allow = if any && !cors.allow_credentials { HeaderValue::from_static("*") } else { origin.clone() };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if cors.allow_credentials {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    if !cors.expose_headers.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&cors.expose_headers.join(", ")) {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, value);
        }
    }
}
