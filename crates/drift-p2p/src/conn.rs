//! One connection: its shared state and stream table, the reader task (dispatch,
//! heartbeats, idle timeout) and the writer task (batching and sealing frames).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use std::io::IoSlice;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval, timeout};
use tokio_util::sync::CancellationToken;

use crate::StreamError;
use crate::frame::{BatchBuf, FrameReader, Opener, Sealer};
use crate::key::{PeerId, Role};
use crate::proto::{
    Body, DATA_OVERHEAD, Envelope, LEN_FIELD_LEN, MAX_FRAME_LEN, decode_envelope, encode_envelope,
};

/// The writer writes once it has gathered this much, or when the queue is empty.
const WRITE_BATCH: usize = 256 * 1024;
/// Plaintext bytes of `Data` queued for the writer per connection, at most.
const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Control frames (pongs, resets, credits...) queued for the writer, at most;
/// beyond this the peer is sending far faster than it reads, and is dropped.
const MAX_CONTROL_BACKLOG: usize = 4096;
/// `Data` plaintexts at least this large are sealed in place and written from
/// their own buffer; smaller ones are cheaper to copy into the batch.
const SEAL_IN_PLACE: usize = 4 * 1024;
/// Send buffers kept for reuse per connection.
const SPARE_BUFS: usize = 32;
/// Upper bound of the send credit a peer may grant on one stream.
const MAX_CREDIT: u64 = 1 << 32;
/// How long a closing connection may take to flush its writer.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Close reasons on the wire are cut to this many bytes.
const MAX_REASON_LEN: usize = 512;

/// A sealed-to-be frame queued for the writer.
pub(crate) struct Outbound {
    buf: Vec<u8>,
    start: usize,
    /// Bytes of the `QUEUE_BYTES` budget this frame holds; 0 for control frames.
    queued: u32,
    close: bool,
}

/// What the reader hands a stream's receiver.
pub(crate) enum Inbound {
    Data(Bytes),
    Fin,
}

/// Per-stream state shared by the reader and the [`crate::Stream`].
pub(crate) struct StreamShared {
    /// Our credit to send, in bytes.
    pub(crate) credit: Semaphore,
    /// Set when the peer reset the stream.
    pub(crate) reset: OnceLock<String>,
    /// Set when the peer's `Fin` arrived (its data is complete).
    pub(crate) remote_finished: std::sync::atomic::AtomicBool,
}

pub(crate) struct StreamEntry {
    inbound: mpsc::UnboundedSender<Inbound>,
    shared: Arc<StreamShared>,
    /// Bytes the peer may still send us.
    allowance: u64,
    /// We sent Fin or Reset.
    local_done: bool,
    /// We received Fin or Reset.
    remote_done: bool,
    /// A stream slot of ours, released when the entry goes.
    _slot: Option<OwnedSemaphorePermit>,
}

/// The live streams of a connection. An entry exists until both directions are
/// done (or the stream is reset); that is also when its stream slot is released,
/// which happens before the final frame is queued, so the peer never sees a new
/// `Open` before the slot it replaces is free on our side.
pub(crate) struct Table {
    entries: HashMap<u32, StreamEntry>,
    next_local: u32,
    last_remote: u32,
    remote_count: usize,
}

/// A stream the peer just opened.
pub(crate) struct NewStream {
    pub(crate) id: u32,
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) inbound: mpsc::UnboundedReceiver<Inbound>,
}

/// What the reader, the writer and every handle of one connection share.
pub(crate) struct ConnShared {
    pub(crate) id: u64,
    pub(crate) peer_id: PeerId,
    pub(crate) role: Role,
    pub(crate) remote_addr: std::net::SocketAddr,
    pub(crate) listen_addr: Option<std::net::SocketAddr>,
    pub(crate) outbound: bool,
    pub(crate) request_timeout: Duration,
    pub(crate) local_window: u32,
    peer_window: u32,
    max_remote_streams: usize,
    tx: mpsc::UnboundedSender<Outbound>,
    table: Mutex<Table>,
    pub(crate) open_slots: Arc<Semaphore>,
    pub(crate) queue: Semaphore,
    control_backlog: AtomicUsize,
    /// Send buffers the writer is done with, for the next `Stream::send`.
    spare_bufs: Mutex<Vec<Vec<u8>>>,
    reason: OnceLock<String>,
    closing: CancellationToken,
    done: watch::Sender<bool>,
}

/// The fixed facts about a connection, from the handshake and hellos.
pub(crate) struct ConnParams {
    pub(crate) id: u64,
    pub(crate) peer_id: PeerId,
    pub(crate) role: Role,
    pub(crate) remote_addr: std::net::SocketAddr,
    pub(crate) listen_addr: Option<std::net::SocketAddr>,
    pub(crate) outbound: bool,
    pub(crate) request_timeout: Duration,
    pub(crate) local_window: u32,
    pub(crate) peer_window: u32,
    pub(crate) local_max_streams: u32,
    pub(crate) peer_max_streams: u32,
}

impl ConnShared {
    pub(crate) fn new(p: ConnParams) -> (Arc<ConnShared>, mpsc::UnboundedReceiver<Outbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = ConnShared {
            id: p.id,
            peer_id: p.peer_id,
            role: p.role,
            remote_addr: p.remote_addr,
            listen_addr: p.listen_addr,
            outbound: p.outbound,
            request_timeout: p.request_timeout,
            local_window: p.local_window,
            peer_window: p.peer_window,
            max_remote_streams: p.local_max_streams as usize,
            tx,
            table: Mutex::new(Table {
                entries: HashMap::new(),
                next_local: if p.outbound { 1 } else { 2 },
                last_remote: 0,
                remote_count: 0,
            }),
            // Never open more than the peer accepts, so it never has to reset us.
            open_slots: Arc::new(Semaphore::new(
                p.local_max_streams.min(p.peer_max_streams) as usize
            )),
            queue: Semaphore::new(QUEUE_BYTES),
            control_backlog: AtomicUsize::new(0),
            spare_bufs: Mutex::new(Vec::new()),
            reason: OnceLock::new(),
            closing: CancellationToken::new(),
            done: watch::Sender::new(false),
        };
        (Arc::new(shared), rx)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves the table consistent enough to tear down.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_local(&self, id: u32) -> bool {
        (id % 2 == 1) == self.outbound
    }

    /// Queues a frame that holds no queue budget. Returns false if the backlog is
    /// over the limit (the frame is still queued).
    pub(crate) fn enqueue_control(&self, env: &Envelope) -> bool {
        let backlog = self.control_backlog.fetch_add(1, Ordering::Relaxed);
        let buf = encode_envelope(env);
        let _ = self.tx.send(Outbound {
            buf,
            start: 0,
            queued: 0,
            close: false,
        });
        backlog < MAX_CONTROL_BACKLOG
    }

    /// An empty send buffer, recycled if one is spare (saves the allocator's
    /// page faults on every 60 KiB message).
    pub(crate) fn take_buf(&self, size_hint: usize) -> Vec<u8> {
        let spare = self
            .spare_bufs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        spare.unwrap_or_else(|| Vec::with_capacity(size_hint.clamp(128, MAX_FRAME_LEN)))
    }

    fn recycle(&self, buf: Vec<u8>) {
        if buf.capacity() >= 1024 && buf.capacity() <= 2 * MAX_FRAME_LEN {
            let mut spare = self.spare_bufs.lock().unwrap_or_else(|e| e.into_inner());
            if spare.len() < SPARE_BUFS {
                spare.push(buf);
            }
        }
    }

    /// Queues a `Data` frame that holds `queued` bytes of the queue budget.
    pub(crate) fn enqueue_data(
        &self,
        buf: Vec<u8>,
        start: usize,
        queued: u32,
    ) -> Result<(), StreamError> {
        self.tx
            .send(Outbound {
                buf,
                start,
                queued,
                close: false,
            })
            .map_err(|_| self.disconnected())
    }

    /// Closes the connection (first reason wins): tells the peer why, stops the reader.
    pub(crate) fn close(&self, reason: &str) {
        if self.reason.set(reason.to_string()).is_ok() {
            let mut wire = reason.to_string();
            if wire.len() > MAX_REASON_LEN {
                let mut cut = MAX_REASON_LEN;
                while !wire.is_char_boundary(cut) {
                    cut -= 1;
                }
                wire.truncate(cut);
            }
            self.control_backlog.fetch_add(1, Ordering::Relaxed);
            let buf = encode_envelope(&Envelope {
                stream: 0,
                body: Body::Close(wire),
            });
            let _ = self.tx.send(Outbound {
                buf,
                start: 0,
                queued: 0,
                close: true,
            });
            self.closing.cancel();
        }
    }

    pub(crate) fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }

    pub(crate) fn disconnected(&self) -> StreamError {
        StreamError::Disconnected(self.reason().unwrap_or("connection closed").to_string())
    }

    pub(crate) fn mark_done(&self) {
        self.done.send_replace(true);
    }

    pub(crate) async fn wait_done(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Fails every stream with the connection's reason and refuses new ones.
    fn fail_streams(&self) {
        let entries = std::mem::take(&mut self.lock().entries);
        for entry in entries.values() {
            entry.shared.credit.close();
        }
        self.open_slots.close();
        self.queue.close();
        drop(entries);
    }

    /// Registers a stream we open and queues its `Open`.
    pub(crate) fn open_local(
        &self,
        slot: OwnedSemaphorePermit,
    ) -> Result<(u32, Arc<StreamShared>, mpsc::UnboundedReceiver<Inbound>), StreamError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(StreamShared::new(self.peer_window));
        let mut table = self.lock();
        if self.reason().is_some() {
            return Err(self.disconnected());
        }
        let id = table.next_local;
        if id > u32::MAX - 2 {
            return Err(StreamError::Limit);
        }
        table.next_local = id + 2;
        table.entries.insert(
            id,
            StreamEntry::new(tx, shared.clone(), self.local_window, Some(slot)),
        );
        self.enqueue_control(&Envelope {
            stream: id,
            body: Body::Open,
        });
        Ok((id, shared, rx))
    }

    /// Marks our direction done and queues `Fin`. Errors if the stream is gone.
    pub(crate) fn finish_local(&self, id: u32) -> Result<(), ()> {
        let mut table = self.lock();
        let entry = table.entries.get_mut(&id).ok_or(())?;
        entry.local_done = true;
        if entry.remote_done {
            self.remove(&mut table, id);
        }
        self.enqueue_control(&Envelope {
            stream: id,
            body: Body::Fin,
        });
        Ok(())
    }

    /// Drops the stream and queues a `Reset` if it was still live. With
    /// `graceful`, a stream we already finished is left to drain instead: the
    /// peer may still be reading our data and will finish (or reset) on its own,
    /// which removes the entry; until then its further data is discarded.
    pub(crate) fn reset_local(&self, id: u32, reason: &str, graceful: bool) {
        let mut table = self.lock();
        if graceful && table.entries.get(&id).is_some_and(|e| e.local_done) {
            return;
        }
        if self.remove(&mut table, id).is_some() {
            self.enqueue_control(&Envelope {
                stream: id,
                body: Body::Reset(reason.into()),
            });
        }
    }

    /// Returns consumed credit to the peer.
    pub(crate) fn grant(&self, id: u32, bytes: u64) {
        let mut table = self.lock();
        if let Some(entry) = table.entries.get_mut(&id)
            && !entry.remote_done
        {
            entry.allowance += bytes;
            self.enqueue_control(&Envelope {
                stream: id,
                body: Body::Credit(bytes as u32),
            });
        }
    }

    fn remove(&self, table: &mut Table, id: u32) -> Option<StreamEntry> {
        let entry = table.entries.remove(&id)?;
        if !self.is_local(id) {
            table.remote_count -= 1;
        }
        Some(entry)
    }

    /// Applies one envelope from the peer. `Err` is a protocol violation: close.
    fn dispatch(&self, env: Envelope) -> Result<Option<NewStream>, String> {
        let id = env.stream;
        let mut table = self.lock();
        match env.body {
            Body::Open => {
                if id == 0 || self.is_local(id) || id <= table.last_remote {
                    return Err(format!(
                        "protocol violation: the peer opened invalid stream id {id}"
                    ));
                }
                table.last_remote = id;
                if table.remote_count >= self.max_remote_streams {
                    drop(table);
                    let reset = Body::Reset("too many open streams".into());
                    return match self.enqueue_control(&Envelope {
                        stream: id,
                        body: reset,
                    }) {
                        true => Ok(None),
                        false => Err("the peer opens streams but does not read".into()),
                    };
                }
                let (tx, inbound) = mpsc::unbounded_channel();
                let shared = Arc::new(StreamShared::new(self.peer_window));
                table.entries.insert(
                    id,
                    StreamEntry::new(tx, shared.clone(), self.local_window, None),
                );
                table.remote_count += 1;
                Ok(Some(NewStream {
                    id,
                    shared,
                    inbound,
                }))
            }
            Body::Data(payload) => {
                let Some(entry) = table.entries.get_mut(&id) else {
                    return Ok(None);
                };
                let cost = payload.len() as u64 + u64::from(DATA_OVERHEAD);
                if entry.remote_done || cost > entry.allowance {
                    return Err(format!(
                        "protocol violation: data beyond the credit or after fin on stream {id}"
                    ));
                }
                entry.allowance -= cost;
                let _ = entry.inbound.send(Inbound::Data(payload));
                Ok(None)
            }
            Body::Fin => {
                let Some(entry) = table.entries.get_mut(&id) else {
                    return Ok(None);
                };
                if entry.remote_done {
                    return Err(format!("protocol violation: second fin on stream {id}"));
                }
                entry.remote_done = true;
                entry.shared.remote_finished.store(true, Ordering::Release);
                let _ = entry.inbound.send(Inbound::Fin);
                if entry.local_done {
                    self.remove(&mut table, id);
                }
                Ok(None)
            }
            Body::Reset(reason) => {
                if let Some(entry) = self.remove(&mut table, id) {
                    let _ = entry.shared.reset.set(reason);
                    entry.shared.credit.close();
                }
                Ok(None)
            }
            Body::Credit(n) => {
                let Some(entry) = table.entries.get(&id) else {
                    return Ok(None);
                };
                let available = entry.shared.credit.available_permits() as u64;
                if available + u64::from(n) > MAX_CREDIT {
                    return Err(format!(
                        "protocol violation: too much credit on stream {id}"
                    ));
                }
                entry.shared.credit.add_permits(n as usize);
                Ok(None)
            }
            Body::Ping(nonce) => {
                drop(table);
                match self.enqueue_control(&Envelope {
                    stream: 0,
                    body: Body::Pong(nonce),
                }) {
                    true => Ok(None),
                    false => Err("the peer sends pings but does not read".into()),
                }
            }
            Body::Pong(_) => Ok(None),
            Body::Close(reason) => Err(format!("closed by the peer: {reason}")),
            Body::Hello(_) => Err("protocol violation: second hello".into()),
        }
    }
}

impl StreamShared {
    fn new(credit: u32) -> Self {
        StreamShared {
            credit: Semaphore::new(credit as usize),
            reset: OnceLock::new(),
            remote_finished: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl StreamEntry {
    fn new(
        inbound: mpsc::UnboundedSender<Inbound>,
        shared: Arc<StreamShared>,
        window: u32,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        StreamEntry {
            inbound,
            shared,
            allowance: u64::from(window),
            local_done: false,
            remote_done: false,
            _slot: slot,
        }
    }
}

/// Aborts the task when dropped, so no writer outlives its connection.
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Held by a connection's task: when it ends, even by cancellation, the
/// connection is closed, its streams fail and [`ConnShared::wait_done`] returns.
pub(crate) struct MarkDone(pub(crate) Arc<ConnShared>);

impl Drop for MarkDone {
    fn drop(&mut self) {
        self.0.close("endpoint dropped");
        self.0.fail_streams();
        self.0.mark_done();
    }
}

/// Timers of the reader task.
pub(crate) struct Timers {
    pub(crate) heartbeat: Duration,
    pub(crate) idle: Duration,
}

/// Reads and dispatches frames until the connection closes; returns the reason.
/// Never waits on the application: every hand-off is a non-blocking send.
pub(crate) async fn run_reader(
    shared: &ConnShared,
    mut reader: FrameReader<OwnedReadHalf>,
    mut opener: Opener,
    mut writer: AbortOnDrop,
    timers: Timers,
    mut on_stream: impl FnMut(NewStream),
) -> String {
    let tick_every = timers
        .heartbeat
        .min(timers.idle / 2)
        .max(Duration::from_millis(5));
    let mut tick = interval(tick_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut last_rx, mut last_ping, mut ping_nonce) = (Instant::now(), Instant::now(), 0u64);
    loop {
        tokio::select! {
            biased;
            _ = shared.closing.cancelled() => break,
            _ = tick.tick() => {
                let now = Instant::now();
                if now - last_rx >= timers.idle {
                    shared.close(&format!("no frame from the peer for {:?} (idle timeout)", timers.idle));
                    break;
                }
                if now - last_ping >= timers.heartbeat {
                    last_ping = now;
                    ping_nonce += 1;
                    if !shared.enqueue_control(&Envelope { stream: 0, body: Body::Ping(ping_nonce) }) {
                        shared.close("the peer does not read");
                        break;
                    }
                }
            }
            frame = reader.next_open(&mut opener) => match frame {
                Ok(Some(opened)) => {
                    last_rx = Instant::now();
                    let step = opened
                        .map_err(|e| format!("cannot decrypt a frame from the peer: {e}"))
                        .and_then(|plain| decode_envelope(plain).map_err(|e| e.to_string()))
                        .and_then(|env| shared.dispatch(env));
                    match step {
                        Ok(Some(new_stream)) => on_stream(new_stream),
                        Ok(None) => {}
                        Err(reason) => {
                            shared.close(&reason);
                            break;
                        }
                    }
                }
                Ok(None) => {
                    shared.close("the peer closed the connection");
                    break;
                }
                Err(e) => {
                    shared.close(&format!("reading from the peer failed: {e}"));
                    break;
                }
            },
        }
    }
    shared.fail_streams();
    let _ = timeout(CLOSE_GRACE, &mut writer.0).await;
    shared.reason().unwrap_or("connection closed").to_string()
}

/// A frame of a batch: sealed into the batch buffer (a range of it, possibly
/// several frames), or sealed in place in its own send buffer.
enum Part {
    Batch(std::ops::Range<usize>),
    Own(Vec<u8>, usize),
}

/// Seals and writes queued frames, many per write, until a `Close` or an error.
///
/// Large `Data` frames are sealed in place in the buffer `Stream::send`
/// encoded them into and written from there (vectored with the rest of the
/// batch); small and control frames are sealed into one batch buffer.
pub(crate) async fn run_writer(
    shared: Arc<ConnShared>,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    mut sealer: Sealer,
    write_timeout: Duration,
) {
    let mut out = BatchBuf::new(WRITE_BATCH + 2 * MAX_FRAME_LEN);
    let mut parts: Vec<Part> = Vec::new();
    while let Some(first) = rx.recv().await {
        let (mut queued, mut controls, mut close, mut size) = (0usize, 0usize, false, 0usize);
        let mut next = Some(first);
        while let Some(mut ob) = next {
            let in_place = ob.queued > 0
                && ob.start >= LEN_FIELD_LEN
                && ob.buf.len() - ob.start >= SEAL_IN_PLACE;
            let sealed = if in_place {
                sealer.seal_in_place(&mut ob.buf, ob.start)
            } else {
                let before = out.len();
                let r = sealer.seal_into(&ob.buf[ob.start..], &mut out);
                match parts.last_mut() {
                    Some(Part::Batch(range)) if range.end == before => range.end = out.len(),
                    _ => parts.push(Part::Batch(before..out.len())),
                }
                r
            };
            if let Err(e) = sealed {
                shared.close(&format!("cannot encrypt a frame: {e}"));
                return;
            }
            match ob.queued {
                0 => controls += 1,
                n => queued += n as usize,
            }
            if in_place {
                size += ob.buf.len() - ob.start + LEN_FIELD_LEN;
                parts.push(Part::Own(ob.buf, ob.start - LEN_FIELD_LEN));
            } else if ob.queued > 0 {
                shared.recycle(ob.buf);
            }
            if ob.close {
                close = true;
                break;
            }
            if out.len() + size >= WRITE_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        let written = timeout(write_timeout, write_parts(&mut wr, &parts, out.bytes())).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.close(&format!("writing to the peer failed: {e}"));
                return;
            }
            Err(_) => {
                shared.close("the peer stopped reading (write timed out)");
                return;
            }
        }
        out.clear();
        for part in parts.drain(..) {
            if let Part::Own(buf, _) = part {
                shared.recycle(buf);
            }
        }
        shared.queue.add_permits(queued);
        shared
            .control_backlog
            .fetch_sub(controls, Ordering::Relaxed);
        if close {
            let _ = timeout(write_timeout, wr.shutdown()).await;
            return;
        }
    }
}

/// Writes the parts of a batch, in order, with as few syscalls as the socket allows.
async fn write_parts(wr: &mut OwnedWriteHalf, parts: &[Part], batch: &[u8]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .map(|part| match part {
            Part::Batch(range) => IoSlice::new(&batch[range.clone()]),
            Part::Own(buf, from) => IoSlice::new(&buf[*from..]),
        })
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = wr.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}
