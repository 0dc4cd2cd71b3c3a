//! Idle timeouts for the two waits hyper leaves unbounded: a request body that stops arriving,
//! and a response the client stops reading.
//!
//! Both measure one continuous wait, not a whole transfer: a timer starts when the body has no
//! data ready for a reader that wants some (or the socket takes no more bytes), and any progress
//! stops it. A slow but moving upload on a bad mobile link goes on; a client that sends one byte
//! and goes quiet, or requests a large file and never reads it, loses its connection after the
//! timeout instead of holding a task, a socket and an upload slot forever. A handler that reads
//! its body late is not penalised: the timer only runs while something waits for data.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

use crate::error::BodyStalled;

/// A timer that runs while an operation is pending and stops when it makes progress.
struct Watch {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Watch {
    fn new(timeout: Duration) -> Self {
        Watch {
            timeout,
            sleep: None,
            armed: false,
        }
    }

    /// Passes `poll` through, starting the timer on `Pending` and stopping it on `Ready`.
    /// `Ready(None)` means the wait outlasted the timeout.
    fn guard<T>(&mut self, cx: &mut Context<'_>, poll: Poll<T>) -> Poll<Option<T>> {
        if let Poll::Ready(value) = poll {
            self.armed = false;
            return Poll::Ready(Some(value));
        }
        let timeout = self.timeout;
        // Made on the first wait only: most bodies and connections never wait.
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if !self.armed {
            sleep.as_mut().reset(Instant::now() + timeout);
            self.armed = true;
        }
        ready!(sleep.as_mut().poll(cx));
        self.armed = false;
        Poll::Ready(None)
    }
}

/// A request body that fails with [`BodyStalled`] when its client goes quiet.
pub struct IdleBody<B> {
    inner: B,
    watch: Watch,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        IdleBody {
            inner,
            watch: Watch::new(timeout),
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match ready!(this.watch.guard(cx, polled)) {
            Some(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            None => Poll::Ready(Some(Err(Box::new(BodyStalled)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose writes fail with `TimedOut` once the peer has taken no bytes for the
/// timeout. Reads pass through untouched: hyper bounds the header read itself, [`IdleBody`]
/// the body, and a long-poll legitimately reads nothing for a while.
pub struct WriteTimeout<IO> {
    inner: IO,
    watch: Watch,
}

impl<IO> WriteTimeout<IO> {
    pub fn new(inner: IO, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            watch: Watch::new(timeout),
        }
    }

    fn guard<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match ready!(self.watch.guard(cx, poll)) {
            Some(result) => Poll::Ready(result),
            None => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within the idle timeout",
            ))),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteTimeout<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;

    type Sender = mpsc::Sender<Result<Frame<Bytes>, io::Error>>;

    fn channel_body(timeout: Duration) -> (Sender, impl Body<Data = Bytes, Error = BoxError>) {
        let (tx, rx) = mpsc::channel(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        (
            tx,
            IdleBody::new(StreamBody::new(Box::pin(stream)), timeout),
        )
    }

    #[tokio::test]
    async fn a_body_that_sends_nothing_stalls() {
        let (_tx, mut body) = channel_body(Duration::from_millis(50));
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(crate::error::body_stalled(&*err), "{err}");
    }

    #[tokio::test]
    async fn progress_restarts_the_wait() {
        // 15 pieces 200 ms apart: 3 s in all, longer than the 2 s timeout, each wait shorter.
        let (tx, mut body) = channel_body(Duration::from_secs(2));
        tokio::spawn(async move {
            for _ in 0..15 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await;
            }
        });
        let mut pieces = 0;
        while let Some(frame) = body.frame().await {
            assert_eq!(frame.unwrap().into_data().unwrap(), "x");
            pieces += 1;
        }
        assert_eq!(pieces, 15);
    }
}
