//! A gRPC status as an HTTP/JSON answer: the HTTP status grpc-gateway uses
//! for the gRPC code, a `google.rpc.Status` body whose details carry their
//! `@type` (so one decoder serves both transports), the status's metadata
//! (`traceresponse`, `x-tencent-request-id`) as headers, and `Retry-After`
//! on 429 and 503 when the details say when to retry.

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use prost::Message as _;
use serde_json::{Map, Value, json};
use tonic::{Code, Status};
use tonic_types::pb;

type BoxBody = tonic::body::Body;

/// The JSON answer for an error: grpc-gateway's HTTP status for the code, a
/// `google.rpc.Status` body, the status's metadata (`traceresponse`,
/// `x-tencent-request-id`) as headers, and `Retry-After` on 429 and 503
/// when the details say when to retry.
pub(crate) fn error_response(status: &Status) -> Response<BoxBody> {
    let http_status = http_status(status.code());
    let body = tonic_status_json(status);
    let retry_after = retry_seconds(&body);
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(BoxBody::new(Full::new(Bytes::from(bytes))));
    *response.status_mut() = http_status;
    *response.headers_mut() = status.metadata().clone().into_headers();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if matches!(
        http_status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) && let Some(seconds) = retry_after
    {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The HTTP status grpc-gateway answers for a gRPC code.
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A `tonic::Status` as `google.rpc.Status` JSON.
pub(crate) fn tonic_status_json(status: &Status) -> Value {
    let details = pb::Status::decode(status.details())
        .map(|rich| rich.details)
        .unwrap_or_default();
    status_json(status.code() as i32, status.message(), &details)
}

/// `google.rpc.Status` in the proto3 JSON mapping, each detail with its
/// `@type`.
pub(crate) fn status_json(code: i32, message: &str, details: &[prost_types::Any]) -> Value {
    json!({
        "code": code,
        "message": message,
        "details": details.iter().map(detail_json).collect::<Vec<_>>(),
    })
}

/// One detail: the well-known `google.rpc` types spelled out, anything
/// else as its bytes.
fn detail_json(any: &prost_types::Any) -> Value {
    let type_url = any.type_url.as_str();
    let name = type_url.rsplit('/').next().unwrap_or_default();
    let value = any.value.as_slice();
    let fields = match name {
        "google.rpc.ErrorInfo" => pb::ErrorInfo::decode(value).ok().map(|info| {
            json!({"reason": info.reason, "domain": info.domain, "metadata": info.metadata})
        }),
        "google.rpc.BadRequest" => pb::BadRequest::decode(value).ok().map(|bad| {
            let violations: Vec<Value> = bad
                .field_violations
                .iter()
                .map(|v| json!({"field": v.field, "description": v.description}))
                .collect();
            json!({ "fieldViolations": violations })
        }),
        "google.rpc.RetryInfo" => pb::RetryInfo::decode(value).ok().map(|retry| {
            let delay = retry.retry_delay.unwrap_or_default();
            json!({ "retryDelay": duration_json(delay.seconds, delay.nanos) })
        }),
        "google.rpc.QuotaFailure" => pb::QuotaFailure::decode(value).ok().map(|quota| {
            let violations: Vec<Value> = quota
                .violations
                .iter()
                .map(|v| json!({"subject": v.subject, "description": v.description}))
                .collect();
            json!({ "violations": violations })
        }),
        "google.rpc.PreconditionFailure" => pb::PreconditionFailure::decode(value).ok().map(|pf| {
            let violations: Vec<Value> = pf
                .violations
                .iter()
                .map(|v| json!({"type": v.r#type, "subject": v.subject, "description": v.description}))
                .collect();
            json!({ "violations": violations })
        }),
        _ => None,
    }
    .unwrap_or_else(|| json!({ "value": base64::engine::general_purpose::STANDARD.encode(value) }));
    let mut object = Map::new();
    object.insert("@type".to_owned(), Value::from(type_url));
    if let Value::Object(fields) = fields {
        object.extend(fields);
    }
    Value::Object(object)
}

/// A `google.protobuf.Duration` in JSON: seconds with 0, 3, 6 or 9
/// fractional digits and an `s`.
fn duration_json(seconds: i64, nanos: i32) -> String {
    let nanos = nanos.unsigned_abs();
    if nanos == 0 {
        format!("{seconds}s")
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{seconds}.{:03}s", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{seconds}.{:06}s", nanos / 1_000)
    } else {
        format!("{seconds}.{nanos:09}s")
    }
}

/// Whole seconds to wait, from a `RetryInfo` in a status body, rounded up.
fn retry_seconds(body: &Value) -> Option<u64> {
    body["details"].as_array()?.iter().find_map(|detail| {
        let delay = detail["retryDelay"].as_str()?.strip_suffix('s')?;
        let seconds: f64 = delay.parse().ok()?;
        Some(seconds.ceil().max(0.0) as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::error::Error;

    #[test]
    fn grpc_codes_map_to_grpc_gateways_http_statuses() {
        for (code, http) in [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::FailedPrecondition, 400),
        ] {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn errors_carry_typed_details_and_retry_after() {
        let status: Status = Error::RateLimited {
            retry_after: std::time::Duration::from_millis(1500),
        }
        .into();

        let response = error_response(&status);

        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "2");
        let body = tonic_status_json(&status);
        assert_eq!(body["code"], 8);
        assert_eq!(
            body["details"][0]["@type"],
            "type.googleapis.com/google.rpc.ErrorInfo"
        );
        assert_eq!(body["details"][0]["reason"], "RequestLimitExceeded");
        let retry = body["details"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo")
            .unwrap();
        assert_eq!(retry["retryDelay"], "1.500s");
    }

    #[test]
    fn durations_use_the_proto3_json_form() {
        assert_eq!(duration_json(1, 0), "1s");
        assert_eq!(duration_json(1, 500_000_000), "1.500s");
        assert_eq!(duration_json(0, 1_000), "0.000001s");
        assert_eq!(duration_json(0, 7), "0.000000007s");
    }
}
