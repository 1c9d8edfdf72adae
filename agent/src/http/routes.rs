//! What a request gets: the method and body checks, basic auth, then the router.

use axum::{
    body::{Body, HttpBody},
    http::{HeaderValue, Method, Request, Response, StatusCode, header},
};
use hyper::body::Incoming;

use super::{Shared, UNAUTHENTICATED};

pub(super) async fn respond(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let server = &shared.server;
    let mut resp = check_and_route(req, shared).await;
    for (k, v) in &server.headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("{text}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn check_and_route(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let server = &shared.server;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "copyscope: only GET and HEAD",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let (parts, body) = req.into_parts();
    let limit = server.limits.body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let too_large = || {
        let mut r = plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "copyscope: a request body is not expected",
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    if !body.is_end_stream() && axum::body::to_bytes(Body::new(body), limit).await.is_err() {
        return too_large();
    }
    let needs_auth = !UNAUTHENTICATED.contains(&parts.uri.path());
    let allowed = match &server.auth {
        Some(auth) if needs_auth => auth.allows(&parts.headers).await,
        _ => true,
    };
    if !allowed {
        let mut r = plain(StatusCode::UNAUTHORIZED, "Unauthorized");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"copyscope\", charset=\"UTF-8\""),
        );
        return r;
    }
    let req = Request::from_parts(parts, Body::empty());
    let mut app = shared.app.clone();
    match tower_service::Service::call(&mut app, req).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}
