//! What travels in the frames: the gateway's text frames (`headers`, `result`, `status`, each
//! with the call's `id` on a multiplexed socket), the close that ends a call's socket, and a
//! client's frame turned into a request message for the backend.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use prost_reflect::DynamicMessage;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tonic::{Code, Status};

use crate::config::RestOptions;
use crate::error::{GatewayError, Origin};
use crate::frontends::offload;
use crate::frontends::rest::request;
use crate::frontends::rest::routes::Route;
use crate::transcode::{framing, json, status};

/// `{"id":<id>,"headers":{...}}`: the backend's response metadata, before its first message.
pub(super) fn headers(id: Option<&str>, metadata: &HeaderMap) -> Message {
    envelope(id, "headers", &metadata_json(metadata))
}

/// `{"id":<id>,"result":<message>}`: one reply message as JSON.
pub(super) fn result(id: Option<&str>, message: &[u8]) -> Message {
    envelope(id, "result", message)
}

/// `{"id":<id>,"status":{"code","message","details"},"trailers":{...}}`: how the call ended.
pub(super) fn status(
    id: Option<&str>,
    status: &Status,
    trailers: &HeaderMap,
    pool: Option<&prost_reflect::DescriptorPool>,
) -> Message {
    let mut text = open(id, "status", 64);
    text.extend_from_slice(&status::status_json(status, pool));
    text.extend_from_slice(b",\"trailers\":");
    text.extend_from_slice(&metadata_json(trailers));
    text.push(b'}');
    message(text)
}

fn envelope(id: Option<&str>, key: &str, value: &[u8]) -> Message {
    let mut text = open(id, key, value.len() + 1);
    text.extend_from_slice(value);
    text.push(b'}');
    message(text)
}

/// `{"id":<id>,"<key>":` with room for `extra` more bytes.
fn open(id: Option<&str>, key: &str, extra: usize) -> Vec<u8> {
    let mut text = Vec::with_capacity(16 + id.map_or(0, str::len) + key.len() + extra);
    text.push(b'{');
    if let Some(id) = id {
        text.extend_from_slice(b"\"id\":");
        text.extend_from_slice(id.as_bytes());
        text.push(b',');
    }
    text.push(b'"');
    text.extend_from_slice(key.as_bytes());
    text.extend_from_slice(b"\":");
    text
}

fn message(text: Vec<u8>) -> Message {
    // Built from JSON the serializers wrote and ids parsed as JSON: valid UTF-8.
    match String::from_utf8(text) {
        Ok(text) => Message::text(text),
        Err(e) => Message::text(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// Metadata as a JSON object of strings; a name sent more than once has its values joined by
/// ", " (as HTTP joins them). gRPC's own names and the content type are the transport's, not the
/// call's.
fn metadata_json(metadata: &HeaderMap) -> Vec<u8> {
    let mut object = serde_json::Map::new();
    for name in metadata.keys() {
        if name == http::header::CONTENT_TYPE || name.as_str().starts_with("grpc-") {
            continue;
        }
        let values: Vec<String> =
            metadata.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        object.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    serde_json::to_vec(&object).unwrap_or_else(|_| b"{}".to_vec())
}

/// The close that ends a call's socket: 1000 when the call succeeded, else 4000 plus its gRPC
/// code, with the status message as the reason (cut to the 123 bytes a close frame holds).
pub(super) fn close(status: &Status) -> Message {
    let code = match status.code() {
        Code::Ok => CloseCode::Normal,
        code => CloseCode::from(4000 + code as u16),
    };
    Message::Close(Some(CloseFrame { code, reason: reason(status.message()).into() }))
}

/// A close of the socket itself (not of one call), with its reason.
pub(super) fn close_with(code: CloseCode, why: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason(why).into() }))
}

fn reason(text: &str) -> String {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Turns a client's frames into request messages of one call, framed for the backend: a text
/// frame is the message in JSON (the REST frontend's mapping), a binary frame its protobuf
/// encoding. Path variables of the URL the socket opened at apply to every message.
pub(super) struct Requests {
    pub route: Arc<Route>,
    pub bound: crate::frontends::rest::routes::Bound,
    pub rest: Arc<RestOptions>,
}

impl Requests {
    /// A text frame's message, framed; big ones are parsed off the worker.
    pub(super) async fn json(self: &Arc<Self>, text: Bytes) -> Result<Bytes, GatewayError> {
        if !offload::is_big(text.len()) {
            return self.json_now(&text);
        }
        let this = self.clone();
        offload::run(move || this.json_now(&text)).await?
    }

    fn json_now(&self, text: &[u8]) -> Result<Bytes, GatewayError> {
        let message = request::stream_message(&self.route, &self.bound, text, &self.rest)?;
        self.frame(&message)
    }

    /// A binary frame's message, framed: passed on as it is unless path variables must be set in
    /// it (then decoded, bound and encoded again).
    pub(super) fn proto(&self, bytes: &[u8]) -> Result<Bytes, GatewayError> {
        if self.bound.is_empty() {
            return framing::frame_encoded(bytes, self.rest.max_message_size).map_err(too_large);
        }
        let input = self.route.method.descriptor.input();
        let mut message = DynamicMessage::decode(input, bytes).map_err(|e| {
            GatewayError::new(
                Code::InvalidArgument,
                Origin::Client,
                format!("a binary frame is not a protobuf message: {e}"),
            )
        })?;
        request::bind_path(&mut message, &self.route, &self.bound, &self.rest)?;
        self.frame(&message)
    }

    fn frame(&self, message: &DynamicMessage) -> Result<Bytes, GatewayError> {
        framing::encode(message, self.rest.max_message_size).map_err(too_large)
    }
}

fn too_large(error: framing::FramingError) -> GatewayError {
    GatewayError::new(Code::ResourceExhausted, Origin::Client, format!("the request message: {error}"))
}

/// Writes reply messages: JSON in `{"result": ...}` text frames, or the protobuf encoding in
/// binary frames.
pub(super) struct Replies {
    pub output: prost_reflect::MessageDescriptor,
    pub holds_any: bool,
    pub print: json::PrintOptions,
    pub proto: bool,
}

impl Replies {
    /// One reply message as the frame that carries it; big ones are written off the worker.
    pub(super) async fn frame(self: &Arc<Self>, id: Option<&str>, message: Bytes) -> Result<Message, Status> {
        if self.proto {
            return Ok(Message::Binary(message));
        }
        let json = if offload::is_big(message.len()) {
            let this = self.clone();
            offload::run(move || this.json(message)).await.map_err(|e| e.to_status())??
        } else {
            self.json(message)?
        };
        Ok(result(id, &json))
    }

    fn json(&self, message: Bytes) -> Result<Vec<u8>, Status> {
        let decoded = DynamicMessage::decode(self.output.clone(), message)
            .map_err(|e| Status::internal(format!("a reply message does not decode: {e}")))?;
        let no_json = |e: json::JsonError| {
            Status::internal(format!("the backend's reply cannot be written as JSON: {}", e.message))
        };
        if self.holds_any {
            json::check_nesting(&decoded).map_err(no_json)?;
        }
        json::encode(&decoded, &self.print).map_err(no_json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(message: Message) -> String {
        match message {
            Message::Text(text) => text.as_str().to_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn envelopes_are_json() {
        let mut metadata = HeaderMap::new();
        metadata.insert("content-type", "application/grpc".parse().expect("header value"));
        metadata.append("x-a", "1".parse().expect("header value"));
        metadata.append("x-a", "2".parse().expect("header value"));
        assert_eq!(text(headers(None, &metadata)), r#"{"headers":{"x-a":"1, 2"}}"#);
        assert_eq!(text(result(Some("\"c1\""), b"{\"n\":1}")), r#"{"id":"c1","result":{"n":1}}"#);
        let end = text(status(Some("7"), &Status::not_found("no order o-9"), &HeaderMap::new(), None));
        let parsed: serde_json::Value = serde_json::from_str(&end).expect("json");
        assert_eq!(parsed["id"], 7);
        assert_eq!(parsed["status"]["code"], 5);
        assert_eq!(parsed["status"]["message"], "no order o-9");
        assert_eq!(parsed["trailers"], serde_json::json!({}));
    }

    #[test]
    fn close_codes() {
        let Message::Close(Some(ok)) = close(&Status::ok("")) else { panic!() };
        assert_eq!(u16::from(ok.code), 1000);
        let Message::Close(Some(bad)) = close(&Status::invalid_argument("é".repeat(100))) else { panic!() };
        assert_eq!(u16::from(bad.code), 4003);
        assert!(bad.reason.len() <= 123, "{}", bad.reason.len());
    }
}
