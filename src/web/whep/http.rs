//! The WHEP endpoints on the page server: `POST /whep`, `PATCH` and
//! `DELETE /whep/<id>`, and their CORS preflights.
//!
//! Authorization is `Authorization: Bearer <token>` with a WHEP/snapshot
//! token of its own (`campeer keys token add`; `crate::keystore::tokens`),
//! never the key's MQTT password and never a cookie, so a page on another
//! origin may
//! call these (CORS) without the browser lending it anything ambient: it
//! must hold a key. On an open device there is no token to hold, so a
//! browser request from another origin is refused unless that origin is
//! the page's own or in `http.allowed_origins` (else any web page a
//! visitor opens could watch the camera through the visitor's browser).
//! The `Host` check (DNS rebinding) has run before this.

use super::resources::ResourceRefusal;
use super::{sdpfrag, valid_id, Whep, WhepError};
use crate::signaling::messages::ErrorCode;
use crate::web::bearer::BearerGuard;
use crate::web::guard::check_origin;
use crate::web::TokenCheck;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use std::net::IpAddr;
use tracing::{info, warn};

/// Largest SDP offer body read, bytes (the offer check then applies its
/// own, smaller limit with a clear message).
pub const MAX_OFFER_BODY: usize = 64 * 1024;

/// What the page server knows that WHEP needs.
pub struct Gate<'a> {
    /// The device accepts unsigned offers (no keys).
    pub open: bool,
    pub check_token: &'a TokenCheck,
    /// The failure limit (and trusted proxies).
    pub bearer: &'a BearerGuard,
    /// The connection's peer.
    pub peer: Option<IpAddr>,
    /// `http.allowed_origins`, normalized.
    pub origins: &'a [String],
    /// The page listener's port, for the same-origin check.
    pub page_port: Option<u16>,
}

/// Serves a request for `/whep` or `/whep/...`.
pub async fn handle(whep: &Whep, gate: Gate<'_>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let id = match path.strip_prefix("/whep") {
        Some("") | Some("/") => None,
        Some(rest) => match rest.strip_prefix('/') {
            Some(id) if valid_id(id) => Some(id.to_owned()),
            _ => return text(StatusCode::NOT_FOUND, "no such WHEP resource\n".into()),
        },
        None => return text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    let headers = req.headers().clone();
    let cors = match cors_origin(&gate, &headers) {
        Ok(c) => c,
        Err(why) => {
            warn!("WHEP request refused: {why}");
            return text(StatusCode::FORBIDDEN, format!("{why}\n"));
        }
    };
    let method = req.method().clone();
    let allowed = match (&id, &method) {
        (_, &Method::OPTIONS) | (None, &Method::POST) => true,
        (Some(_), m) => m == Method::PATCH || m == Method::DELETE,
        _ => false,
    };
    let mut r = if !allowed {
        not_allowed(if id.is_none() {
            "POST, OPTIONS"
        } else {
            "PATCH, DELETE, OPTIONS"
        })
    } else if method == Method::OPTIONS {
        preflight(id.is_none())
    } else {
        match (authorize(&gate, &headers), id) {
            (Err(r), _) => *r,
            (Ok(key), None) => post(whep, key, req).await,
            (Ok(key), Some(id)) if method == Method::PATCH => patch(whep, &id, key, req).await,
            (Ok(key), Some(id)) => delete(whep, &id, key),
        }
    };
    add_cors(&mut r, cors);
    r
}

/// The `Access-Control-Allow-Origin` to send, or why the origin is refused.
fn cors_origin(gate: &Gate<'_>, headers: &HeaderMap) -> Result<Option<HeaderValue>, String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    if gate.open {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        check_origin(origin.to_str().ok(), host, gate.page_port, gate.origins)
            .map_err(|e| format!("{e} (the device is open: WHEP has no token to check)"))?;
        return Ok(Some(origin.clone()));
    }
    // Signed: the bearer token authorizes, whatever the origin.
    Ok(Some(HeaderValue::from_static("*")))
}

fn add_cors(r: &mut Response, origin: Option<HeaderValue>) {
    let Some(origin) = origin else { return };
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Accept-Patch, Link"),
    );
}

fn preflight(collection: bool) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    let methods = if collection {
        "POST, OPTIONS"
    } else {
        "PATCH, DELETE, OPTIONS"
    };
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    if collection {
        h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    }
    r
}

/// The bearer's key id (`None` on an open device), or the 401 (429
/// after too many failures from the client).
fn authorize(gate: &Gate<'_>, headers: &HeaderMap) -> Result<Option<String>, Box<Response>> {
    if gate.open {
        return Ok(None);
    }
    let now = crate::clock::monotonic_us();
    match gate
        .bearer
        .check(gate.peer, headers, now, |t| (gate.check_token)(t))
    {
        Ok(key) => Ok(Some(key)),
        Err(why) => {
            if why == crate::web::bearer::BearerRefusal::Wrong {
                info!("WHEP request with a wrong or revoked token");
            }
            Err(Box::new(crate::web::refused(
                why,
                "WHEP needs Authorization: Bearer <token> (campeer keys token add)\n",
            )))
        }
    }
}

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(want))
}

/// The body as text, at most `limit` bytes, or the error response.
async fn body_text(req: Request, limit: usize) -> Result<String, Box<Response>> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes\n"),
        )
    };
    if declared.is_some_and(|n| n > limit) {
        return Err(Box::new(too_large()));
    }
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| Box::new(too_large()))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        Box::new(text(
            StatusCode::BAD_REQUEST,
            "the body is not UTF-8\n".into(),
        ))
    })
}

async fn post(whep: &Whep, key: Option<String>, req: Request) -> Response {
    if !content_type_is(req.headers(), "application/sdp") {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "POST /whep takes an SDP offer, Content-Type: application/sdp\n".into(),
        );
    }
    let sdp = match body_text(req, MAX_OFFER_BODY).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    // Refuse garbage here, before any session or resource exists.
    if let Err(e) = crate::rtc::offer::OfferSummary::parse(&sdp) {
        return text(StatusCode::BAD_REQUEST, format!("bad SDP offer: {e}\n"));
    }
    let t0 = std::time::Instant::now();
    match whep.offer(sdp, key.clone()).await {
        Ok((id, answer)) => {
            info!(resource = %id, key = key.as_deref().unwrap_or("-"),
                  ms = t0.elapsed().as_millis() as u64, "WHEP session answered");
            let mut r = Response::new(Body::from(answer));
            *r.status_mut() = StatusCode::CREATED;
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("/whep/{id}")) {
                h.insert(header::LOCATION, v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("\"{id}\"")) {
                h.insert(header::ETAG, v);
            }
            h.insert(
                "accept-patch",
                HeaderValue::from_static("application/trickle-ice-sdpfrag"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => error_response(e),
    }
}

async fn patch(whep: &Whep, id: &str, key: Option<String>, req: Request) -> Response {
    if !content_type_is(req.headers(), "application/trickle-ice-sdpfrag") {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "PATCH takes Content-Type: application/trickle-ice-sdpfrag\n".into(),
        );
    }
    // `If-Match: *` asks for an ICE restart (RFC 9725).
    let restart = req
        .headers()
        .get(header::IF_MATCH)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"*");
    let body = match body_text(req, super::resources::PATCH_MAX_BYTES).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let frag = match sdpfrag::parse(&body) {
        Ok(f) => f,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad sdpfrag: {e}\n")),
    };
    let admitted = if restart {
        Err(WhepError::Resource(ResourceRefusal::Restart))
    } else {
        whep.admit_patch(id, key.as_deref(), body.len(), frag.ufrag.as_deref())
    };
    if let Err(e) = admitted {
        return error_response(e);
    }
    match whep.patch(id, key.as_deref(), frag.candidates) {
        Ok(()) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Err(e) => error_response(e),
    }
}

fn delete(whep: &Whep, id: &str, key: Option<String>) -> Response {
    match whep.delete(id, key.as_deref()) {
        Ok(()) => text(StatusCode::OK, "session ended\n".into()),
        Err(e) => error_response(e),
    }
}

fn error_response(e: WhepError) -> Response {
    let (status, message) = match e {
        WhepError::Refused(code, m) => (
            match code {
                ErrorCode::BadRequest | ErrorCode::Unsupported => StatusCode::BAD_REQUEST,
                ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
                ErrorCode::Busy => StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
            m,
        ),
        WhepError::Busy(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        WhepError::Resource(ResourceRefusal::NotFound) => (
            StatusCode::NOT_FOUND,
            "no such WHEP resource (ended?)".into(),
        ),
        WhepError::Resource(ResourceRefusal::WrongKey) => (
            StatusCode::FORBIDDEN,
            "this resource belongs to another key".into(),
        ),
        WhepError::Resource(ResourceRefusal::TooLarge(n)) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the fragment is {n} bytes; the limit is {}",
                super::resources::PATCH_MAX_BYTES
            ),
        ),
        // RFC 9725: trickle supported but not restarts: 422.
        WhepError::Resource(ResourceRefusal::Restart) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "ICE restarts are not supported; DELETE this session and POST a new offer".into(),
        ),
        WhepError::Resource(ResourceRefusal::TooFast) => (
            StatusCode::TOO_MANY_REQUESTS,
            "PATCH requests are arriving too fast".into(),
        ),
    };
    let mut r = text(status, format!("{message}\n"));
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    r
}

fn not_allowed(allow: &'static str) -> Response {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed\n".into(),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn text(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_devices_take_any_origin_open_ones_only_their_own() {
        let check: TokenCheck = std::sync::Arc::new(|_| Some("k".into()));
        let guard = BearerGuard::default();
        let allowed = vec!["https://ha.example:8123".to_owned()];
        let gate = |open| Gate {
            open,
            check_token: &check,
            bearer: &guard,
            peer: None,
            origins: &allowed,
            page_port: Some(8080),
        };
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("cam1:8080"));
        assert_eq!(cors_origin(&gate(true), &h), Ok(None));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert_eq!(
            cors_origin(&gate(false), &h),
            Ok(Some(HeaderValue::from_static("*")))
        );
        assert!(cors_origin(&gate(true), &h).is_err());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://ha.example:8123"),
        );
        assert!(cors_origin(&gate(true), &h).is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("http://cam1:8080"));
        assert!(cors_origin(&gate(true), &h).is_ok());
    }
}
