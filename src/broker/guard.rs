//! The connection guard: a `rumqttd::protocol::Protocol` that wraps the real MQTT 3.1.1 / 5 codecs
//! and sees every decoded packet of one device connection before the router does.
//!
//! rumqttd clones the guard for every accepted connection, so each clone holds that connection's
//! state. It exists because rumqttd has no per-topic authorization and no hook for received
//! messages: here a PUBLISH, SUBSCRIBE or will outside the device's rights closes the connection
//! before the router sees it, and every authorized device message is handed to the ingest queue at
//! decode time — independent of the router's in-memory log, which may skip messages for a slow
//! subscriber. When the connection ends the guard is dropped, which tells presence tracking.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use rumqttd::protocol::{v4::V4, v5::V5, Error, Packet, Protocol};

use super::acl::{self, TopicKind};
use crate::clock::SharedClock;
use crate::devices::payloads::{self, Invalid, Parsed};
use crate::ops::metrics::Metrics;

/// Largest part of a rejected payload kept in the dead-letter table.
pub const DEAD_LETTER_KEEP_BYTES: usize = 4096;

/// Every device publication reaches the router as an empty message on this topic. The guard has
/// already handed the real message to the ingest queue, and no device may subscribe to another
/// device's uplink topics (acl.rs), so the router needs the packet only to run the QoS handshake
/// (PUBACK, PUBREC…) with the device. Keeping device data out of the router's in-memory log is what
/// bounds the broker's memory under any device load (docs/operations.md, "Memory").
pub const SINK_TOPIC: &str = "storebox-sink/uplink";

/// Turns an authorized device publication into the empty sink message the router sees.
fn to_sink(publish: &mut rumqttd::protocol::Publish) {
    publish.topic = Bytes::from_static(SINK_TOPIC.as_bytes());
    publish.payload = Bytes::new();
    publish.retain = false;
}

/// A device message on its way to the ingest writer.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub device: Arc<str>,
    pub kind: TopicKind,
    pub topic: Bytes,
    pub payload: Bytes,
    pub received_ms: i64,
    /// Business events are parsed and checked ([`payloads::parse`]) when decoded, on the
    /// connection's task, so that the single SQLite writer, which bounds how fast events are
    /// acknowledged, only writes them (issue 17); the payload is then not kept (the parsed form
    /// holds it) unless it was refused (dead letter). Every other kind is parsed by the writer:
    /// telemetry is most of the volume, and one copy per queued message keeps the queue small.
    pub parsed: Option<Result<Parsed, Invalid>>,
}

impl Inbound {
    pub fn new(
        device: Arc<str>,
        kind: TopicKind,
        topic: Bytes,
        payload: Bytes,
        received_ms: i64,
    ) -> Inbound {
        let (payload, parsed) = if kind == TopicKind::Events {
            let parsed = payloads::parse(kind, &payload, received_ms);
            let keep = if parsed.is_ok() {
                Bytes::new()
            } else {
                payload
            };
            (keep, Some(parsed))
        } else {
            (payload, None)
        };
        Inbound {
            device,
            kind,
            topic,
            payload,
            received_ms,
            parsed,
        }
    }
}

/// What the ingest queue carries.
#[derive(Debug)]
pub enum IngestItem {
    Message(Inbound),
    /// Connection lifecycle, in order with the messages around it; never dropped.
    Signal(Signal),
    /// Answered once everything queued before it is committed (used at shutdown and by tests).
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Refused before reaching the router's consumers; kept as a dead letter.
    Rejected {
        device: Arc<str>,
        topic: String,
        reason: String,
        payload: Bytes,
        size: usize,
        received_ms: i64,
    },
}

impl IngestItem {
    /// Bytes this item holds that count against the ingest queue's byte cap.
    pub fn queued_bytes(&self) -> usize {
        match self {
            IngestItem::Message(m) => {
                m.topic.len()
                    + m.payload.len()
                    + match &m.parsed {
                        Some(Ok(p)) => p.heap_bytes(),
                        Some(Err(e)) => e.reason.len(),
                        None => 0,
                    }
            }
            IngestItem::Rejected { topic, payload, .. } => topic.len() + payload.len(),
            _ => 0,
        }
    }
}

/// Connection lifecycle events.
#[derive(Debug, Clone)]
pub enum Signal {
    Connected {
        device: Arc<str>,
        conn: u64,
        keepalive_s: u16,
        protocol: u8,
        at_ms: i64,
    },
    Disconnected {
        device: Arc<str>,
        conn: u64,
        /// The device sent DISCONNECT (no will).
        clean: bool,
        will: Option<Bytes>,
        at_ms: i64,
    },
    Denied {
        device: Arc<str>,
        action: &'static str,
        topic: String,
        reason: String,
        at_ms: i64,
    },
    /// No packet for more than twice the keepalive: the link is presumed dead.
    Silent {
        device: Arc<str>,
        conn: u64,
        after_s: u64,
        at_ms: i64,
    },
    /// Packets flow again after `Silent`.
    Resumed {
        device: Arc<str>,
        conn: u64,
        at_ms: i64,
    },
}

/// One authenticated (or authenticating) connection, shared between its guard, the auth callback
/// and the presence monitor.
#[derive(Debug)]
pub struct ConnLive {
    pub conn: u64,
    pub device: Arc<str>,
    pub keepalive_s: u16,
    pub protocol: u8,
    pub last_seen_ms: AtomicI64,
    pub revoked: AtomicBool,
    pub silent: AtomicBool,
    /// The auth callback ran for this connection (whatever its verdict).
    checked: AtomicBool,
    /// The device's kind, known once its login was accepted.
    pub kind: std::sync::OnceLock<Arc<str>>,
}

/// Which connection currently speaks for each device.
#[derive(Default)]
pub struct Presence {
    next: AtomicU64,
    live: Mutex<HashMap<Arc<str>, Arc<ConnLive>>>,
    /// Closes a device's broker connection now (set by `broker::start`).
    kick: std::sync::OnceLock<flume::Sender<Arc<str>>>,
}

thread_local! {
    /// The connection whose CONNECT this thread decoded last. rumqttd calls the auth callback
    /// right after decoding CONNECT, in the same poll of the same task (no await in between), so
    /// the callback finds its own connection here: two connections racing with one client id each
    /// get their own verdict (a map keyed by client id let one overwrite the other).
    static CONNECTING: std::cell::RefCell<Option<Arc<ConnLive>>> = const { std::cell::RefCell::new(None) };
}

/// For the auth callback: the connection being authenticated, if its CONNECT carried `client_id`.
pub fn take_connecting(client_id: &str) -> Option<Arc<ConnLive>> {
    CONNECTING
        .with(|c| c.borrow_mut().take())
        .filter(|live| &*live.device == client_id)
}

impl Presence {
    /// Connections currently authenticated.
    pub fn live(&self) -> Vec<Arc<ConnLive>> {
        self.live.lock().values().cloned().collect()
    }

    pub fn live_count(&self) -> usize {
        self.live.lock().len()
    }

    /// Closes the device's connection (used when a device is removed): at once through the
    /// router, and at its next packet in any case.
    pub fn revoke(&self, device: &str) {
        let live = self.live.lock().get(device).cloned();
        if let Some(c) = live {
            if !c.revoked.swap(true, Ordering::Relaxed) {
                if let Some(kick) = self.kick.get() {
                    let _ = kick.send(c.device.clone());
                }
            }
        }
    }

    /// Installs the channel [`Presence::revoke`] uses to close connections at once.
    pub fn set_kicker(&self, kick: flume::Sender<Arc<str>>) {
        let _ = self.kick.set(kick);
    }
}

/// Per-connection bounds the guard enforces (docs/operations.md, "Bounds"); set from `[mqtt]`
/// when the broker starts.
#[derive(Debug)]
pub struct ConnLimits {
    /// Distinct subscription filters one connection may hold (`mqtt.max_subscriptions`).
    pub max_subscriptions: AtomicUsize,
    /// QoS 2 publications received and not yet released by PUBREL (`mqtt.max_inflight_qos2`).
    /// rumqttd records every such publication until its PUBREL, whatever its packet id.
    pub max_inflight_qos2: AtomicUsize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        let d = crate::config::MqttConfig::default();
        ConnLimits {
            max_subscriptions: AtomicUsize::new(d.max_subscriptions),
            max_inflight_qos2: AtomicUsize::new(d.max_inflight_qos2),
        }
    }
}

/// Most refusals (`Signal::Denied`, one per client id) held while the ingest queue cannot take
/// signals; beyond it a refusal is only logged and counted in
/// `storebox_ingest_dropped_total{kind="denied"}`. Refusals can come before login (a will on a
/// foreign topic), so their client ids are not bounded by the device registry.
pub const MAX_HELD_DENIED: usize = 256;

/// Connection signals that arrived while the ingest queue was full or its writer could not write,
/// coalesced instead of queued: only the latest presence signal per device matters (a device that
/// connected, dropped and came back during a stall is simply online), and one refusal per client id
/// stands for its repeats. Presence signals come only from logged-in connections, so this holds at
/// most one entry per registered device plus [`MAX_HELD_DENIED`]: bounded however long the writer
/// is stalled, where a queue of every signal was not.
#[derive(Default)]
pub struct HeldSignals {
    next: u64,
    /// Device → (arrival number, latest Connected / Disconnected / Silent / Resumed).
    presence: HashMap<Arc<str>, (u64, Signal)>,
    /// Client id → (arrival number, latest refusal, how many refusals it stands for).
    denied: HashMap<Arc<str>, (u64, Signal, u64)>,
}

impl HeldSignals {
    pub fn is_empty(&self) -> bool {
        self.presence.is_empty() && self.denied.is_empty()
    }

    pub fn len(&self) -> usize {
        self.presence.len() + self.denied.len()
    }

    fn hold(&mut self, signal: Signal, metrics: &Metrics) {
        self.next += 1;
        let n = self.next;
        match signal {
            Signal::Denied { ref device, .. } => {
                if let Some(held) = self.denied.get_mut(device) {
                    let count = held.2 + 1;
                    *held = (n, signal, count);
                } else if self.denied.len() < MAX_HELD_DENIED {
                    self.denied.insert(device.clone(), (n, signal, 1));
                } else {
                    Metrics::inc_kind(&metrics.ingest_dropped, "denied");
                }
            }
            Signal::Connected { ref device, .. }
            | Signal::Disconnected { ref device, .. }
            | Signal::Silent { ref device, .. }
            | Signal::Resumed { ref device, .. } => {
                self.presence.insert(device.clone(), (n, signal));
            }
        }
    }

    /// Every held signal, in the order of arrival of each one kept; a refusal that stands for
    /// several says so in its reason.
    fn take(&mut self) -> Vec<Signal> {
        let mut all: Vec<(u64, Signal)> = self.presence.drain().map(|(_, v)| v).collect();
        all.extend(self.denied.drain().map(|(_, (n, mut signal, count))| {
            if let (Signal::Denied { reason, .. }, true) = (&mut signal, count > 1) {
                reason.push_str(&format!(
                    " (the last of {count} refusals while the ingest queue was full)"
                ));
            }
            (n, signal)
        }));
        all.sort_by_key(|(n, _)| *n);
        all.into_iter().map(|(_, s)| s).collect()
    }
}

/// State shared by every guard of one broker.
pub struct BrokerShared {
    pub metrics: Arc<Metrics>,
    pub limits: ConnLimits,
    /// `[mqtt]` as the broker started with it (event types per device kind).
    pub mqtt_config: std::sync::OnceLock<crate::config::MqttConfig>,
    /// The box's own publisher, for acks the guard answers itself.
    pub publisher: std::sync::OnceLock<super::Publisher>,
    pub presence: Presence,
    pub max_payload: usize,
    pub clock: SharedClock,
    /// One ordered queue for messages and lifecycle signals. Nothing queued is ever dropped; it is
    /// bounded by back-pressure: once `ingest_cap` items or `ingest_bytes_cap` bytes wait (or the
    /// writer cannot write), connections stop reading from their sockets ([`Guard`]'s
    /// `read_ready`), so the router sees and acknowledges no new message until there is room.
    /// Only QoS 0 telemetry is shed when full (counted).
    ingest: flume::Sender<IngestItem>,
    ingest_cap: usize,
    /// Topic and payload bytes of the messages waiting in the ingest queue; the ingest writer
    /// subtracts what it takes. New messages are refused above `ingest_bytes_cap`.
    pub ingest_bytes: Arc<AtomicUsize>,
    ingest_bytes_cap: usize,
    /// Room for more: told by the ingest writer each time it takes items or recovers.
    pub ingest_room: Arc<tokio::sync::Notify>,
    /// Set by the ingest writer while its writes fail (disk full, I/O error): no room at all.
    pub ingest_stalled: Arc<AtomicBool>,
    /// Signals coalesced while the queue cannot take them. Its lock also orders signals: one goes
    /// into the queue only while nothing is held, and the writer takes the held ones only after
    /// emptying the queue under the same lock, so signals are written in the order they came.
    held: Mutex<HeldSignals>,
}

impl BrokerShared {
    pub fn new(
        metrics: Arc<Metrics>,
        clock: SharedClock,
        max_payload: usize,
        ingest: flume::Sender<IngestItem>,
        ingest_cap: usize,
        ingest_bytes_cap: usize,
    ) -> Arc<Self> {
        Arc::new(BrokerShared {
            metrics,
            presence: Presence::default(),
            limits: ConnLimits::default(),
            mqtt_config: std::sync::OnceLock::new(),
            publisher: std::sync::OnceLock::new(),
            max_payload,
            clock,
            ingest,
            ingest_cap,
            ingest_bytes: Arc::default(),
            ingest_bytes_cap,
            ingest_room: Arc::default(),
            ingest_stalled: Arc::default(),
            held: Mutex::default(),
        })
    }

    /// Queues a lifecycle signal, or holds it coalesced while the queue is full or the writer
    /// stalled (never refused; see [`HeldSignals`]).
    pub fn signal(&self, signal: Signal) {
        let mut held = self.held.lock();
        if held.is_empty()
            && self.ingest.len() < self.ingest_cap
            && !self.ingest_stalled.load(Ordering::SeqCst)
        {
            let _ = self.ingest.send(IngestItem::Signal(signal));
        } else {
            held.hold(signal, &self.metrics);
        }
    }

    /// Signals held (coalesced) and not yet taken by the writer.
    pub fn held_signals(&self) -> usize {
        self.held.lock().len()
    }

    /// For the ingest writer: moves up to `room` queued items into `take`, and once the queue is
    /// empty every held signal after them. True when the held signals were taken, i.e. everything
    /// signalled so far is in what `take` got.
    pub fn drain_queue_and_held(
        &self,
        rx: &flume::Receiver<IngestItem>,
        room: usize,
        mut take: impl FnMut(IngestItem),
    ) -> bool {
        let mut held = self.held.lock();
        for _ in 0..room {
            match rx.try_recv() {
                Ok(item) => take(item),
                Err(_) => {
                    for signal in held.take() {
                        take(IngestItem::Signal(signal));
                    }
                    return true;
                }
            }
        }
        held.is_empty()
    }

    /// Queues a flush marker; the receiver fires once everything before it is committed.
    pub fn flush(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.ingest.send(IngestItem::Flush(tx));
        rx
    }

    pub fn queue_depth(&self) -> usize {
        self.ingest.len()
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().as_millisecond()
    }

    /// Called by the broker's auth callback once the password of `pending` (from
    /// [`take_connecting`]) was checked.
    pub fn authenticated(&self, pending: Option<Arc<ConnLive>>, kind: Option<String>) {
        let ok = kind.is_some();
        if let Some(p) = &pending {
            p.checked.store(true, Ordering::Relaxed);
            if let Some(k) = kind {
                let _ = p.kind.set(Arc::from(k));
            }
        }
        if !ok {
            self.metrics.mqtt_auth_failures.inc();
            return;
        }
        let Some(live) = pending else { return };
        live.last_seen_ms.store(self.now_ms(), Ordering::Relaxed);
        self.presence
            .live
            .lock()
            .insert(live.device.clone(), live.clone());
        self.metrics.mqtt_connections_total.inc();
        self.metrics
            .mqtt_connected
            .set(self.presence.live_count() as i64);
        self.signal(Signal::Connected {
            device: live.device.clone(),
            conn: live.conn,
            keepalive_s: live.keepalive_s,
            protocol: live.protocol,
            at_ms: self.now_ms(),
        });
    }

    fn closed(&self, live: &Arc<ConnLive>, clean: bool, will: Option<Bytes>) {
        if !live.checked.load(Ordering::Relaxed) {
            // Closed before the auth callback ran: no login (anonymous) or a broken CONNECT.
            self.metrics.mqtt_auth_failures.inc();
            tracing::warn!(client_id = %live.device, "mqtt: connection closed before login completed (anonymous or no credentials)");
            return;
        }
        let was_current = {
            let mut map = self.presence.live.lock();
            if map.get(&live.device).is_some_and(|c| c.conn == live.conn) {
                map.remove(&live.device);
                true
            } else {
                false
            }
        };
        if was_current {
            self.metrics
                .mqtt_connected
                .set(self.presence.live_count() as i64);
            self.signal(Signal::Disconnected {
                device: live.device.clone(),
                conn: live.conn,
                clean,
                will: if clean { None } else { will },
                at_ms: self.now_ms(),
            });
        }
    }

    fn deny(&self, device: &Arc<str>, action: &'static str, topic: &str, reason: String) -> Error {
        Metrics::inc_kind(&self.metrics.mqtt_acl_denied, action);
        tracing::warn!(device = %device, action, topic, %reason, "mqtt: refused, closing connection");
        let now = self.now_ms();
        self.signal(Signal::Denied {
            device: device.clone(),
            action,
            topic: topic.to_string(),
            reason,
            at_ms: now,
        });
        Error::InvalidProtocol
    }

    /// True while the ingest queue may take more messages.
    pub fn has_room(&self) -> bool {
        self.ingest.len() < self.ingest_cap
            && self.ingest_bytes.load(Ordering::Relaxed) < self.ingest_bytes_cap
            && !self.ingest_stalled.load(Ordering::Relaxed)
    }

    /// Resolves once the ingest queue has room (at once if it has).
    pub async fn room(&self) {
        loop {
            let notified = self.ingest_room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.has_room() {
                return;
            }
            self.metrics.ingest_backpressure_waits.inc();
            notified.await;
        }
    }

    /// Queues a decoded message. It is never dropped once queued: the connection stops reading
    /// while the queue is full, so what waits beyond the caps is bounded by what connections had
    /// already read (their read buffers). Only QoS 0 telemetry (`sheddable`) is refused when full.
    fn queue(&self, item: IngestItem, kind: &'static str, sheddable: bool) {
        let bytes = item.queued_bytes();
        if sheddable && !self.has_room() {
            Metrics::inc_kind(&self.metrics.ingest_dropped, kind);
            return;
        }
        self.ingest_bytes.fetch_add(bytes, Ordering::Relaxed);
        let _ = self.ingest.send(item);
    }
}

#[derive(Clone, Copy)]
enum Codec {
    Unknown,
    V4,
    V5,
}

struct ConnState {
    live: Arc<ConnLive>,
    aliases: HashMap<u16, Bytes>,
    /// Distinct filters this connection subscribed to (unsubscribing does not give room back).
    filters: HashSet<String>,
    /// QoS 2 publications not yet released by PUBREL.
    qos2_open: usize,
    /// Event types refused for this device's kind on this connection (each reported once).
    refused_types: HashSet<String>,
    will: Option<Bytes>,
    clean: bool,
}

pub struct Guard {
    shared: Arc<BrokerShared>,
    codec: Codec,
    state: Option<ConnState>,
}

impl Guard {
    pub fn new(shared: Arc<BrokerShared>) -> Self {
        Guard {
            shared,
            codec: Codec::Unknown,
            state: None,
        }
    }
}

/// rumqttd clones the prototype guard for each new connection: the clone starts fresh.
impl Clone for Guard {
    fn clone(&self) -> Self {
        Guard::new(self.shared.clone())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            self.shared.closed(&state.live, state.clean, state.will);
        }
    }
}

/// A business event whose type the device's kind may not send.
struct EventRefusal {
    id: Option<String>,
    event_type: String,
    reason: String,
}

/// Checks an event's `type` against `mqtt.event_types` for the device's kind; `None` when it may
/// send it, or when the payload is not a well-formed event (the ingest writer rejects those with
/// the reason that names the field).
fn event_of_wrong_kind(
    shared: &BrokerShared,
    live: &ConnLive,
    payload: &[u8],
) -> Option<EventRefusal> {
    #[derive(serde::Deserialize)]
    struct Head {
        id: Option<String>,
        #[serde(rename = "type")]
        event_type: Option<String>,
    }
    let kind = live.kind.get()?;
    let cfg = shared.mqtt_config.get()?;
    let head: Head = serde_json::from_slice(payload).ok()?;
    let event_type = head.event_type?;
    if !crate::devices::payloads::EVENT_TYPES.contains(&event_type.as_str())
        || cfg.event_allowed(kind, &event_type)
    {
        return None;
    }
    Some(EventRefusal {
        id: head.id.filter(|id| !id.is_empty() && id.len() <= 128),
        reason: format!(
            "event type {event_type} is not allowed for a device of kind {kind} (mqtt.event_types)"
        ),
        event_type,
    })
}

/// Reads the protocol level of a CONNECT packet at the start of `stream`:
/// `Ok(None)` = need more bytes.
fn connect_level(stream: &[u8]) -> Result<Option<u8>, Error> {
    if stream.is_empty() {
        return Ok(None);
    }
    if stream[0] >> 4 != 1 {
        return Err(Error::InvalidProtocol); // first packet must be CONNECT
    }
    // skip the remaining-length varint
    let mut i = 1;
    loop {
        let Some(b) = stream.get(i) else {
            return Ok(None);
        };
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Err(Error::MalformedRemainingLength);
        }
    }
    let Some(name_len) = stream.get(i..i + 2) else {
        return Ok(None);
    };
    let name_len = u16::from_be_bytes([name_len[0], name_len[1]]) as usize;
    Ok(stream.get(i + 2 + name_len).copied())
}

impl Protocol for Guard {
    fn read_mut(&mut self, stream: &mut BytesMut, max_size: usize) -> Result<Packet, Error> {
        if let Codec::Unknown = self.codec {
            match connect_level(stream)? {
                None => return Err(Error::InsufficientBytes(1)),
                Some(5) => self.codec = Codec::V5,
                Some(_) => self.codec = Codec::V4,
            }
        }
        // rumqttd keeps a PUBLISH's QoS private; read it from the fixed header.
        let qos2 = stream
            .first()
            .is_some_and(|b| b >> 4 == 3 && (b >> 1) & 3 == 2);
        let packet = match self.codec {
            Codec::V5 => V5.read_mut(stream, max_size)?,
            _ => V4.read_mut(stream, max_size)?,
        };
        if let Some(state) = self.state.as_mut() {
            match &packet {
                Packet::Publish(..) if qos2 => {
                    state.qos2_open += 1;
                    let cap = self.shared.limits.max_inflight_qos2.load(Ordering::Relaxed);
                    if state.qos2_open > cap {
                        let device = state.live.device.clone();
                        return Err(self.shared.deny(
                            &device,
                            "publish",
                            "",
                            format!(
                                "more than {cap} QoS 2 messages in flight without PUBREL \
                                 (mqtt.max_inflight_qos2)"
                            ),
                        ));
                    }
                }
                Packet::PubRel(..) => state.qos2_open = state.qos2_open.saturating_sub(1),
                _ => {}
            }
        }
        self.inspect(packet)
    }

    fn write(&self, packet: Packet, write: &mut BytesMut) -> Result<usize, Error> {
        match self.codec {
            Codec::V5 => V5.write(packet, write),
            _ => V4.write(packet, write),
        }
    }

    /// Back-pressure (the vendored rumqttd's hook): an authenticated connection reads no more
    /// from its socket while the ingest queue is full, so nothing more is acknowledged.
    fn read_ready(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let shared = self.state.as_ref().map(|_| self.shared.clone());
        async move {
            if let Some(shared) = shared {
                shared.room().await;
            }
        }
    }
}

impl Guard {
    fn inspect(&mut self, packet: Packet) -> Result<Packet, Error> {
        let shared = self.shared.clone();
        match packet {
            Packet::Connect(connect, props, will, will_props, login) => {
                if self.state.is_some() {
                    return Err(Error::InvalidProtocol); // a second CONNECT is a protocol error
                }
                let device: Arc<str> = Arc::from(connect.client_id.as_str());
                if !acl::valid_device_id(&device) {
                    shared.metrics.mqtt_auth_failures.inc();
                    tracing::warn!(client_id = ?device, "mqtt: refused client id that is not a device id");
                    return Err(Error::InvalidProtocol);
                }
                if let Some(w) = &will {
                    let topic = String::from_utf8_lossy(&w.topic).into_owned();
                    if let Err(acl::Denied(reason)) = acl::authorize_will(&device, &topic) {
                        return Err(shared.deny(&device, "will", &topic, reason));
                    }
                }
                let live = Arc::new(ConnLive {
                    conn: shared.presence.next.fetch_add(1, Ordering::Relaxed) + 1,
                    device: device.clone(),
                    keepalive_s: connect.keep_alive,
                    protocol: if matches!(self.codec, Codec::V5) {
                        5
                    } else {
                        4
                    },
                    last_seen_ms: AtomicI64::new(shared.now_ms()),
                    revoked: AtomicBool::new(false),
                    silent: AtomicBool::new(false),
                    checked: AtomicBool::new(false),
                    kind: std::sync::OnceLock::new(),
                });
                CONNECTING.with(|c| *c.borrow_mut() = Some(live.clone()));
                self.state = Some(ConnState {
                    live,
                    aliases: HashMap::new(),
                    filters: HashSet::new(),
                    qos2_open: 0,
                    refused_types: HashSet::new(),
                    will: will.as_ref().map(|w| w.message.clone()),
                    clean: false,
                });
                Ok(Packet::Connect(connect, props, will, will_props, login))
            }
            other => {
                let Some(state) = self.state.as_mut() else {
                    return Err(Error::InvalidProtocol);
                };
                let now = shared.now_ms();
                state.live.last_seen_ms.store(now, Ordering::Relaxed);
                if state.live.revoked.load(Ordering::Relaxed) {
                    tracing::info!(device = %state.live.device, "mqtt: closing connection of a removed device");
                    return Err(Error::InvalidProtocol);
                }
                match other {
                    Packet::Publish(mut publish, props) => {
                        let device = state.live.device.clone();
                        // MQTT 5 topic aliases: an aliased PUBLISH may carry an empty topic.
                        if let Some(alias) = props.as_ref().and_then(|p| p.topic_alias) {
                            if publish.topic.is_empty() {
                                match state.aliases.get(&alias) {
                                    Some(t) => publish.topic = t.clone(),
                                    None => {
                                        return Err(shared.deny(
                                            &device,
                                            "publish",
                                            "",
                                            format!("unknown topic alias {alias}"),
                                        ))
                                    }
                                }
                            } else {
                                if state.aliases.len() >= 1024
                                    && !state.aliases.contains_key(&alias)
                                {
                                    return Err(shared.deny(
                                        &device,
                                        "publish",
                                        "",
                                        "too many topic aliases".into(),
                                    ));
                                }
                                state.aliases.insert(alias, publish.topic.clone());
                            }
                        }
                        let Ok(topic) = std::str::from_utf8(&publish.topic) else {
                            return Err(shared.deny(
                                &device,
                                "publish",
                                "",
                                "topic is not UTF-8".into(),
                            ));
                        };
                        let kind = match acl::authorize_publish(&device, topic) {
                            Ok(k) => k,
                            Err(acl::Denied(reason)) => {
                                return Err(shared.deny(&device, "publish", topic, reason))
                            }
                        };
                        Metrics::inc_kind(&shared.metrics.mqtt_messages_in, kind.as_str());
                        let size = publish.payload.len();
                        if size > shared.max_payload {
                            let reason = format!(
                                "payload of {size} bytes exceeds mqtt.max_payload_bytes ({})",
                                shared.max_payload
                            );
                            shared.queue(
                                IngestItem::Rejected {
                                    device,
                                    topic: topic.to_string(),
                                    reason,
                                    payload: Bytes::copy_from_slice(
                                        &publish.payload[..DEAD_LETTER_KEEP_BYTES.min(size)],
                                    ),
                                    size,
                                    received_ms: now,
                                },
                                "rejected",
                                false,
                            );
                        } else if kind == TopicKind::Unknown {
                            shared.queue(
                                IngestItem::Rejected {
                                    device,
                                    topic: topic.to_string(),
                                    reason: "unknown topic: not part of the device contract (docs/mqtt.md)".into(),
                                    payload: Bytes::copy_from_slice(&publish.payload[..DEAD_LETTER_KEEP_BYTES.min(size)]),
                                    size,
                                    received_ms: now,
                                },
                                "rejected",
                                false,
                            );
                        } else if let Some(refusal) = (kind == TopicKind::Events)
                            .then(|| event_of_wrong_kind(&shared, &state.live, &publish.payload))
                            .flatten()
                        {
                            // Acked as rejected (the device stops resending), reported once per
                            // type and connection, never stored or sent to HQ.
                            let EventRefusal {
                                id,
                                event_type,
                                reason,
                            } = refusal;
                            if let (Some(id), Some(publisher)) = (id, shared.publisher.get()) {
                                publisher.publish(
                                    format!("devices/{device}/events/ack"),
                                    serde_json::json!({"id": id, "status": "rejected", "reason": reason})
                                        .to_string(),
                                );
                            }
                            Metrics::inc_kind(&shared.metrics.mqtt_acl_denied, "event");
                            if state.refused_types.len() < 16
                                && state.refused_types.insert(event_type)
                            {
                                tracing::warn!(device = %device, %reason, "mqtt: event refused");
                                shared.signal(Signal::Denied {
                                    device,
                                    action: "event",
                                    topic: topic.to_string(),
                                    reason,
                                    at_ms: now,
                                });
                            }
                        } else {
                            shared.queue(
                                IngestItem::Message(Inbound::new(
                                    device,
                                    kind,
                                    // Owned copies: a slice would keep the connection's whole
                                    // read buffer alive while the message waits.
                                    Bytes::copy_from_slice(&publish.topic),
                                    Bytes::copy_from_slice(&publish.payload),
                                    now,
                                )),
                                kind.as_str(),
                                kind == TopicKind::Telemetry
                                    && publish.qos() == rumqttd::protocol::QoS::AtMostOnce,
                            );
                        }
                        // The router only runs the QoS handshake; the data went to the queue.
                        to_sink(&mut publish);
                        Ok(Packet::Publish(publish, None))
                    }
                    Packet::Subscribe(subscribe, props) => {
                        let device = state.live.device.clone();
                        let cap = shared.limits.max_subscriptions.load(Ordering::Relaxed);
                        for f in &subscribe.filters {
                            if let Err(acl::Denied(reason)) =
                                acl::authorize_subscribe(&device, &f.path)
                            {
                                return Err(shared.deny(&device, "subscribe", &f.path, reason));
                            }
                            if !state.filters.contains(&f.path) {
                                if state.filters.len() >= cap {
                                    return Err(shared.deny(
                                        &device,
                                        "subscribe",
                                        &f.path,
                                        format!(
                                            "more than {cap} subscriptions on one connection \
                                             (mqtt.max_subscriptions)"
                                        ),
                                    ));
                                }
                                state.filters.insert(f.path.clone());
                            }
                        }
                        Ok(Packet::Subscribe(subscribe, props))
                    }
                    Packet::Disconnect(d, p) => {
                        state.clean = true;
                        Ok(Packet::Disconnect(d, p))
                    }
                    other => Ok(other),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_level_is_sniffed() {
        // CONNECT, remaining length 16, "MQTT", level 4
        let v4 = [0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60];
        assert_eq!(connect_level(&v4).unwrap(), Some(4));
        let v5 = [0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60];
        assert_eq!(connect_level(&v5).unwrap(), Some(5));
        assert_eq!(connect_level(&v5[..5]).unwrap(), None);
        assert!(connect_level(&[0x30, 1, 0]).is_err());
    }

    /// Events are parsed at decode time (payload dropped once parsed, kept when refused, for the
    /// dead letter), and the queue counts the parsed form; other kinds wait for the writer.
    #[test]
    fn events_are_parsed_at_decode_time_and_counted_in_the_queue() {
        let ev = |payload: &'static str| {
            Inbound::new(
                Arc::from("scale-1"),
                TopicKind::Events,
                Bytes::from_static(b"devices/scale-1/events"),
                Bytes::from_static(payload.as_bytes()),
                5,
            )
        };
        let ok = ev(r#"{"id":"e1","type":"scale.weighed","sku":"1001","grams":250}"#);
        assert!(matches!(&ok.parsed, Some(Ok(Parsed::Event { id, .. })) if id == "e1"));
        assert!(ok.payload.is_empty());
        let raw_len = match &ok.parsed {
            Some(Ok(Parsed::Event { raw, .. })) => raw.len(),
            _ => unreachable!(),
        };
        assert!(IngestItem::Message(ok).queued_bytes() >= "devices/scale-1/events".len() + raw_len);
        let bad = ev(r#"{"id":"e2","type":"teleport"}"#);
        assert!(matches!(&bad.parsed, Some(Err(i)) if i.code == "unknown_type"));
        assert!(!bad.payload.is_empty(), "kept for the dead letter");
        let t = Inbound::new(
            Arc::from("scale-1"),
            TopicKind::Telemetry,
            Bytes::from_static(b"devices/scale-1/telemetry"),
            Bytes::from_static(br#"{"metrics":{"g":1}}"#),
            5,
        );
        assert!(t.parsed.is_none() && !t.payload.is_empty());
    }
}
