//! A TCP proxy between plume and PostgreSQL that the suite can silence: while silent, every
//! connection stays open but no byte passes either way, and new connections are accepted but not
//! answered, as when a network drops packets; once healed, the bytes held back flow again (as TCP
//! retransmits them) and new connections reach the server.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

/// A running proxy; stops (closing every connection) when dropped.
#[derive(Debug)]
pub(crate) struct Proxy {
    /// The loopback port it listens on.
    pub(crate) port: u16,
    silent: watch::Sender<bool>,
    _stop: DropGuard,
}

impl Proxy {
    /// Starts forwarding a free loopback port to `upstream`.
    pub(crate) async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (silent, watch) = watch::channel(false);
        let stop = CancellationToken::new();
        let accepting = stop.clone();
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                    () = accepting.cancelled() => return,
                };
                tokio::spawn(connection(client, upstream, watch.clone(), accepting.clone()));
            }
        });
        Ok(Self {
            port,
            silent,
            _stop: stop.drop_guard(),
        })
    }

    /// Stops passing bytes, keeping every connection open.
    pub(crate) fn silence(&self) {
        self.silent.send_replace(true);
    }

    /// Passes bytes again.
    pub(crate) fn heal(&self) {
        self.silent.send_replace(false);
    }
}

/// Carries one client connection, holding it (unanswered) while the proxy is silent.
async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    silent: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    if !passable(&mut silent.clone(), &stop).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pipe(client_read, server_write, silent.clone()) => {}
        () = pipe(server_read, client_write, silent) => {}
        () = stop.cancelled() => {}
    }
}

/// Waits until bytes may pass; `false` when the proxy stops first.
async fn passable(silent: &mut watch::Receiver<bool>, stop: &CancellationToken) -> bool {
    tokio::select! {
        result = silent.wait_for(|silent| !silent) => result.is_ok(),
        () = stop.cancelled() => false,
    }
}

/// Copies one direction, one read at a time: a chunk read while the proxy is silent is held until
/// it heals, and nothing more is read meanwhile, so the sender's TCP window fills as it would.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut silent: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if silent.wait_for(|silent| !silent).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
