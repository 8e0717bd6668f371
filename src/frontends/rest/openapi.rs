//! The OpenAPI 3.1 document of every loaded service, built per catalog snapshot.

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, Full};

use super::routes::Routes;
use crate::catalog::Catalog;
use crate::frontends::ResponseBody;

pub fn document(_catalog: &Catalog, _routes: &Routes) -> Vec<u8> {
    serde_json::json!({"openapi": "3.1.0", "info": {"title": "Dragoman", "version": "1"}, "paths": {}})
        .to_string()
        .into_bytes()
}

pub(super) fn response(document: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(document).map_err(|never| match never {}).boxed_unsync());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
