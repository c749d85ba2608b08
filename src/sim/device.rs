//! One virtual device: an MQTT connection that follows docs/mqtt.md (own credentials, retained
//! status and will, events resent until acknowledged, command acks, price requests), the state
//! the control API reads, and a task that owns both and takes orders from a channel.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::boxapi::{BoxApi, CatalogEntry};
use super::config::Rates;
use super::kinds::{self, CommandEffect, Kind};
use crate::clock::SharedClock;

/// Events kept waiting for an ack at most; beyond, new events are refused (bounded memory).
pub const MAX_PENDING: usize = 10_000;
/// Acknowledged events, commands and sent messages kept for the state readout.
const KEEP_RECENT: usize = 50;

/// An event the device sent (or will send), until and after its ack.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub payload: Value,
    /// How many times it was published (resends carry the same id).
    pub sends: u32,
    /// Acks that arrived while acking was switched off, and were ignored.
    pub acks_ignored: u32,
    /// `stored`, `duplicate` or `rejected` once acknowledged.
    pub status: Option<String>,
    #[serde(skip)]
    last_sent: Option<Instant>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandRecord {
    pub id: String,
    pub name: String,
    pub args: Value,
    /// How many times the box delivered it (it re-sends unacked commands on reconnect).
    pub received: u32,
    pub acked: bool,
    pub ok: Option<bool>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpenAlert {
    pub severity: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Line {
    pub sku: String,
    pub quantity: i64,
    /// Unit price from the box's MQTT price reply, once it arrived.
    pub unit_price: Option<i64>,
    pub unit: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LaneState {
    pub basket: Vec<Line>,
    pub checkouts: u32,
    /// The last `checkout.completed` event this lane produced.
    pub last_checkout: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Display {
    pub price: Option<i64>,
    pub currency: Option<String>,
    pub price_id: Option<String>,
    pub promotions: Vec<String>,
    /// `reply` (its own price request) or `changed` (a `store/prices/changed` message).
    pub source: String,
    /// Simulator clock time of the update.
    pub updated_at: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LabelState {
    pub sku: Option<String>,
    pub display: Option<Display>,
    /// Price changes for its sku it received while its display was stuck (jammed).
    pub missed_changes: u32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ScaleState {
    pub last_weighed: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FridgeState {
    pub door_open: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PrinterState {
    pub receipts_printed: u32,
}

/// Everything the control API shows about a device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceState {
    pub id: String,
    pub kind: Kind,
    /// Whether the device is meant to be online (control: online/offline).
    pub online: bool,
    /// Whether it currently has an MQTT session with the box (CONNACK received).
    pub connected: bool,
    pub connects: u32,
    pub last_error: Option<String>,
    /// Acks commands and accepts event acks (control: acking).
    pub acking: bool,
    /// Delay before each publish (control: slow).
    pub delay_ms: u64,
    pub jammed: bool,
    pub readings: BTreeMap<String, f64>,
    pub alerts: BTreeMap<String, OpenAlert>,
    pub pending_events: Vec<EventRecord>,
    pub recent_events: VecDeque<EventRecord>,
    pub commands: VecDeque<CommandRecord>,
    pub telemetry_sent: u64,
    pub events_sent: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lane: Option<LaneState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<LabelState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fridge: Option<FridgeState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub printer: Option<PrinterState>,
}

impl DeviceState {
    fn new(id: &str, kind: Kind, readings: BTreeMap<String, f64>, sku: Option<String>) -> Self {
        DeviceState {
            id: id.to_string(),
            kind,
            online: true,
            connected: false,
            connects: 0,
            last_error: None,
            acking: true,
            delay_ms: 0,
            jammed: false,
            readings,
            alerts: BTreeMap::new(),
            pending_events: Vec::new(),
            recent_events: VecDeque::new(),
            commands: VecDeque::new(),
            telemetry_sent: 0,
            events_sent: 0,
            lane: (kind == Kind::Lane).then(LaneState::default),
            label: (kind == Kind::Label).then(|| LabelState {
                sku,
                ..Default::default()
            }),
            scale: (kind == Kind::Scale).then(ScaleState::default),
            fridge: (kind == Kind::Fridge).then(FridgeState::default),
            printer: (kind == Kind::Printer).then(PrinterState::default),
        }
    }
}

/// An order for a device, from the control API.
#[derive(Debug)]
pub enum Action {
    Online,
    Offline {
        graceful: bool,
    },
    Raise {
        code: String,
        severity: String,
        message: String,
    },
    Clear {
        code: String,
    },
    Reading {
        metric: String,
        value: f64,
    },
    Jam(bool),
    Burst {
        count: u32,
        events: bool,
    },
    Acking(bool),
    Slow(u64),
    Scan {
        sku: Option<String>,
        quantity: Option<i64>,
    },
    Checkout,
    Weigh {
        sku: Option<String>,
        grams: Option<i64>,
    },
    Door(bool),
    Shutdown,
}

/// Why an action was refused: an HTTP status for the control API and a message.
#[derive(Debug, Clone)]
pub struct Refused {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

fn refused(status: u16, code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        status,
        code,
        message: message.into(),
    }
}

pub struct Request {
    pub action: Action,
    pub reply: oneshot::Sender<Result<Value, Refused>>,
}

/// What the simulator keeps per device: its readable state and its order channel.
#[derive(Clone)]
pub struct DeviceHandle {
    pub id: String,
    pub kind: Kind,
    pub state: Arc<Mutex<DeviceState>>,
    pub tx: mpsc::Sender<Request>,
}

impl DeviceHandle {
    /// Sends an order and waits for the device's answer.
    pub async fn act(&self, action: Action) -> Result<Value, Refused> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { action, reply })
            .await
            .map_err(|_| refused(503, "stopped", "the device task has stopped"))?;
        match tokio::time::timeout(Duration::from_secs(15), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(refused(503, "stopped", "the device task has stopped")),
            Err(_) => Err(refused(
                504,
                "timeout",
                "the device did not answer within 15 s",
            )),
        }
    }
}

/// Static description of a device and what it shares with the others.
pub struct Spec {
    pub id: String,
    pub kind: Kind,
    pub password: String,
    pub label_sku: Option<String>,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    pub firmware: String,
    pub rates: Rates,
    pub seed: u64,
    /// Identifies this simulator run in event ids, so a restarted simulator never reuses one.
    pub run: String,
    pub api: BoxApi,
    /// Items lanes scan (all) and scales weigh (`kg` ones).
    pub pool: Arc<Vec<CatalogEntry>>,
    pub clock: SharedClock,
}

/// Starts a device task; returns its handle.
pub fn spawn(spec: Spec) -> (DeviceHandle, tokio::task::JoinHandle<()>) {
    let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(spec.seed);
    let readings = kinds::initial_readings(spec.kind, &mut rng);
    let state = Arc::new(Mutex::new(DeviceState::new(
        &spec.id,
        spec.kind,
        readings,
        spec.label_sku.clone(),
    )));
    let (tx, rx) = mpsc::channel(64);
    let handle = DeviceHandle {
        id: spec.id.clone(),
        kind: spec.kind,
        state: state.clone(),
        tx,
    };
    let dev = Dev {
        spec,
        state,
        rng,
        conn: None,
        subscribed: false,
        seq: 0,
        req_seq: 0,
        reconnect_at: None,
        unsent_clears: BTreeSet::new(),
        reboot_pending: false,
        next_customer: None,
        basket_target: 0,
        next_incident: None,
        incident_until: None,
    };
    let task = tokio::spawn(dev.run(rx));
    (handle, task)
}

/// One MQTT session. The event loop runs in its own task (a connection attempt must not be
/// cancelled by the device's other work) and forwards what matters; dropping the `Conn` drops
/// the socket at once, like a device losing power.
struct Conn {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Polls the event loop until its first error (the device decides when to reconnect).
async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Result<Event, String>>) {
    loop {
        match eventloop.poll().await {
            Ok(
                ev @ Event::Incoming(Packet::ConnAck(_) | Packet::SubAck(_) | Packet::Publish(_)),
            )
            | Ok(ev @ Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                if tx.send(Ok(ev)).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        }
    }
}

struct Dev {
    spec: Spec,
    state: Arc<Mutex<DeviceState>>,
    rng: StdRng,
    conn: Option<Conn>,
    /// SUBACK seen on the current connection.
    subscribed: bool,
    seq: u64,
    req_seq: u64,
    reconnect_at: Option<Instant>,
    /// Alerts cleared while disconnected, to announce at the next connection.
    unsent_clears: BTreeSet<String>,
    /// A `reboot` command was acked; the session ends once the ack is out.
    reboot_pending: bool,
    /// Lane pacing (`Rates::customer_gap_ms`): no scan before this instant, and the current
    /// customer's basket size.
    next_customer: Option<Instant>,
    basket_target: u32,
    /// Fridge incidents (`Rates::fridge_incident_every_ms`): when the next starts, or when the
    /// current one ends.
    next_incident: Option<Instant>,
    incident_until: Option<Instant>,
}

async fn poll(conn: &mut Option<Conn>) -> Result<Event, String> {
    match conn {
        Some(c) => match c.events.recv().await {
            Some(ev) => ev,
            None => Err("connection task ended".into()),
        },
        None => std::future::pending().await,
    }
}

impl Dev {
    fn topic(&self, leaf: &str) -> String {
        format!("devices/{}/{leaf}", self.spec.id)
    }

    fn now_text(&self) -> String {
        self.spec.clock.now().to_string()
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let rates = self.spec.rates.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let jitter =
            |rng: &mut StdRng, ms: u64| Duration::from_millis(rng.random_range(0..=ms / 2));
        let start = Instant::now();
        let mut next_telemetry = start + jitter(&mut self.rng, rates.telemetry_ms);
        let mut next_scan =
            start + Duration::from_millis(rates.scan_ms) + jitter(&mut self.rng, rates.scan_ms);
        let mut next_weigh =
            start + Duration::from_millis(rates.weigh_ms) + jitter(&mut self.rng, rates.weigh_ms);
        loop {
            let want = self.state.lock().online;
            if want && self.conn.is_none() && self.reconnect_at.is_none_or(|t| Instant::now() >= t)
            {
                self.connect();
            }
            tokio::select! {
                ev = poll(&mut self.conn) => {
                    self.on_event(ev);
                    if std::mem::take(&mut self.reboot_pending) {
                        // Ack sent; end the session cleanly and come back after the delay.
                        self.disconnect(true).await;
                        self.reconnect_at = Some(
                            Instant::now() + Duration::from_millis(self.spec.rates.reconnect_ms),
                        );
                    }
                }
                req = rx.recv() => {
                    let Some(req) = req else { break };
                    if matches!(req.action, Action::Shutdown) {
                        self.disconnect(true).await;
                        let _ = req.reply.send(Ok(json!({})));
                        return;
                    }
                    let r = self.act(req.action).await;
                    let _ = req.reply.send(r);
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    if rates.telemetry_ms > 0 && now >= next_telemetry {
                        next_telemetry = now + Duration::from_millis(rates.telemetry_ms);
                        self.telemetry_period();
                    }
                    if rates.scan_ms > 0 && now >= next_scan && self.spec.kind == Kind::Lane {
                        next_scan = now + Duration::from_millis(rates.scan_ms);
                        let elapsed = now.duration_since(start).as_millis() as u64;
                        self.auto_scan(elapsed).await;
                    }
                    if rates.fridge_incident_every_ms > 0 && self.spec.kind == Kind::Fridge {
                        self.fridge_incidents(now);
                    }
                    if rates.weigh_ms > 0 && now >= next_weigh && self.spec.kind == Kind::Scale {
                        next_weigh = now + Duration::from_millis(rates.weigh_ms);
                        let _ = self.weigh(None, None);
                    }
                    self.resend_due();
                }
            }
        }
        self.disconnect(true).await;
    }

    // ---- connection -------------------------------------------------------------------------

    fn connect(&mut self) {
        let mut opts = MqttOptions::new(&self.spec.id, &self.spec.mqtt_host, self.spec.mqtt_port);
        opts.set_credentials(&self.spec.id, &self.spec.password);
        opts.set_keep_alive(Duration::from_secs(self.spec.rates.keepalive_s));
        opts.set_clean_session(true);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_last_will(LastWill::new(
            self.topic("status"),
            r#"{"online":false}"#,
            QoS::AtLeastOnce,
            true,
        ));
        let (client, eventloop) = AsyncClient::new(opts, 4096);
        let (tx, events) = mpsc::unbounded_channel();
        let driver = tokio::spawn(drive(eventloop, tx));
        self.conn = Some(Conn {
            client,
            events,
            driver,
        });
        self.subscribed = false;
        self.reconnect_at = None;
    }

    /// Ends the connection: gracefully (offline status, DISCONNECT) or by just dropping the
    /// socket, like a device losing power or network (the box then publishes its will).
    async fn disconnect(&mut self, graceful: bool) {
        if let Some(mut c) = self.conn.take() {
            if graceful && self.state.lock().connected {
                let _ = c.client.try_publish(
                    self.topic("status"),
                    QoS::AtLeastOnce,
                    true,
                    r#"{"online":false}"#,
                );
                let _ = c.client.try_disconnect();
                // DISCONNECT goes out, then the box closes the connection.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(Ok(_)) = c.events.recv().await {}
                })
                .await;
            }
        }
        self.subscribed = false;
        self.state.lock().connected = false;
    }

    fn on_event(&mut self, ev: Result<Event, String>) {
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => self.on_connected(),
            Ok(Event::Incoming(Packet::SubAck(_))) if !self.subscribed => {
                self.subscribed = true;
                if self.spec.kind == Kind::Label {
                    self.request_label_price();
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let topic = p.topic.clone();
                match serde_json::from_slice::<Value>(&p.payload) {
                    Ok(v) => self.on_message(&topic, v),
                    Err(e) => {
                        tracing::warn!(device = %self.spec.id, %topic, error = %e, "unreadable message")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                {
                    let mut s = self.state.lock();
                    s.connected = false;
                    s.last_error = Some(e);
                }
                self.conn = None;
                self.subscribed = false;
                self.reconnect_at =
                    Some(Instant::now() + Duration::from_millis(self.spec.rates.reconnect_ms));
            }
        }
    }

    fn on_connected(&mut self) {
        {
            let mut s = self.state.lock();
            s.connected = true;
            s.connects += 1;
            s.last_error = None;
        }
        let Some(c) = &self.conn else { return };
        let mut filters = vec![
            self.topic("commands"),
            self.topic("events/ack"),
            self.topic("price/reply"),
        ];
        if self.spec.kind == Kind::Label {
            filters.push("store/prices/changed".into());
        }
        let _ = c.client.try_subscribe_many(
            filters
                .into_iter()
                .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce)),
        );
        let status = json!({"online": true, "firmware": self.spec.firmware}).to_string();
        self.publish_now(&self.topic("status"), status, true);
        // Alerts raised or cleared while away; every unacknowledged event, with its own id.
        let (alerts, clears): (Vec<(String, OpenAlert)>, Vec<String>) = {
            let s = self.state.lock();
            (
                s.alerts
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                self.unsent_clears.iter().cloned().collect(),
            )
        };
        for (code, a) in alerts {
            self.send_alert(&code, Some(&a));
        }
        for code in clears {
            self.send_alert(&code, None);
        }
        self.unsent_clears.clear();
        let ids: Vec<String> = self
            .state
            .lock()
            .pending_events
            .iter()
            .map(|e| e.id.clone())
            .collect();
        for id in ids {
            self.send_event(&id);
        }
    }

    fn connected(&self) -> bool {
        self.conn.is_some() && self.state.lock().connected
    }

    /// Publishes (QoS 1), after the slow-down delay if one is set. False when not connected.
    fn publish(&self, topic: &str, payload: String, retain: bool) -> bool {
        if !self.connected() {
            return false;
        }
        let delay = self.state.lock().delay_ms;
        let Some(c) = &self.conn else { return false };
        if delay == 0 {
            return c
                .client
                .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .is_ok();
        }
        let client = c.client.clone();
        let topic = topic.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let _ = client
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await;
        });
        true
    }

    /// Publishes right after CONNACK (no delay; `connected` is already set).
    fn publish_now(&self, topic: &str, payload: String, retain: bool) {
        if let Some(c) = &self.conn {
            let _ = c
                .client
                .try_publish(topic, QoS::AtLeastOnce, retain, payload);
        }
    }

    // ---- messages from the box --------------------------------------------------------------

    fn on_message(&mut self, topic: &str, v: Value) {
        let own = |leaf: &str| topic == format!("devices/{}/{leaf}", self.spec.id);
        if own("events/ack") {
            self.on_event_ack(v);
        } else if own("commands") {
            self.on_command(v);
        } else if own("price/reply") {
            self.on_price_reply(v);
        } else if topic == "store/prices/changed" {
            self.on_prices_changed(v);
        }
    }

    fn on_event_ack(&mut self, v: Value) {
        let Some(id) = v["id"].as_str() else { return };
        let mut s = self.state.lock();
        let Some(i) = s.pending_events.iter().position(|e| e.id == id) else {
            return;
        };
        if !s.acking {
            s.pending_events[i].acks_ignored += 1;
            return;
        }
        let mut rec = s.pending_events.remove(i);
        rec.status = v["status"].as_str().map(str::to_string);
        if let Some(lane) = s.lane.as_mut() {
            if let Some(last) = lane.last_checkout.as_mut() {
                if last["id"] == rec.id {
                    last["ack"] = json!(rec.status);
                }
            }
        }
        s.recent_events.push_front(rec);
        s.recent_events.truncate(KEEP_RECENT);
    }

    fn on_command(&mut self, v: Value) {
        let Some(id) = v["id"].as_str().map(str::to_string) else {
            return;
        };
        let name = v["name"].as_str().unwrap_or_default().to_string();
        let args = v.get("args").cloned().unwrap_or(json!({}));
        let (acking, jammed, paper) = {
            let mut s = self.state.lock();
            if let Some(c) = s.commands.iter_mut().find(|c| c.id == id) {
                c.received += 1;
            } else {
                s.commands.push_front(CommandRecord {
                    id: id.clone(),
                    name: name.clone(),
                    args: args.clone(),
                    received: 1,
                    acked: false,
                    ok: None,
                    message: None,
                });
                s.commands.truncate(KEEP_RECENT);
            }
            (s.acking, s.jammed, s.readings.get("paper").copied())
        };
        if !acking {
            return;
        }
        let (ok, message, reboot) =
            match kinds::command_effect(self.spec.kind, &name, jammed, paper) {
                CommandEffect::Ack { ok, message } => (ok, message, false),
                CommandEffect::Reboot => (true, "rebooting".to_string(), true),
                CommandEffect::ReloadPaper => {
                    self.set_reading("paper", 1.0);
                    (true, "paper reloaded".to_string(), false)
                }
                CommandEffect::PrintReceipt => {
                    let left = kinds::round3((paper.unwrap_or(0.0) - 0.05).max(0.0));
                    let n = {
                        let mut s = self.state.lock();
                        let p = s.printer.get_or_insert_with(Default::default);
                        p.receipts_printed += 1;
                        p.receipts_printed
                    };
                    let _ =
                        self.enqueue_event("receipt.printed", json!({"command": id, "receipt": n}));
                    self.set_reading("paper", left);
                    (true, format!("receipt {n} printed"), false)
                }
            };
        {
            let mut s = self.state.lock();
            if let Some(c) = s.commands.iter_mut().find(|c| c.id == id) {
                c.acked = true;
                c.ok = Some(ok);
                c.message = Some(message.clone());
            }
        }
        let ack = json!({"id": id, "ok": ok, "message": message}).to_string();
        if reboot {
            // Not delayed: the ack must leave before the session ends.
            self.publish_now(&self.topic("commands/ack"), ack, false);
        } else {
            self.publish(&self.topic("commands/ack"), ack, false);
        }
        if ok && self.spec.kind == Kind::Label && name == "refresh" {
            self.request_label_price();
        }
        self.reboot_pending |= reboot;
    }

    fn on_price_reply(&mut self, v: Value) {
        let sku = v["sku"].as_str().unwrap_or_default().to_string();
        let now = self.now_text();
        let mut s = self.state.lock();
        let jammed = s.jammed;
        if let Some(label) = s.label.as_mut() {
            if label.sku.as_deref() == Some(sku.as_str()) && !jammed {
                label.display = Some(Display {
                    price: v["price"].as_i64(),
                    currency: v["currency"].as_str().map(str::to_string),
                    price_id: v["price_id"].as_str().map(str::to_string),
                    promotions: strings(&v["promotions"]),
                    source: "reply".into(),
                    updated_at: now,
                });
            }
        }
        if let Some(lane) = s.lane.as_mut() {
            if let Some(price) = v["price"].as_i64() {
                for l in lane.basket.iter_mut().filter(|l| l.sku == sku) {
                    l.unit_price = Some(price);
                }
            }
        }
    }

    fn on_prices_changed(&mut self, v: Value) {
        let now = self.now_text();
        let mut s = self.state.lock();
        let jammed = s.jammed;
        let Some(label) = s.label.as_mut() else {
            return;
        };
        let Some(sku) = label.sku.clone() else { return };
        let Some(change) = v["skus"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["sku"] == sku.as_str()))
        else {
            return;
        };
        if jammed {
            label.missed_changes += 1;
            return;
        }
        label.display = Some(Display {
            price: change["price"].as_i64(),
            currency: v["currency"].as_str().map(str::to_string),
            price_id: change["price_id"].as_str().map(str::to_string),
            promotions: strings(&change["promotions"]),
            source: "changed".into(),
            updated_at: now,
        });
    }

    fn request_label_price(&mut self) {
        let sku = self.state.lock().label.as_ref().and_then(|l| l.sku.clone());
        if let Some(sku) = sku {
            self.request_price(&sku);
        }
    }

    fn request_price(&mut self, sku: &str) {
        self.req_seq += 1;
        let body = json!({"req": format!("r-{}", self.req_seq), "sku": sku}).to_string();
        self.publish(&self.topic("price/request"), body, false);
    }

    // ---- events, alerts, telemetry ----------------------------------------------------------

    fn next_event_id(&mut self) -> String {
        self.seq += 1;
        format!("{}-{}-{:06}", self.spec.id, self.spec.run, self.seq)
    }

    /// Queues an event (kept until acked, resent meanwhile) and sends it if connected.
    fn enqueue_event(&mut self, event_type: &str, fields: Value) -> Result<String, Refused> {
        if self.state.lock().pending_events.len() >= MAX_PENDING {
            return Err(refused(
                409,
                "too_many_pending",
                format!("{MAX_PENDING} events already wait for an ack"),
            ));
        }
        let id = self.next_event_id();
        let mut payload = json!({"id": id, "type": event_type});
        if let (Some(p), Some(f)) = (payload.as_object_mut(), fields.as_object()) {
            for (k, v) in f {
                p.insert(k.clone(), v.clone());
            }
        }
        self.state.lock().pending_events.push(EventRecord {
            id: id.clone(),
            event_type: event_type.to_string(),
            payload,
            sends: 0,
            acks_ignored: 0,
            status: None,
            last_sent: None,
        });
        self.send_event(&id);
        Ok(id)
    }

    fn send_event(&mut self, id: &str) {
        if !self.connected() {
            return;
        }
        let payload = {
            let s = self.state.lock();
            let Some(e) = s.pending_events.iter().find(|e| e.id == id) else {
                return;
            };
            e.payload.to_string()
        };
        if self.publish(&self.topic("events"), payload, false) {
            let mut s = self.state.lock();
            s.events_sent += 1;
            if let Some(e) = s.pending_events.iter_mut().find(|e| e.id == id) {
                e.sends += 1;
                e.last_sent = Some(Instant::now());
            }
        }
    }

    fn resend_due(&mut self) {
        if !self.connected() {
            return;
        }
        let every = Duration::from_millis(self.spec.rates.resend_ms);
        let now = Instant::now();
        let due: Vec<String> = self
            .state
            .lock()
            .pending_events
            .iter()
            .filter(|e| e.last_sent.is_none_or(|t| now.duration_since(t) >= every))
            .map(|e| e.id.clone())
            .collect();
        for id in due {
            self.send_event(&id);
        }
    }

    fn send_alert(&self, code: &str, open: Option<&OpenAlert>) -> bool {
        let body = match open {
            Some(a) => json!({"code": code, "severity": a.severity, "message": a.message}),
            None => json!({"code": code, "state": "cleared"}),
        };
        self.publish(&self.topic("alerts"), body.to_string(), false)
    }

    fn raise(&mut self, code: &str, severity: &str, message: &str) {
        let a = OpenAlert {
            severity: severity.into(),
            message: message.into(),
        };
        self.state.lock().alerts.insert(code.to_string(), a.clone());
        self.unsent_clears.remove(code);
        self.send_alert(code, Some(&a));
    }

    fn clear(&mut self, code: &str) -> bool {
        if self.state.lock().alerts.remove(code).is_none() {
            return false;
        }
        if !self.send_alert(code, None) {
            self.unsent_clears.insert(code.to_string());
        }
        true
    }

    fn send_telemetry(&mut self) {
        let metrics = self.state.lock().readings.clone();
        if metrics.is_empty() {
            return;
        }
        let body = json!({"ts": self.now_text(), "metrics": metrics}).to_string();
        if self.publish(&self.topic("telemetry"), body, false) {
            self.state.lock().telemetry_sent += 1;
        }
    }

    /// Raises or clears the alerts readings call for; a label whose battery reached 0 dies.
    fn apply_thresholds(&mut self) {
        let readings = self.state.lock().readings.clone();
        for t in kinds::thresholds(self.spec.kind, &readings) {
            let is_open = self.state.lock().alerts.contains_key(t.code);
            match (t.open, is_open) {
                (Some((sev, msg)), false) => self.raise(t.code, sev, &msg),
                (None, true) => {
                    self.clear(t.code);
                }
                _ => {}
            }
        }
        if self.spec.kind == Kind::Label && readings.get("battery").is_some_and(|b| *b <= 0.0) {
            // A dead battery: the label just disappears (the box publishes its will).
            self.state.lock().online = false;
            self.conn = None;
            self.subscribed = false;
            self.state.lock().connected = false;
        }
    }

    fn set_reading(&mut self, metric: &str, value: f64) {
        self.state.lock().readings.insert(metric.to_string(), value);
        self.apply_thresholds();
        self.send_telemetry();
    }

    fn telemetry_period(&mut self) {
        let (jammed, door) = {
            let s = self.state.lock();
            (s.jammed, s.fridge.as_ref().is_some_and(|f| f.door_open))
        };
        {
            let mut s = self.state.lock();
            kinds::drift(self.spec.kind, &mut s.readings, jammed, door, &mut self.rng);
        }
        self.apply_thresholds();
        self.send_telemetry();
    }

    // ---- kind behaviours --------------------------------------------------------------------

    fn pick(&mut self, kg_only: bool) -> Option<CatalogEntry> {
        let pool = self.spec.pool.clone();
        let choices: Vec<&CatalogEntry> =
            pool.iter().filter(|e| !kg_only || e.unit == "kg").collect();
        choices.choose(&mut self.rng).map(|e| (*e).clone())
    }

    fn scan(&mut self, sku: Option<String>, quantity: Option<i64>) -> Result<Value, Refused> {
        if self.state.lock().jammed {
            return Err(refused(409, "jammed", "the scanner is jammed"));
        }
        let entry = match sku {
            Some(s) => self
                .spec
                .pool
                .iter()
                .find(|e| e.sku == s)
                .cloned()
                .unwrap_or(CatalogEntry {
                    sku: s,
                    name: String::new(),
                    department: None,
                    unit: "each".into(),
                }),
            None => self
                .pick(false)
                .ok_or_else(|| refused(409, "no_items", "the lane knows no catalog items"))?,
        };
        let quantity = match quantity {
            Some(q) if q >= 1 => q,
            Some(_) => {
                return Err(refused(
                    400,
                    "bad_quantity",
                    "field \"quantity\" must be ≥ 1",
                ))
            }
            None if entry.unit == "kg" => self.rng.random_range(150..=1500),
            None => self.rng.random_range(1..=3),
        };
        let line = Line {
            sku: entry.sku.clone(),
            quantity,
            unit_price: None,
            unit: entry.unit.clone(),
        };
        self.state
            .lock()
            .lane
            .get_or_insert_with(Default::default)
            .basket
            .push(line.clone());
        self.request_price(&entry.sku);
        Ok(json!(line))
    }

    async fn auto_scan(&mut self, elapsed_ms: u64) {
        if !self.connected() || self.state.lock().jammed {
            return;
        }
        let rates = &self.spec.rates;
        let paced = rates.customer_gap_ms > 0;
        if paced && self.next_customer.is_some_and(|t| Instant::now() < t) {
            return; // between customers
        }
        let rush = kinds::in_rush(elapsed_ms, rates.rush_every_ms, rates.rush_ms);
        if paced && self.basket_target == 0 {
            self.basket_target = kinds::basket_size(rates.basket_items, rush, &mut self.rng);
        }
        let target = if paced {
            self.basket_target
        } else {
            rates.basket_items
        };
        let _ = self.scan(None, None);
        let full = self
            .state
            .lock()
            .lane
            .as_ref()
            .is_some_and(|l| l.basket.len() >= target as usize);
        if full {
            if let Err(e) = self.checkout().await {
                tracing::warn!(device = %self.spec.id, error = %e.message, "automatic checkout failed");
            }
            if paced {
                let gap =
                    kinds::customer_gap_ms(self.spec.rates.customer_gap_ms, rush, &mut self.rng);
                self.next_customer = Some(Instant::now() + Duration::from_millis(gap));
                self.basket_target = 0;
            }
        }
    }

    /// A door left ajar now and then (`Rates::fridge_incident_every_ms`), closed again later.
    fn fridge_incidents(&mut self, now: Instant) {
        let rates = &self.spec.rates;
        match (self.incident_until, self.next_incident) {
            (Some(until), _) if now >= until => {
                self.incident_until = None;
                let next = kinds::fridge_incident_in_ms(
                    rates.fridge_incident_every_ms,
                    false,
                    &mut self.rng,
                );
                self.next_incident = Some(now + Duration::from_millis(next));
                let _ = self.door(false);
            }
            (Some(_), _) => {}
            (None, None) => {
                let next = kinds::fridge_incident_in_ms(
                    rates.fridge_incident_every_ms,
                    true,
                    &mut self.rng,
                );
                self.next_incident = Some(now + Duration::from_millis(next));
            }
            (None, Some(at)) if now >= at => {
                if self.connected() {
                    let lasts = kinds::fridge_incident_ms(rates.telemetry_ms.max(1), &mut self.rng);
                    self.incident_until = Some(now + Duration::from_millis(lasts));
                    let _ = self.door(true);
                }
            }
            (None, Some(_)) => {}
        }
    }

    /// Prices the basket (through the box's API when online with a token, else from the MQTT
    /// price replies), then queues a `checkout.completed` event.
    async fn checkout(&mut self) -> Result<Value, Refused> {
        let basket = self
            .state
            .lock()
            .lane
            .as_ref()
            .map(|l| l.basket.clone())
            .unwrap_or_default();
        if basket.is_empty() {
            return Err(refused(409, "empty_basket", "nothing scanned"));
        }
        let mut fields = if self.connected() && self.spec.api.has_token() {
            let lines: Vec<(String, i64)> =
                basket.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
            let priced = self
                .spec
                .api
                .price_basket(&lines)
                .await
                .map_err(|e| refused(502, "pricing_failed", e.to_string()))?;
            json!({
                "lines": priced["lines"], "regular": priced["regular"], "discount": priced["discount"],
                "total": priced["total"], "currency": priced["currency"], "priced_at": priced["priced_at"],
            })
        } else {
            let mut lines = Vec::new();
            let mut total = 0;
            for l in &basket {
                let Some(p) = l.unit_price else {
                    return Err(refused(
                        409,
                        "not_priced",
                        format!(
                            "no price known for sku {} (offline and no price reply)",
                            l.sku
                        ),
                    ));
                };
                let t = if l.unit == "kg" {
                    kinds::kg_line(p, l.quantity)
                } else {
                    p * l.quantity
                };
                total += t;
                lines.push(
                    json!({"sku": l.sku, "quantity": l.quantity, "unit_price": p, "total": t}),
                );
            }
            json!({"lines": lines, "total": total})
        };
        let checkout_id = format!("c-{}-{}-{}", self.spec.id, self.spec.run, self.seq + 1);
        fields["checkout_id"] = json!(checkout_id);
        fields["lane"] = json!(self.spec.id);
        let id = self.enqueue_event("checkout.completed", fields)?;
        let mut s = self.state.lock();
        let event = s
            .pending_events
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.payload.clone())
            .unwrap_or_default();
        let lane = s.lane.get_or_insert_with(Default::default);
        lane.basket.clear();
        lane.checkouts += 1;
        lane.last_checkout = Some(event.clone());
        Ok(event)
    }

    fn weigh(&mut self, sku: Option<String>, grams: Option<i64>) -> Result<Value, Refused> {
        if self.state.lock().jammed {
            return Err(refused(409, "jammed", "the scale is jammed"));
        }
        let sku = match sku {
            Some(s) => s,
            None => {
                self.pick(true)
                    .ok_or_else(|| refused(409, "no_items", "the scale knows no kg items"))?
                    .sku
            }
        };
        let grams = match grams {
            Some(g) if g >= 1 => g,
            Some(_) => return Err(refused(400, "bad_grams", "field \"grams\" must be ≥ 1")),
            None => self.rng.random_range(100..=2500),
        };
        let id = self.enqueue_event("scale.weighed", json!({"sku": sku, "grams": grams}))?;
        let event = json!({"id": id, "sku": sku, "grams": grams});
        self.state
            .lock()
            .scale
            .get_or_insert_with(Default::default)
            .last_weighed = Some(event.clone());
        self.state
            .lock()
            .readings
            .insert("load_g".into(), grams as f64);
        self.send_telemetry();
        Ok(event)
    }

    fn door(&mut self, open: bool) -> Result<Value, Refused> {
        let was = {
            let mut s = self.state.lock();
            let f = s.fridge.get_or_insert_with(Default::default);
            std::mem::replace(&mut f.door_open, open)
        };
        if was == open {
            return Ok(json!({"door_open": open, "changed": false}));
        }
        let id = self.enqueue_event(if open { "door.opened" } else { "door.closed" }, json!({}))?;
        if open {
            self.raise("DOOR_OPEN", "warning", "Door open");
        } else {
            self.clear("DOOR_OPEN");
        }
        Ok(json!({"door_open": open, "changed": true, "event": id}))
    }

    // ---- control ----------------------------------------------------------------------------

    fn state_json(&self) -> Value {
        serde_json::to_value(&*self.state.lock()).unwrap_or_default()
    }

    fn require_kind(&self, kinds: &[Kind], action: &str) -> Result<(), Refused> {
        if kinds.contains(&self.spec.kind) {
            Ok(())
        } else {
            Err(refused(
                409,
                "wrong_kind",
                format!(
                    "{action} is for {}; {} is a {}",
                    kinds
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join("/"),
                    self.spec.id,
                    self.spec.kind.as_str()
                ),
            ))
        }
    }

    async fn act(&mut self, action: Action) -> Result<Value, Refused> {
        match action {
            Action::Online => {
                self.state.lock().online = true;
                self.reconnect_at = None;
                if self.conn.is_none() {
                    self.connect();
                }
            }
            Action::Offline { graceful } => {
                self.state.lock().online = false;
                self.disconnect(graceful).await;
            }
            Action::Raise {
                code,
                severity,
                message,
            } => self.raise(&code, &severity, &message),
            Action::Clear { code } => {
                if !self.clear(&code) {
                    return Err(refused(
                        404,
                        "no_such_alert",
                        format!("alert {code:?} is not open on {}", self.spec.id),
                    ));
                }
            }
            Action::Reading { metric, value } => self.set_reading(&metric, value),
            Action::Jam(jam) => {
                let (code, message) = self.spec.kind.jam_alert();
                let was = std::mem::replace(&mut self.state.lock().jammed, jam);
                if jam && !was {
                    self.raise(code, "warning", message);
                } else if !jam && was {
                    self.clear(code);
                    if self.spec.kind == Kind::Label {
                        self.request_label_price();
                    }
                }
            }
            Action::Burst { count, events } => {
                let ty = self.spec.kind.burst_event_type();
                for i in 0..count {
                    if events {
                        let fields = match self.spec.kind {
                            Kind::Scale => json!({"sku": "burst", "grams": i + 1}),
                            _ => json!({"burst": i}),
                        };
                        self.enqueue_event(ty, fields)?;
                    } else {
                        self.state
                            .lock()
                            .readings
                            .entry("burst".into())
                            .and_modify(|v| *v += 1.0)
                            .or_insert(1.0);
                        self.send_telemetry();
                    }
                }
                let mut s = self.state.lock();
                s.readings.remove("burst");
                drop(s);
                return Ok(
                    json!({"sent": count, "what": if events { "events" } else { "telemetry" }}),
                );
            }
            Action::Acking(on) => self.state.lock().acking = on,
            Action::Slow(ms) => self.state.lock().delay_ms = ms,
            Action::Scan { sku, quantity } => {
                self.require_kind(&[Kind::Lane], "scan")?;
                return self.scan(sku, quantity);
            }
            Action::Checkout => {
                self.require_kind(&[Kind::Lane], "checkout")?;
                return self.checkout().await;
            }
            Action::Weigh { sku, grams } => {
                self.require_kind(&[Kind::Scale], "weigh")?;
                return self.weigh(sku, grams);
            }
            Action::Door(open) => {
                self.require_kind(&[Kind::Fridge], "door")?;
                return self.door(open);
            }
            Action::Shutdown => {}
        }
        Ok(self.state_json())
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
