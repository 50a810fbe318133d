//! The Kafka TCP listener: accepts connections, frames requests, answers them in order.
//!
//! Each connection has a reader task that reads a size-prefixed frame and handles it before
//! reading the next, so requests of one connection take effect in the order they were sent
//! (idempotent producers rely on that), and a writer task that sends the responses in the same
//! order. A Produce is handled up to the point where its batches are queued on the log; its
//! wait for durability happens in the writer's queue, so a client with several produce
//! requests in flight gets them group-committed together. Memory per connection is bounded by
//! the frame limit, and a frame's buffer grows only as its bytes actually arrive, so a client
//! that announces 100 MiB and sends 10 bytes costs 64 KiB, not 100 MiB.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::handler::{Handler, Reply};
use crate::KafkaContext;

/// Requests accepted on one connection whose responses are not yet written. Bounds the
/// memory a pipelining client can pin (their payloads are already handed to the log).
const REPLIES_IN_FLIGHT_MAX: usize = 32;

/// Largest chunk a frame buffer grows by at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Accepts connections until `shutdown` is cancelled, then waits (bounded) for the
/// connections in flight to finish their current request.
pub async fn serve(listener: TcpListener, ctx: Arc<KafkaContext>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(ctx.config.connections_max));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, limit = ctx.config.connections_max, "connection limit reached; closing new connection");
                    drop(stream);
                    continue;
                };
                let ctx = ctx.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    ctx.metrics.connections_active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Err(e) = serve_connection(stream, peer, ctx.clone(), shutdown).await {
                        tracing::debug!(%peer, error = %e, "kafka connection closed");
                    }
                    ctx.metrics.connections_active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    drop(permit);
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("kafka connections did not finish within 10 s of shutdown");
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("request frame of {size_bytes} bytes is invalid (limit {limit_bytes})")]
    FrameSize { size_bytes: i64, limit_bytes: usize },
    #[error("malformed request: {0}")]
    Malformed(String),
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<KafkaContext>,
    shutdown: CancellationToken,
) -> Result<(), ConnectionError> {
    stream.set_nodelay(true)?;
    let (mut reader, writer) = stream.into_split();
    let (replies, pending) = tokio::sync::mpsc::channel(REPLIES_IN_FLIGHT_MAX);
    let writer = tokio::spawn(write_replies(writer, pending));
    let mut handler = Handler::new(ctx.clone(), peer);
    let read_result = loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader, ctx.config.request_size_bytes_max) => frame,
            _ = shutdown.cancelled() => break Ok(()),
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let reply = match handler.handle(frame).await {
            Ok(reply) => reply,
            Err(e) => break Err(e),
        };
        if replies.send(reply).await.is_err() {
            break Ok(()); // the writer failed; its error is reported below
        }
    };
    // Answer what was already accepted (in-flight produces finish) before closing.
    drop(replies);
    let write_result = writer
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    read_result?;
    write_result.map_err(ConnectionError::Io)
}

/// Writes replies in request order; a produce's reply is awaited in turn, so later requests
/// keep being read and queued while it waits for durability. Flushes when nothing is queued.
async fn write_replies(
    writer: tokio::net::tcp::OwnedWriteHalf,
    mut pending: tokio::sync::mpsc::Receiver<Reply>,
) -> std::io::Result<()> {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(reply) = pending.recv().await {
        let response = match reply {
            Reply::Now(r) => r,
            Reply::Later(f) => f.await,
        };
        if let Some(response) = response {
            writer.write_all(&response).await?;
        }
        if pending.is_empty() {
            writer.flush().await?;
        }
    }
    writer.flush().await
}

/// Reads one size-prefixed frame; `Ok(None)` on a clean end of stream between frames.
async fn read_frame(
    reader: &mut (impl AsyncReadExt + Unpin),
    size_bytes_max: usize,
) -> Result<Option<Bytes>, ConnectionError> {
    let mut size_raw = [0u8; 4];
    match reader.read_exact(&mut size_raw).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(size_raw);
    if size < 8 || size as usize > size_bytes_max {
        // 8 bytes is the smallest possible request header (api key, version, correlation id).
        return Err(ConnectionError::FrameSize {
            size_bytes: i64::from(size),
            limit_bytes: size_bytes_max,
        });
    }
    let size = size as usize;
    let mut buf = BytesMut::with_capacity(size.min(READ_CHUNK_BYTES));
    while buf.len() < size {
        let want = (size - buf.len()).min(READ_CHUNK_BYTES);
        buf.reserve(want);
        let n = (&mut *reader).take(want as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(ConnectionError::Io(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
    }
    Ok(Some(buf.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_and_negative_frames_are_refused() {
        let mut input: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut input, 1024).await,
            Err(ConnectionError::FrameSize { .. })
        ));
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xfe];
        assert!(matches!(
            read_frame(&mut input, 1024).await,
            Err(ConnectionError::FrameSize { .. })
        ));
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error_and_clean_eof_is_not() {
        let mut input: &[u8] = &[0, 0, 0, 20, 1, 2, 3];
        assert!(read_frame(&mut input, 1024).await.is_err());
        let mut input: &[u8] = &[];
        assert!(read_frame(&mut input, 1024).await.unwrap().is_none());
        let mut input: &[u8] = &[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            read_frame(&mut input, 1024).await.unwrap().unwrap().len(),
            8
        );
    }
}
