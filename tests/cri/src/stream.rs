//! A client for containerd's CRI streaming server (the URLs Exec, Attach and PortForward
//! return), over WebSocket: each binary message is one channel byte and its data. Exec and
//! Attach use `v4.channel.k8s.io` (0 stdin, 1 stdout, 2 stderr, 3 status as JSON, 4 resize);
//! PortForward a data and an error channel per port, each opened by the port number (u16,
//! little endian). The server listens on the test namespace's loopback, so the TCP connection
//! is made from inside that namespace.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STATUS: u8 = 3;
pub const RESIZE: u8 = 4;

pub struct Channels {
    ws: WebSocketStream<tokio::net::TcpStream>,
    pub protocol: String,
}

impl Channels {
    /// Opens `url` (as returned by the CRI), offering the sub-protocols `protocols`.
    pub async fn open(netns: &Path, url: &str, protocols: &str) -> Result<Channels> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("streaming URL {url:?} is not http://"))?;
        let host = rest.split('/').next().unwrap_or_default();
        let addr: SocketAddr = host
            .parse()
            .with_context(|| format!("streaming server address {host:?}"))?;
        let tcp = crate::netns::connect(netns, addr)?;
        tcp.set_nonblocking(true)?;
        let tcp = tokio::net::TcpStream::from_std(tcp)?;
        let mut request = format!("ws://{rest}").into_client_request()?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocols.parse()?);
        let (ws, response) = tokio_tungstenite::client_async(request, tcp)
            .await
            .with_context(|| format!("WebSocket upgrade of {url}"))?;
        let protocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(Channels { ws, protocol })
    }

    pub async fn send(&mut self, channel: u8, data: &[u8]) -> Result<()> {
        let mut frame = vec![channel];
        frame.extend_from_slice(data);
        self.ws.send(Message::Binary(frame.into())).await?;
        Ok(())
    }

    /// The terminal size, as `kubectl exec -t` sends it.
    pub async fn resize(&mut self, width: u16, height: u16) -> Result<()> {
        let size = format!("{{\"Width\":{width},\"Height\":{height}}}");
        self.send(RESIZE, size.as_bytes()).await
    }

    /// The next data message `(channel, data)`; None once the server closed the connection.
    pub async fn next(&mut self, deadline: Instant) -> Result<Option<(u8, Vec<u8>)>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => bail!("no message from the streaming server in time"),
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return Ok(None),
                Ok(Some(Err(e))) => {
                    use tokio_tungstenite::tungstenite::Error;
                    if matches!(e, Error::ConnectionClosed | Error::AlreadyClosed) {
                        return Ok(None);
                    }
                    // The server may drop the TCP connection without a close frame.
                    if let Error::Io(_) | Error::Protocol(_) = e {
                        return Ok(None);
                    }
                    return Err(e.into());
                }
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Binary(b) if !b.is_empty() => return Ok(Some((b[0], b[1..].to_vec()))),
                Message::Text(t) if !t.is_empty() => {
                    let b = t.as_bytes();
                    return Ok(Some((b[0], b[1..].to_vec())));
                }
                _ => continue,
            }
        }
    }

    /// Reads until `channel`'s data so far contains `needle`; returns all of it.
    pub async fn read_until(
        &mut self,
        channel: u8,
        needle: &str,
        limit: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains(needle) {
            match self.next(deadline).await {
                Ok(Some((c, data))) if c == channel => seen.extend(data),
                Ok(Some(_)) => {}
                Ok(None) => bail!(
                    "the stream closed before {needle:?}; channel {channel} had {:?}",
                    String::from_utf8_lossy(&seen)
                ),
                Err(e) => bail!(
                    "{e}: waiting for {needle:?}; channel {channel} had {:?}",
                    String::from_utf8_lossy(&seen)
                ),
            }
        }
        Ok(String::from_utf8_lossy(&seen).into_owned())
    }

    /// Everything until the server closes: `(data per channel 0..=4)`.
    pub async fn read_to_close(&mut self, limit: Duration) -> Result<[Vec<u8>; 5]> {
        let deadline = Instant::now() + limit;
        let mut out: [Vec<u8>; 5] = Default::default();
        while let Some((c, data)) = self.next(deadline).await? {
            ensure!(c < 5, "data on unknown channel {c}");
            out[c as usize].extend(data);
        }
        Ok(out)
    }

    pub async fn close(mut self) -> Result<()> {
        self.ws.close(None).await?;
        Ok(())
    }
}
