//! [`Endpoint`]: the listener, the dialer, the connection registry and the [`Events`] it reports.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, Place};
use crate::config::Config;
use crate::conn::{AbortOnDrop, ConnParams, ConnShared, MarkDone, Timers, run_reader, run_writer};
use crate::error::ConnectError;
use crate::key::PeerId;
use crate::noise::{Session, handshake};
use crate::proto::Hello;
use crate::stream::{Connection, Stream};

/// How long [`Endpoint::shutdown`] waits for its tasks before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Something that happened on an endpoint.
pub enum Event<M> {
    /// A connection (inbound or outbound) finished its handshake and hello.
    Connected(Connection<M>),
    /// A connection closed; `reason` says why.
    Disconnected {
        /// The closed connection.
        conn: Connection<M>,
        /// Why it closed.
        reason: String,
    },
    /// The peer opened a stream; read its first message with [`Stream::recv`].
    Stream {
        /// The connection it arrived on.
        conn: Connection<M>,
        /// The new stream.
        stream: Stream<M>,
    },
}

impl<M> fmt::Debug for Event<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Connected(c) => f.debug_tuple("Connected").field(c).finish(),
            Event::Disconnected { conn, reason } => f
                .debug_struct("Disconnected")
                .field("conn", conn)
                .field("reason", reason)
                .finish(),
            Event::Stream { conn, stream } => f
                .debug_struct("Stream")
                .field("conn", conn)
                .field("stream", stream)
                .finish(),
        }
    }
}

/// The events of one endpoint, in order. Never blocks the transport: events
/// queue until read (their number is bounded by the connection and stream limits).
pub struct Events<M> {
    rx: mpsc::UnboundedReceiver<Event<M>>,
}

impl<M> std::fmt::Debug for Events<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl<M> std::fmt::Debug for Endpoint<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("peer_id", &self.inner.config.key.peer_id())
            .field("local_addr", &self.inner.local_addr)
            .field("shut_down", &self.inner.shutdown.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl<M> Events<M> {
    /// The next event; `None` after [`Endpoint::shutdown`].
    pub async fn recv(&mut self) -> Option<Event<M>> {
        self.rx.recv().await
    }
}

/// A transport endpoint: accepts (if bound) and dials connections. Cheap to clone.
pub struct Endpoint<M> {
    inner: Arc<Inner<M>>,
}

impl<M> Clone for Endpoint<M> {
    fn clone(&self) -> Self {
        Endpoint {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<M> {
    config: Config,
    local_addr: Option<SocketAddr>,
    events: Mutex<Option<mpsc::UnboundedSender<Event<M>>>>,
    conns: Mutex<HashMap<u64, Connection<M>>>,
    tasks: Mutex<JoinSet<()>>,
    slots: Arc<Semaphore>,
    /// Inbound handshakes in progress; separate from `slots` on purpose.
    pending: Arc<Admission>,
    shutdown: CancellationToken,
    _m: PhantomData<fn() -> M>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<M: Serialize + DeserializeOwned + Send + 'static> Endpoint<M> {
    /// Listens on `addr` (port 0 allowed) and accepts connections; returns the event stream.
    pub async fn bind(
        addr: SocketAddr,
        config: Config,
    ) -> Result<(Endpoint<M>, Events<M>), std::io::Error> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let mut config = config;
        // An advertised port 0 ("any port") means the port actually bound.
        if let Some(advertised) = config.advertise.as_mut().filter(|a| a.port() == 0) {
            advertised.set_port(local.port());
        }
        let (endpoint, events) = Self::make(config, Some(local));
        let weak = Arc::downgrade(&endpoint.inner);
        let token = endpoint.inner.shutdown.clone();
        endpoint.inner.spawn(accept_loop(listener, weak, token));
        Ok((endpoint, events))
    }

    /// An endpoint without a listener (a CLI client); it can only dial.
    pub fn client(config: Config) -> (Endpoint<M>, Events<M>) {
        Self::make(config, None)
    }

    fn make(config: Config, local_addr: Option<SocketAddr>) -> (Endpoint<M>, Events<M>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Inner {
            slots: Arc::new(Semaphore::new(config.max_connections)),
            pending: Admission::new(config.max_pending_handshakes),
            config,
            local_addr,
            events: Mutex::new(Some(tx)),
            conns: Mutex::new(HashMap::new()),
            tasks: Mutex::new(JoinSet::new()),
            shutdown: CancellationToken::new(),
            _m: PhantomData,
        };
        (
            Endpoint {
                inner: Arc::new(inner),
            },
            Events { rx },
        )
    }

    /// The bound address, if listening.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// This endpoint's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.config.key.peer_id()
    }

    /// Dials `addr`: TCP, handshake and hello, all bounded by the handshake
    /// timeout. The connection is also announced as [`Event::Connected`].
    pub async fn connect(&self, addr: SocketAddr) -> Result<Connection<M>, ConnectError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ConnectError::ShutDown);
        }
        let slot = self
            .inner
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ConnectError::Limit)?;
        let config = &self.inner.config;
        let dial = async {
            let tcp = TcpStream::connect(addr).await?;
            let mut session = handshake(tcp, config, true).await?;
            let hello = session.exchange_hello(config, true).await?;
            Ok::<_, ConnectError>((session, hello))
        };
        let (session, hello) = timeout(config.handshake_timeout, dial)
            .await
            .map_err(|_| ConnectError::Timeout)??;
        self.start(session, hello, true, slot)
    }

    /// Every open connection.
    pub fn connections(&self) -> Vec<Connection<M>> {
        lock(&self.inner.conns).values().cloned().collect()
    }

    /// Stops accepting, closes every connection, and waits (boundedly) for
    /// every task of this endpoint to end. [`Events::recv`] then returns the
    /// remaining events and `None`.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        for conn in self.connections() {
            conn.close("the peer is shutting down");
        }
        let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        let drained = timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        lock(&self.inner.events).take();
    }

    async fn accept_one(self, tcp: TcpStream, addr: SocketAddr, place: Place) {
        let config = &self.inner.config;
        let accept = async {
            let mut session = handshake(tcp, config, false).await?;
            // Only a peer that proved the secret takes a connection slot; one
            // that finds none is told so instead of getting a hello.
            let Ok(slot) = self.inner.slots.clone().try_acquire_owned() else {
                session.send_close("connection limit reached").await;
                return Err(ConnectError::Limit);
            };
            let hello = session.exchange_hello(config, false).await?;
            Ok::<_, ConnectError>((session, hello, slot))
        };
        let result = tokio::select! {
            _ = place.evicted.cancelled() => {
                tracing::debug!(%addr, "inbound handshake evicted by a newer connection");
                return;
            }
            result = timeout(config.handshake_timeout, accept) => result,
        };
        drop(place);
        match result {
            Err(_) => tracing::warn!(%addr, "inbound handshake timed out"),
            Ok(Err(e)) => tracing::warn!(%addr, "inbound connection refused: {e}"),
            Ok(Ok((session, hello, slot))) => {
                if let Err(e) = self.start(session, hello, false, slot) {
                    tracing::debug!(%addr, "inbound connection dropped: {e}");
                }
            }
        }
    }

    /// Registers an authenticated connection, announces it and starts its tasks.
    fn start(
        &self,
        session: Session,
        hello: Hello,
        outbound: bool,
        slot: OwnedSemaphorePermit,
    ) -> Result<Connection<M>, ConnectError> {
        let config = &self.inner.config;
        let (shared, rx) = ConnShared::new(ConnParams {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            peer_id: session.remote_id,
            role: hello.role,
            remote_addr: session.remote_addr,
            listen_addr: hello.listen_addr,
            outbound,
            request_timeout: config.request_timeout,
            local_window: config.effective_window(),
            peer_window: hello.stream_window,
            local_max_streams: config.effective_max_streams(),
            peer_max_streams: hello.max_streams,
        });
        let conn = Connection::new(shared.clone());
        let done = MarkDone(shared.clone());
        let Session {
            reader,
            writer,
            sealer,
            opener,
            ..
        } = session;
        let writer = AbortOnDrop(tokio::spawn(run_writer(
            shared.clone(),
            writer,
            rx,
            sealer,
            config.idle_timeout,
        )));
        let timers = Timers {
            heartbeat: config.heartbeat_interval,
            idle: config.idle_timeout,
        };
        let weak = Arc::downgrade(&self.inner);
        let task_conn = conn.clone();
        let id = shared.id;
        let task = async move {
            let _slot = slot;
            let _done = done;
            let on_stream = |new| {
                let stream = Stream::new(shared.clone(), new);
                if let Some(inner) = weak.upgrade() {
                    inner.emit(Event::Stream {
                        conn: task_conn.clone(),
                        stream,
                    });
                }
            };
            let reason = run_reader(&shared, reader, opener, writer, timers, on_stream).await;
            tracing::debug!(peer = %shared.peer_id.short(), "connection closed: {reason}");
            if let Some(inner) = weak.upgrade() {
                lock(&inner.conns).remove(&id);
                inner.emit(Event::Disconnected {
                    conn: task_conn,
                    reason,
                });
            }
        };
        // Register and announce before the reader runs, so `Connected` precedes its streams.
        lock(&self.inner.conns).insert(id, conn.clone());
        self.inner.emit(Event::Connected(conn.clone()));
        if !self.inner.spawn(task) {
            lock(&self.inner.conns).remove(&id);
            return Err(ConnectError::ShutDown);
        }
        Ok(conn)
    }
}

impl<M> Inner<M> {
    /// Spawns a task owned by the endpoint; refuses after shutdown began.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> bool {
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        if self.shutdown.is_cancelled() {
            return false;
        }
        tasks.spawn(task);
        true
    }

    fn emit(&self, event: Event<M>) {
        let failed = lock(&self.events).as_ref().map(|tx| tx.send(event));
        // Dropping an unsent event (it may hold a stream, which resets) happens
        // here, outside the lock.
        drop(failed);
    }
}

async fn accept_loop<M: Serialize + DeserializeOwned + Send + 'static>(
    listener: TcpListener,
    inner: Weak<Inner<M>>,
    token: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        let (place, evicted) = inner.pending.admit(addr.ip());
        if evicted {
            tracing::debug!(%addr, "handshake places full: evicted an older handshake");
        }
        let endpoint = Endpoint {
            inner: inner.clone(),
        };
        inner.spawn(endpoint.accept_one(tcp, addr, place));
    }
}
