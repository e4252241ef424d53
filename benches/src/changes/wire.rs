//! The waiters' HTTP/1.1: one keep-alive connection each, spoken to directly, every request with
//! the bench's bearer token. The client shares the machine's two cores with the servers, so its
//! work per answer is kept to reading bytes; what the answers say is parsed after the round's
//! timing.

use anyhow::{bail, ensure, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use plume_bench::credentials::BearerToken;

/// One connection to a server.
#[derive(Debug)]
pub(crate) struct Connection {
    stream: TcpStream,
    host: String,
    token: BearerToken,
    buffer: Vec<u8>,
}

/// A response: its status, its body, and when the body had been read.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    pub(crate) arrived: Instant,
}

impl Connection {
    /// Connects to `address` (`http://host:port`), to send `token` with every request.
    pub(crate) async fn open(address: &str, token: &BearerToken) -> anyhow::Result<Self> {
        let host = address
            .strip_prefix("http://")
            .with_context(|| format!("{address} is not an http:// address"))?
            .to_owned();
        let stream = TcpStream::connect(&host).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            host,
            token: token.clone(),
            buffer: Vec::with_capacity(4096),
        })
    }

    /// `GET path_and_query`; the answer must carry a `Content-Length` (plume's do).
    pub(crate) async fn get(&mut self, path_and_query: &str) -> anyhow::Result<Response> {
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\n{}\r\n",
            self.host,
            self.token.header_line()
        );
        self.stream.write_all(request.as_bytes()).await?;
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end]).context("a response head is not UTF-8")?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .context("a response has no status")?;
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .context("a response has no Content-Length")?;
        while self.buffer.len() < head_end + length {
            self.fill().await?;
        }
        let arrived = Instant::now();
        let body = self.buffer[head_end..head_end + length].to_vec();
        self.buffer.drain(..head_end + length);
        Ok(Response {
            status,
            body,
            arrived,
        })
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let read = self.stream.read(&mut chunk).await?;
        if read == 0 {
            bail!("the server closed the connection");
        }
        self.buffer.extend_from_slice(&chunk[..read]);
        ensure!(self.buffer.len() < 1 << 20, "a response over 1 MB");
        Ok(())
    }
}
