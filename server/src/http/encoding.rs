//! Compressed request bodies: the content codings the ingest routes read (`gzip`, `zstd`), and a
//! decoder that stops the moment its output passes the route's body limit.
//!
//! A route's body limit (`--max-body-bytes`, `--max-bulk-body-bytes`) bounds both what is read
//! from the wire and what it decodes to: a kilobyte of zstd can describe a gigabyte of zeros. So a
//! compressed body is decoded as it arrives, and refused (413) as soon as its decoded size passes
//! the limit, without reading the rest. What the handlers hash and parse is the decoded body: a
//! retry compressed differently, or not at all, is the same request.

use std::io::{self, Write};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use axum::http::{HeaderMap, StatusCode};
use futures_util::StreamExt;
use zstd::stream::raw::{DParameter, InBuffer, Operation, OutBuffer};

use crate::error::ApiError;
use crate::state::AppState;

/// The codings a 415 lists in `Accept-Encoding`.
pub const ACCEPTED_CODINGS: &str = "gzip, zstd";

/// The largest zstd window a frame may ask for, as a power of two: 8 MiB, the most an HTTP zstd
/// encoder may use (RFC 9659). A frame cannot make the decoder allocate more than this.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Compressed bytes handed to the decoder at a time, so that the request's task can yield between
/// them (one frame from the wire may be hundreds of kilobytes).
const INPUT_PIECE_BYTES: usize = 16 * 1024;

/// Decoded bytes between two yields to the runtime: decoding runs on the request's own task, and
/// a 32 MiB body must not hold an async worker for its whole decoding.
const YIELD_EVERY_BYTES: usize = 1024 * 1024;

/// Decoded bytes produced per call into zstd.
const ZSTD_CHUNK_BYTES: usize = 32 * 1024;

/// A content coding plume decodes; a body without one (or `identity`) is read as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` (or `x-gzip`): RFC 1952; several members in a row are read as one body.
    Gzip,
    /// `zstd`: RFC 8878, windows up to 8 MiB; several frames in a row are read as one body.
    Zstd,
}

impl Coding {
    /// The coding named by the request's `Content-Encoding` fields: `None` when there is none or
    /// only `identity`; 415 for any other coding, and for two codings stacked.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let mut named = Vec::new();
        for value in headers.get_all(CONTENT_ENCODING) {
            let Ok(text) = value.to_str() else {
                return Err(unsupported("a Content-Encoding that is not ASCII"));
            };
            named.extend(
                text.split(',')
                    .map(|coding| coding.trim().to_ascii_lowercase())
                    .filter(|coding| !coding.is_empty() && coding != "identity"),
            );
        }
        match named.as_slice() {
            [] => Ok(None),
            [one] => match one.as_str() {
                "gzip" | "x-gzip" => Ok(Some(Self::Gzip)),
                "zstd" => Ok(Some(Self::Zstd)),
                other => Err(unsupported(&format!("Content-Encoding {other:?}"))),
            },
            several => Err(unsupported(&format!(
                "Content-Encoding {:?} (one coding stacked on another)",
                several.join(", ")
            ))),
        }
    }

    /// The coding's name, as in `Content-Encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

fn unsupported(what: &str) -> ApiError {
    ApiError::UnsupportedEncoding {
        message: format!(
            "{what} is not supported: send the body as it is, or compressed with one of gzip or zstd"
        ),
        accepted: ACCEPTED_CODINGS,
    }
}

/// 415 unless the body comes as it is (no `Content-Encoding`, or only `identity`): for the
/// endpoints that decode no coding, which would otherwise read a compressed body as text.
pub fn require_identity(headers: &HeaderMap) -> Result<(), ApiError> {
    match Coding::from_headers(headers) {
        Ok(None) => Ok(()),
        _ => Err(ApiError::UnsupportedEncoding {
            message: "this endpoint reads its body as it is: send it without a Content-Encoding \
                      (only the ingest endpoints take gzip or zstd)"
                .to_owned(),
            accepted: "identity",
        }),
    }
}

/// Why a compressed body was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Its decoded size passed the limit (decoding stopped there).
    #[error("the body is larger than {0} bytes once decompressed")]
    TooLarge(usize),
    /// It is not a complete, valid stream of its coding.
    #[error("the body is not valid {coding}: {detail}")]
    Corrupt {
        /// The coding it claimed.
        coding: &'static str,
        /// What is wrong, as the decoder says it.
        detail: String,
    },
}

impl From<DecodeError> for ApiError {
    fn from(error: DecodeError) -> Self {
        match error {
            DecodeError::TooLarge(limit) => Self::DecodedTooLarge(limit),
            DecodeError::Corrupt { coding, detail } => {
                Self::Malformed(format!("the request body is not valid {coding}: {detail}"))
            }
        }
    }
}

/// A streaming decoder whose output never grows past `limit` bytes.
#[derive(Debug)]
pub struct Decoder {
    coding: Coding,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Gzip(Box<flate2::write::MultiGzDecoder<Output>>),
    Zstd(Box<Zstd>),
}

impl Decoder {
    /// A decoder for `coding` whose output may hold `limit` bytes.
    pub fn new(coding: Coding, limit: usize) -> Self {
        let output = Output::new(limit);
        let inner = match coding {
            Coding::Gzip => Inner::Gzip(Box::new(flate2::write::MultiGzDecoder::new(output))),
            Coding::Zstd => Inner::Zstd(Box::new(Zstd::new(output))),
        };
        Self { coding, inner }
    }

    /// Decodes the next compressed bytes.
    pub fn write(&mut self, input: &[u8]) -> Result<(), DecodeError> {
        let coding = self.coding.name();
        match &mut self.inner {
            Inner::Gzip(decoder) => decoder
                .write_all(input)
                .map_err(|error| decoder.get_ref().error(coding, &error)),
            Inner::Zstd(decoder) => decoder.write(input),
        }
    }

    /// How many decoded bytes so far.
    pub fn decoded(&self) -> usize {
        match &self.inner {
            Inner::Gzip(decoder) => decoder.get_ref().bytes.len(),
            Inner::Zstd(decoder) => decoder.output.bytes.len(),
        }
    }

    /// The decoded body, once every compressed byte was written; an error if the stream stopped
    /// short of its end (a gzip member without its trailer, a zstd frame cut off, nothing at all).
    pub fn finish(self) -> Result<Vec<u8>, DecodeError> {
        let coding = self.coding.name();
        let mut output = match self.inner {
            Inner::Gzip(mut decoder) => {
                if decoder.header().is_none() {
                    return Err(corrupt(coding, &"the stream ends before its header does"));
                }
                match decoder.try_finish() {
                    Ok(()) => decoder.finish().map_err(|error| corrupt(coding, &error))?,
                    Err(error) => return Err(decoder.get_ref().error(coding, &error)),
                }
            }
            Inner::Zstd(decoder) => decoder.finish()?,
        };
        // Growth may have left up to twice the body reserved; the bulk budget counts the body.
        output.bytes.shrink_to_fit();
        Ok(output.bytes)
    }
}

/// Decodes `compressed` whole, into at most `limit` bytes.
pub fn decode(coding: Coding, compressed: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut decoder = Decoder::new(coding, limit);
    decoder.write(compressed)?;
    decoder.finish()
}

fn corrupt(coding: &'static str, error: &dyn std::fmt::Display) -> DecodeError {
    DecodeError::Corrupt {
        coding,
        detail: error.to_string(),
    }
}

/// The decoded body; a write that would take it past `limit` fails and marks it over.
#[derive(Debug)]
struct Output {
    bytes: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Output {
    fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::new(),
            limit,
            over: false,
        }
    }

    /// The decoding error `error` stands for: the limit, if the output refused a write.
    fn error(&self, coding: &'static str, error: &io::Error) -> DecodeError {
        if self.over {
            DecodeError::TooLarge(self.limit)
        } else {
            corrupt(coding, error)
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let wanted = self.bytes.len() + buf.len();
        if wanted > self.limit {
            self.over = true;
            return Err(io::Error::other("the decoded body passed its limit"));
        }
        if wanted > self.bytes.capacity() {
            // Doubling, as a Vec grows, but never reserving past the limit.
            let target = wanted.max(self.bytes.capacity() * 2).min(self.limit);
            self.bytes.reserve_exact(target - self.bytes.len());
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// zstd's streaming decoder, driven by hand: its frame boundaries tell a complete body from a cut
/// one.
struct Zstd {
    raw: zstd::stream::raw::Decoder<'static>,
    output: Output,
    chunk: Box<[u8]>,
    /// Whether the last frame was decoded to its end (and nothing of a next one has been seen).
    at_frame_end: bool,
    /// Set by the first decoding error: the decoder's state after one is not to be trusted.
    failed: Option<DecodeError>,
}

impl std::fmt::Debug for Zstd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zstd")
            .field("decoded", &self.output.bytes.len())
            .field("at_frame_end", &self.at_frame_end)
            .finish_non_exhaustive()
    }
}

impl Zstd {
    fn new(output: Output) -> Self {
        let mut raw = zstd::stream::raw::Decoder::new().expect("a zstd decoding context");
        raw.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
            .expect("a window limit within zstd's range");
        Self {
            raw,
            output,
            chunk: vec![0; ZSTD_CHUNK_BYTES].into_boxed_slice(),
            at_frame_end: false,
            failed: None,
        }
    }

    fn write(&mut self, input: &[u8]) -> Result<(), DecodeError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.decode(input);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    fn decode(&mut self, input: &[u8]) -> Result<(), DecodeError> {
        let length = input.len();
        let mut input = InBuffer::around(input);
        loop {
            let mut out = OutBuffer::around(&mut self.chunk[..]);
            let hint = self
                .raw
                .run(&mut input, &mut out)
                .map_err(|error| corrupt("zstd", &error))?;
            let produced = out.pos();
            // zstd answers 0 once a frame is decoded and flushed whole.
            self.at_frame_end = hint == 0;
            if produced > 0 {
                self.output
                    .write_all(&self.chunk[..produced])
                    .map_err(|error| self.output.error("zstd", &error))?;
            }
            // A full chunk may leave more output inside the decoder: ask again.
            if input.pos() == length && produced < self.chunk.len() {
                return Ok(());
            }
        }
    }

    fn finish(self) -> Result<Output, DecodeError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        if !self.at_frame_end {
            return Err(corrupt("zstd", &"the stream ends before its last frame does"));
        }
        Ok(self.output)
    }
}

/// Reads `request`'s body as its handler sees it: as sent when it has no coding (at most `limit`
/// bytes, the router's limit), else decoded, with at most `limit` bytes on the wire and at most
/// `limit` once decoded (413 either way, reading no further). A body that is not a whole, valid
/// stream of its coding is 400.
pub async fn read_body(
    request: Request,
    state: &AppState,
    coding: Option<Coding>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let Some(coding) = coding else {
        return match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(bytes),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge(limit))
            }
            Err(rejection) => Err(read_failed(rejection)),
        };
    };
    if declared_length(request.headers()).is_some_and(|length| length > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    read_decoded(request.into_body(), coding, limit)
        .await
        .map(Bytes::from)
}

/// The body's `Content-Length`, if it declares one.
pub fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
}

async fn read_decoded(body: Body, coding: Coding, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut decoder = Decoder::new(coding, limit);
    let mut frames = body.into_data_stream();
    let mut received = 0usize;
    let mut decoded_at_yield = 0;
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(read_failed)?;
        received += frame.len();
        if received > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        for piece in frame.chunks(INPUT_PIECE_BYTES) {
            decoder.write(piece)?;
            if decoder.decoded() - decoded_at_yield >= YIELD_EVERY_BYTES {
                decoded_at_yield = decoder.decoded();
                tokio::task::yield_now().await;
            }
        }
    }
    Ok(decoder.finish()?)
}

fn read_failed(error: impl std::fmt::Display) -> ApiError {
    ApiError::Malformed(format!("could not read the request body: {error}"))
}

#[cfg(test)]
#[path = "encoding_tests.rs"]
mod tests;
