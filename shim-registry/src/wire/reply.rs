//! Building responses: status, headers and body, with the lengths the spec
//! asks for.

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};

use super::body::ResponseBody;

/// Builds a response; header values are ours and always valid.
pub(super) struct Reply {
    response: Response<ResponseBody>,
}

impl Reply {
    pub(super) fn new(status: StatusCode) -> Self {
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = status;
        Self { response }
    }

    pub(super) fn header(
        mut self,
        name: impl header::IntoHeaderName,
        value: impl AsRef<str>,
    ) -> Self {
        match HeaderValue::from_str(value.as_ref()) {
            Ok(v) => {
                self.response.headers_mut().insert(name, v);
            }
            Err(_) => tracing::warn!(value = value.as_ref(), "dropping an invalid header value"),
        }
        self
    }

    /// An empty body with `Content-Length: 0`.
    pub(super) fn empty(self) -> Response<ResponseBody> {
        self.header(header::CONTENT_LENGTH, "0").response
    }

    /// No body and no length set here (for `HEAD`, where it is set by the caller).
    pub(super) fn response(self) -> Response<ResponseBody> {
        self.response
    }

    pub(super) fn body(mut self, body: impl Into<Bytes>) -> Response<ResponseBody> {
        *self.response.body_mut() = ResponseBody::full(body);
        self.response
    }

    pub(super) fn stream(mut self, body: ResponseBody) -> Response<ResponseBody> {
        *self.response.body_mut() = body;
        self.response
    }

    /// `body` with its `Content-Length`, sent only when the method is not `HEAD`.
    pub(super) fn body_unless_head(
        self,
        method: &Method,
        body: impl Into<Bytes>,
    ) -> Response<ResponseBody> {
        let body = body.into();
        let reply = self.header(header::CONTENT_LENGTH, body.len().to_string());
        if method == Method::HEAD {
            reply.response()
        } else {
            reply.body(body)
        }
    }
}
