//! Kept-alive connections to one target. An HTTP/1.1 connection is *driven by whoever holds
//! it*: the request's task polls it while the request goes out and the answer comes back, and
//! the answer's body (`UpstreamBody`) polls it until the last byte, then puts it back here.
//! No task of its own, no channel hop between the request and its connection (the way
//! pingora keeps a connection with the request that uses it). An idle connection is checked
//! on the way out: one poll notices a target that closed it meanwhile. HTTP/2 connections,
//! which many requests share at once, run in a task of their own as usual.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;

use super::body::EngineBody;
use super::connect::Stream;
use crate::server::lanes;

/// The HTTP/1.1 half that sends requests.
pub(super) type H1Sender = http1::SendRequest<EngineBody>;
/// The HTTP/1.1 connection state machine (reads, writes, keep-alive).
pub(super) type H1Driver = http1::Connection<TokioIo<Stream>, EngineBody>;
/// A shared HTTP/2 connection's sender.
pub(super) type H2Sender = http2::SendRequest<EngineBody>;

/// Idle HTTP/1.1 connections kept per target at most: enough for the concurrency an engine
/// brings, few enough that a burst does not leave hundreds of sockets open.
const MAX_IDLE: usize = 256;
/// How often the reaper looks for idle connections to close.
const REAP_EVERY: Duration = Duration::from_secs(15);

/// An HTTP/1.1 connection with the state machine that drives it.
pub(super) struct Conn {
    /// Sends requests.
    pub sender: H1Sender,
    /// Drives the connection; polled by the holder.
    driver: H1Driver,
    /// The driver has finished (the connection is closed).
    done: bool,
}

impl Conn {
    /// A connection from hyper's handshake, boxed: the state machine holds its buffers
    /// inline, and a connection moves from request to body to pool many times.
    pub(super) fn new(sender: H1Sender, driver: H1Driver) -> Box<Conn> {
        Box::new(Conn {
            sender,
            driver,
            done: false,
        })
    }

    /// Lets the connection make progress (write the request, read the answer, notice a
    /// close); `false` once it is closed.
    pub(super) fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.done {
            if let Poll::Ready(result) = Pin::new(&mut self.driver).poll(cx) {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "upstream connection ended with an error");
                }
                self.done = true;
            }
        }
        !self.done
    }

    /// Whether the connection can take another request now (after one poll, so that a close
    /// by the target that already arrived is noticed).
    fn is_reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.drive(&mut cx) && self.sender.is_ready()
    }
}

/// An idle connection and since when.
struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// The kept-alive connections of one target.
pub(super) struct Pool {
    /// Idle HTTP/1.1 connections per connection lane (see `server::lanes`), most recently
    /// used last: a connection is registered with the reactor of the lane that opened it, so
    /// it serves that lane's requests only (another lane would get its events through a
    /// cross-thread wake-up every time).
    idle: Box<[Mutex<Vec<Idle>>]>,
    /// The HTTP/2 connection, when the target chose HTTP/2 (read without a lock by every
    /// request, most of them to HTTP/1.1 targets that never set it).
    h2: ArcSwapOption<H2Sender>,
    /// How long an idle connection is kept.
    idle_timeout: Duration,
    /// Whether the reaper task has been started (lazily, from within the runtime).
    reaper: std::sync::atomic::AtomicBool,
}

impl Pool {
    /// An empty pool keeping idle connections for `idle_timeout`, on `lanes` lanes.
    pub(super) fn new(idle_timeout: Duration, lanes: usize) -> Pool {
        Pool {
            idle: (0..lanes.max(1)).map(|_| Mutex::default()).collect(),
            h2: ArcSwapOption::empty(),
            idle_timeout,
            reaper: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The idle connections of the calling thread's lane.
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle[lanes::current() % self.idle.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is still open and ready, if any.
    pub(super) fn checkout(&self) -> Option<Box<Conn>> {
        let now = Instant::now();
        let mut idle = self.idle();
        while let Some(Idle { mut conn, since }) = idle.pop() {
            if now.duration_since(since) < self.idle_timeout && conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection whose exchange ended cleanly for the next request.
    pub(super) fn checkin(&self, conn: Box<Conn>) {
        if conn.done {
            return;
        }
        let mut idle = self.idle();
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// The shared HTTP/2 connection, if one is open.
    pub(super) fn h2(&self) -> Option<H2Sender> {
        let current = self.h2.load();
        let sender = current.as_deref()?;
        if sender.is_closed() {
            // Forget it, unless another request has already put a new one in its place.
            self.h2.compare_and_swap(&*current, None);
            return None;
        }
        Some(sender.clone())
    }

    /// Keeps an HTTP/2 connection for the requests that follow.
    pub(super) fn set_h2(&self, sender: H2Sender) {
        self.h2.store(Some(Arc::new(sender)));
    }

    /// Starts, once, a task that closes connections idle past the timeout or closed by the
    /// target, so that a target without traffic keeps no sockets open; it ends with the pool.
    pub(super) fn start_reaper(self: &Arc<Self>) {
        if self.reaper.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(reap(pool));
    }

    /// Closes idle connections past the timeout or closed by the target.
    fn reap(&self) {
        let now = Instant::now();
        for lane in &self.idle {
            lane.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain_mut(|idle| {
                    now.duration_since(idle.since) < self.idle_timeout && idle.conn.is_reusable()
                });
        }
    }
}

/// The reaper: every `REAP_EVERY` while the pool lives.
async fn reap(pool: Weak<Pool>) {
    let mut every = tokio::time::interval(REAP_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.reap(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::body::Body;
    use hyper::{Request, Response};

    use super::*;

    /// A loopback HTTP/1.1 server answering 200; counts the connections it accepted.
    async fn server(close_after_each: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(!close_after_each)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    async fn connect(addr: std::net::SocketAddr) -> Box<Conn> {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, driver) = http1::handshake(TokioIo::new(Stream::Left(tcp)))
            .await
            .unwrap();
        Conn::new(sender, driver)
    }

    /// Sends one GET on `conn`, driving it in this task, and reads the answer whole.
    async fn exchange(mut conn: Box<Conn>) -> Box<Conn> {
        let req = Request::get("/")
            .header("host", "test")
            .body(EngineBody::read(Bytes::new()))
            .unwrap();
        let mut response = Box::pin(conn.sender.try_send_request(req));
        let response = std::future::poll_fn(|cx| {
            conn.drive(cx);
            response.as_mut().poll(cx)
        })
        .await
        .unwrap();
        let mut body = response.into_body();
        while std::future::poll_fn(|cx| {
            conn.drive(cx);
            Pin::new(&mut body).poll_frame(cx)
        })
        .await
        .is_some()
        {}
        conn
    }

    #[tokio::test]
    async fn a_connection_driven_by_its_holder_is_reused() {
        let (addr, accepted) = server(false).await;
        let pool = Pool::new(Duration::from_secs(90), 1);
        let conn = exchange(connect(addr).await).await;
        pool.checkin(conn);
        let again = pool.checkout().expect("the kept connection");
        pool.checkin(exchange(again).await);
        assert!(pool.checkout().is_some());
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for both"
        );
    }

    #[tokio::test]
    async fn a_connection_the_target_closed_is_not_checked_out() {
        let (addr, _) = server(true).await;
        let pool = Pool::new(Duration::from_secs(90), 1);
        let conn = exchange(connect(addr).await).await;
        pool.checkin(conn);
        // The target closes after its answer; give the close a moment to arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.checkout().is_none());
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let (addr, _) = server(false).await;
        let pool = Pool::new(Duration::from_millis(20), 1);
        pool.checkin(exchange(connect(addr).await).await);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(pool.checkout().is_none());
        pool.checkin(exchange(connect(addr).await).await);
        tokio::time::sleep(Duration::from_millis(40)).await;
        pool.reap();
        assert!(pool.idle().is_empty(), "the reaper closes them too");
    }

    /// Runs `work` on the next lane in turn; returns the lane it ran on and its result.
    async fn on_next_lane<T: Send + 'static>(
        lanes: &crate::server::Lanes,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> (usize, T) {
        let (done, result) = tokio::sync::oneshot::channel();
        lanes.spawn(async move {
            let _ = done.send((crate::server::lanes::current(), work()));
        });
        result.await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_idle_connection_serves_only_the_lane_that_kept_it() {
        let (addr, _) = server(false).await;
        let lanes = crate::server::Lanes::start(2).unwrap();
        let pool = Arc::new(Pool::new(Duration::from_secs(90), lanes.count()));
        let conn = exchange(connect(addr).await).await;
        let keeper = pool.clone();
        let (lane, ()) = on_next_lane(&lanes, move || keeper.checkin(conn)).await;
        assert_eq!(lane, 0);
        let other = pool.clone();
        let (lane, found) = on_next_lane(&lanes, move || other.checkout().is_some()).await;
        assert_eq!(lane, 1);
        assert!(!found, "another lane's idle connection is not handed out");
        let same = pool.clone();
        let (lane, found) = on_next_lane(&lanes, move || same.checkout().is_some()).await;
        assert_eq!(lane, 0);
        assert!(found, "the lane that kept it gets it back");
        lanes.stop();
    }
}
