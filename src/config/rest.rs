//! The `rest:` section of the config: the REST/JSON frontend's settings as written, and as the
//! frontend reads them (header names parsed and lower-cased once).

use serde::{Deserialize, Serialize};

/// The `rest:` section. Where Envoy's gRPC-JSON transcoder has an option for the same thing, the
/// name and meaning are Envoy's.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestFile {
    /// How responses are printed: `add_whitespace`, `always_print_primitive_fields`,
    /// `always_print_enums_as_ints`, `preserve_proto_field_names` (all false by default).
    pub print_options: crate::transcode::json::PrintOptions,
    /// Ignore query parameters that name no field instead of answering 400.
    pub ignore_unknown_query_parameters: bool,
    /// Ignore JSON body fields the message does not have instead of answering 400.
    pub ignore_unknown_fields: bool,
    /// Read `+` in query parameters as a space.
    pub query_param_unescape_plus: bool,
    /// Match enum names in query parameters and path variables regardless of case.
    pub case_insensitive_enum_parsing: bool,
    /// Largest request body accepted, in bytes; larger ones get 413. Default 16 MiB.
    pub max_request_body_size: u64,
    /// When the body and a path variable set the same field: `path_wins` (default) or `reject`
    /// (400).
    pub path_body_conflict: PathBodyConflict,
    /// Framing of server-streaming responses when `Accept` does not choose one: `result_lines`
    /// (default; grpc-gateway's `{"result": ...}` per line), `lines` (bare NDJSON), `array`
    /// (one JSON array, Envoy's) or `sse` (Server-Sent Events).
    pub stream_format: StreamFormat,
    /// Request headers passed to the backend as metadata under their own name.
    pub forward_headers: Vec<String>,
    /// Request headers with this prefix are passed as metadata without it.
    pub metadata_header_prefix: String,
    /// Response metadata comes back as headers with this prefix...
    pub response_header_prefix: String,
    /// ...and trailers with this one.
    pub response_trailer_prefix: String,
    /// Response metadata and trailers passed back under their own name, without a prefix.
    pub response_headers_unprefixed: Vec<String>,
    /// A request header giving the call's deadline in milliseconds (besides `grpc-timeout`).
    pub timeout_header: String,
    /// For a PATCH whose body is one message field and whose request has an `update_mask`
    /// (google.protobuf.FieldMask) the client left unset, fill it with the paths of the keys the
    /// body sets, as grpc-gateway does. Default true.
    pub patch_update_mask_from_body: bool,
    /// Cross-origin requests from browsers; off unless set.
    pub cors: Option<CorsFile>,
}

impl Default for RestFile {
    fn default() -> Self {
        RestFile {
            print_options: Default::default(),
            ignore_unknown_query_parameters: false,
            ignore_unknown_fields: false,
            query_param_unescape_plus: false,
            case_insensitive_enum_parsing: false,
            max_request_body_size: 16 << 20,
            path_body_conflict: PathBodyConflict::PathWins,
            stream_format: StreamFormat::ResultLines,
            forward_headers: vec!["authorization".into()],
            metadata_header_prefix: "grpc-metadata-".into(),
            response_header_prefix: "grpc-metadata-".into(),
            response_trailer_prefix: "grpc-trailer-".into(),
            response_headers_unprefixed: Vec::new(),
            timeout_header: "x-timeout-ms".into(),
            patch_update_mask_from_body: true,
            cors: None,
        }
    }
}

/// `rest.path_body_conflict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathBodyConflict {
    PathWins,
    Reject,
}

/// `rest.stream_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamFormat {
    ResultLines,
    Lines,
    Array,
    Sse,
}

/// `rest.cors`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorsFile {
    /// Origins allowed, e.g. `https://app.example.com`, or `*`.
    pub allow_origins: Vec<String>,
    /// Request headers a browser may send besides the simple ones. Default: content-type,
    /// authorization, x-timeout-ms, and anything starting with the metadata prefix.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers a browser may read. Default: none beyond the simple ones.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight answer, in seconds. Default 600.
    #[serde(default = "default_max_age")]
    pub max_age: u64,
    /// Allow cookies and credentials (not with `*`).
    #[serde(default)]
    pub allow_credentials: bool,
}

fn default_max_age() -> u64 {
    600
}

/// The REST frontend's settings, header names lower-cased and checked.
#[derive(Debug, Clone)]
pub struct RestOptions {
    pub print: crate::transcode::json::PrintOptions,
    pub ignore_unknown_query_parameters: bool,
    pub ignore_unknown_fields: bool,
    pub query_param_unescape_plus: bool,
    pub case_insensitive_enum_parsing: bool,
    pub max_request_body_size: u64,
    pub path_body_conflict: PathBodyConflict,
    pub stream_format: StreamFormat,
    pub forward_headers: Vec<http::HeaderName>,
    pub metadata_header_prefix: String,
    pub response_header_prefix: String,
    pub response_trailer_prefix: String,
    pub response_headers_unprefixed: Vec<http::HeaderName>,
    pub timeout_header: http::HeaderName,
    pub patch_update_mask_from_body: bool,
    pub cors: Option<CorsFile>,
    /// From `server:`: how long a body the frontend reads whole may take to arrive...
    pub body_read_timeout: std::time::Duration,
    /// ...and the largest message it sends or reads.
    pub max_message_size: u32,
    /// From `auth.api_keys`: a query parameter carrying an API key, and the header it stands
    /// for. REST, SOAP and WebSocket move it into the call's metadata; REST does not bind it.
    pub key_query_parameter: Option<(String, http::HeaderName)>,
}

impl RestOptions {
    pub(super) fn from_file(file: RestFile, server: &super::ServerLimits) -> Result<Self, String> {
        let header = |key: &str, name: &str| {
            http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("at `rest.{key}`: {name:?} is not a header name"))
        };
        let headers = |key: &str, names: &[String]| names.iter().map(|n| header(key, n)).collect::<Result<Vec<_>, _>>();
        if file.cors.as_ref().is_some_and(|c| c.allow_credentials && c.allow_origins.iter().any(|o| o == "*")) {
            return Err("at `rest.cors`: allow_credentials cannot go with allow_origins: [\"*\"]".into());
        }
        Ok(RestOptions {
            print: file.print_options,
            ignore_unknown_query_parameters: file.ignore_unknown_query_parameters,
            ignore_unknown_fields: file.ignore_unknown_fields,
            query_param_unescape_plus: file.query_param_unescape_plus,
            case_insensitive_enum_parsing: file.case_insensitive_enum_parsing,
            max_request_body_size: file.max_request_body_size,
            path_body_conflict: file.path_body_conflict,
            stream_format: file.stream_format,
            forward_headers: headers("forward_headers", &file.forward_headers)?,
            metadata_header_prefix: file.metadata_header_prefix.to_ascii_lowercase(),
            response_header_prefix: file.response_header_prefix.to_ascii_lowercase(),
            response_trailer_prefix: file.response_trailer_prefix.to_ascii_lowercase(),
            response_headers_unprefixed: headers("response_headers_unprefixed", &file.response_headers_unprefixed)?,
            timeout_header: header("timeout_header", &file.timeout_header)?,
            patch_update_mask_from_body: file.patch_update_mask_from_body,
            cors: file.cors,
            body_read_timeout: server.body_read_timeout,
            max_message_size: server.max_message_size,
            key_query_parameter: None,
        })
    }
}
