//! HTTP/1.1 over a bare TCP connection, for malformed input, exact request targets and
//! pipelining: requests written byte for byte, everything the server sends read until it
//! closes or a deadline passes, and every response in it parsed with `httparse` (heads,
//! `Content-Length` and chunked bodies, several responses on one connection).
//!
//! Responses are framed as answers to requests other than `HEAD`: a body is read by its
//! `Transfer-Encoding: chunked` or `Content-Length`, else up to the end of the bytes;
//! `1xx`, `204` and `304` answers have none.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most header lines one parsed response head may have.
const MAX_HEADERS: usize = 128;

/// An HTTP/1.1 `GET` written byte for byte: the request line, `Host`, `Connection: close`
/// unless kept alive, the extra header lines in order and an empty line.
#[derive(Debug, Clone)]
pub struct RawRequest {
    target: String,
    host: String,
    close: bool,
    headers: Vec<String>,
}

impl RawRequest {
    /// `GET target` with `Host: tollgate.test` and `Connection: close`.
    pub fn get(target: &str) -> RawRequest {
        RawRequest {
            target: target.to_owned(),
            host: "tollgate.test".to_owned(),
            close: true,
            headers: Vec::new(),
        }
    }

    /// With `Host: authority` instead of `tollgate.test`.
    pub fn host(mut self, authority: &str) -> RawRequest {
        self.host = authority.to_owned();
        self
    }

    /// Without `Connection: close`, so the connection stays open after the answer.
    pub fn keep_alive(mut self) -> RawRequest {
        self.close = false;
        self
    }

    /// With the header line `line` (`Name: value`, written as it is).
    pub fn header(mut self, line: &str) -> RawRequest {
        self.headers.push(line.to_owned());
        self
    }

    /// With `Tollgate-Flow: flow`.
    pub fn flow(self, flow: &str) -> RawRequest {
        self.header(&format!("Tollgate-Flow: {flow}"))
    }

    /// The request's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut text = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", self.target, self.host);
        if self.close {
            text.push_str("Connection: close\r\n");
        }
        for line in &self.headers {
            text.push_str(line);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        text.into_bytes()
    }
}

/// A `GET target` request with `Connection: close` and the given extra header lines.
pub fn raw_get(target: &str, headers: &[&str]) -> Vec<u8> {
    headers
        .iter()
        .fold(RawRequest::get(target), |request, line| {
            request.header(line)
        })
        .bytes()
}

/// One response parsed from a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header lines in arrival order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked (cut short if the connection ended first).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What came back on a raw connection.
#[derive(Debug)]
pub struct RawResp {
    /// Status of the first response, if a whole response head arrived.
    pub status: Option<u16>,
    /// The first response's body (de-chunked); empty without a first response.
    pub body: Vec<u8>,
    /// Everything received.
    pub bytes: Vec<u8>,
    /// The server closed the connection (EOF or reset) before the deadline.
    pub closed: bool,
    /// Every response in `bytes`, in order.
    parsed: Vec<RawResponse>,
}

impl RawResp {
    /// Parses every response in `bytes`, received on a connection that was `closed` or not.
    pub fn parse(bytes: Vec<u8>, closed: bool) -> RawResp {
        let parsed = parse_responses(&bytes);
        let first = parsed.first();
        RawResp {
            status: first.map(|r| r.status),
            body: first.map(|r| r.body.clone()).unwrap_or_default(),
            bytes,
            closed,
            parsed,
        }
    }

    /// The first response's body parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "raw body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    /// A header of the first response (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.parsed.first().and_then(|r| r.header(name))
    }

    /// How many responses arrived (to detect a smuggled second response).
    pub fn responses(&self) -> usize {
        self.parsed.len()
    }

    /// The status of every response, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.parsed.iter().map(|r| r.status).collect()
    }
}

/// Writes `request` on a fresh connection to `addr` and reads until the server closes the
/// connection or `deadline` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], deadline: Duration) -> RawResp {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
    // A server may refuse and close before it has read everything: what it answered counts.
    let _ = stream.write_all(request).await;
    read_raw(&mut stream, deadline).await
}

/// Reads from `stream` until EOF/reset or `deadline`, and parses the responses.
pub async fn read_raw(stream: &mut TcpStream, deadline: Duration) -> RawResp {
    let until = tokio::time::Instant::now() + deadline;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16384];
    let mut closed = false;
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    RawResp::parse(bytes, closed)
}

/// Every response in `bytes`, up to the first one whose head is incomplete or malformed.
fn parse_responses(mut bytes: &[u8]) -> Vec<RawResponse> {
    let mut responses = Vec::new();
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        let (head_len, status) = match head.parse(bytes) {
            Ok(httparse::Status::Complete(len)) => match head.code {
                Some(status) => (len, status),
                None => break,
            },
            Ok(httparse::Status::Partial) | Err(_) => break,
        };
        let headers: Vec<(String, String)> = head
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).trim().to_owned(),
                )
            })
            .collect();
        bytes = &bytes[head_len..];
        let mut response = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        let body_len = if matches!(status, 100..=199 | 204 | 304) {
            0
        } else if response
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
        {
            let (body, len) = dechunk(bytes);
            response.body = body;
            len
        } else {
            let len = match response.header("content-length") {
                Some(len) => len
                    .parse::<usize>()
                    .map_or(bytes.len(), |n| n.min(bytes.len())),
                None => bytes.len(),
            };
            response.body = bytes[..len].to_vec();
            len
        };
        bytes = &bytes[body_len..];
        responses.push(response);
    }
    responses
}

/// Decodes a chunked body at the start of `data` with `httparse`; returns the body and how
/// many bytes it took (all of `data` when it is cut short or malformed).
fn dechunk(data: &[u8]) -> (Vec<u8>, usize) {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Ok(httparse::Status::Complete((size_len, size))) =
            httparse::parse_chunk_size(&data[at..])
        else {
            return (body, data.len());
        };
        at += size_len;
        if size == 0 {
            // The last chunk, then trailer lines up to an empty line.
            let mut trailers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            return match httparse::parse_headers(&data[at..], &mut trailers) {
                Ok(httparse::Status::Complete((len, _))) => (body, at + len),
                Ok(httparse::Status::Partial) | Err(_) => (body, data.len()),
            };
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let available = &data[at..];
        if available.len() < size {
            body.extend_from_slice(available);
            return (body, data.len());
        }
        body.extend_from_slice(&available[..size]);
        at += size;
        match data[at..].strip_prefix(b"\r\n") {
            Some(_) => at += 2,
            None => return (body, data.len()),
        }
    }
}
