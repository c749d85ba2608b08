//! The support desk: tickets from every store in one queue (status, age, store, category, team,
//! assignee, last reply), one ticket with its diagnostics and its record of changes, assigning and
//! closing, and the routing of new tickets by category to a team (rules and teams are edited by
//! admins). Replies go through the existing `POST /hq/v1/tickets/{id}/replies`, which records who
//! replied; closing is a reply with status `closed`, so the store learns of it too.

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::{HqError, HqResult};
use super::server::{json_body, require, HqState};
use super::storage::{HqRole, TicketReply};
use crate::proto::events::TICKET_CATEGORIES;

/// Largest page of the queue (`limit`); the default is 50.
pub const MAX_PAGE: i64 = 200;
/// Deepest `offset` into the queue.
pub const MAX_OFFSET: i64 = 10_000;
/// Bounds of `PUT /hq/v1/desk/teams`.
pub const MAX_TEAMS: usize = 100;
pub const MAX_MEMBERS: usize = 100;
/// Longest search text, webhook URL and e-mail address.
const MAX_Q: usize = 200;
const MAX_URL: usize = 2048;
const MAX_EMAIL: usize = 254;

pub const STATUSES: [&str; 3] = ["open", "answered", "closed"];

/// Queue filters (`GET /hq/v1/desk/tickets`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeskQuery {
    pub status: Option<String>,
    pub store: Option<String>,
    pub category: Option<String>,
    pub team: Option<String>,
    /// A user name, or `none` for unassigned tickets.
    pub assignee: Option<String>,
    /// Text searched in the subject and ticket id (case-insensitive).
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl DeskQuery {
    /// Empty filters dropped, every filter checked, page bounds applied.
    pub fn checked(mut self) -> HqResult<DeskQuery> {
        for f in [
            &mut self.status,
            &mut self.store,
            &mut self.category,
            &mut self.team,
            &mut self.assignee,
            &mut self.q,
        ] {
            if f.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *f = None;
            }
        }
        if let Some(s) = &self.status {
            if !STATUSES.contains(&s.as_str()) {
                return Err(HqError::invalid(
                    "bad_query",
                    format!("status {s:?} is not one of {}", STATUSES.join(", ")),
                ));
            }
        }
        if let Some(c) = &self.category {
            check_category(c, "category")?;
        }
        if self.q.as_ref().is_some_and(|q| q.chars().count() > MAX_Q) {
            return Err(HqError::invalid(
                "bad_query",
                format!("q is longer than {MAX_Q} characters"),
            ));
        }
        let limit = self.limit.unwrap_or(50);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(HqError::invalid(
                "bad_query",
                format!("limit {limit} is not within 1-{MAX_PAGE}"),
            ));
        }
        let offset = self.offset.unwrap_or(0);
        if !(0..=MAX_OFFSET).contains(&offset) {
            return Err(HqError::invalid(
                "bad_query",
                format!("offset {offset} is not within 0-{MAX_OFFSET}"),
            ));
        }
        self.limit = Some(limit);
        self.offset = Some(offset);
        Ok(self)
    }
}

/// One ticket in the queue.
#[derive(Debug, Clone, Serialize)]
pub struct DeskTicket {
    pub id: String,
    pub store: String,
    pub subject: String,
    pub category: String,
    pub status: String,
    pub team: Option<String>,
    pub assignee: Option<String>,
    #[serde(skip)]
    pub opened_ms: i64,
    pub opened_at: String,
    /// Seconds since HQ received it (set by the HTTP layer from its clock).
    pub age_seconds: i64,
    pub last_reply: Option<LastReply>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastReply {
    pub author: String,
    pub at: String,
}

/// One recorded desk change: who did what to the ticket, when.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub actor: String,
    /// `routed`, `assigned`, `unassigned`, `replied`, `closed` (replies come from the replies).
    pub action: String,
    pub detail: Option<String>,
    pub at: String,
}

/// One ticket with everything the desk shows.
#[derive(Debug, Clone, Serialize)]
pub struct DeskDetail {
    #[serde(flatten)]
    pub ticket: DeskTicket,
    /// The `ticket.opened` payload as the store sent it (description, diagnostics…).
    pub opened: Value,
    pub replies: Vec<Value>,
    /// Routing, assignments, replies and closing, oldest first.
    pub changes: Vec<Change>,
}

/// A stored reply, as an engine reads it.
pub struct ReplyRow {
    pub event_id: String,
    pub author: String,
    pub message: String,
    pub status: Option<String>,
    pub at_ms: i64,
}

/// A stored desk change, as an engine reads it.
pub struct ChangeRow {
    pub actor: String,
    pub action: String,
    pub detail: Option<String>,
    pub at_ms: i64,
}

/// Assembles one ticket's view (pure): replies become `replied` (or `closed`/`reopened`) changes,
/// merged with the recorded ones by time.
pub fn detail(
    ticket: DeskTicket,
    opened: Value,
    replies: Vec<ReplyRow>,
    changes: Vec<ChangeRow>,
) -> DeskDetail {
    let ts = |ms: i64| crate::db::ts_from_ms(ms).to_string();
    let mut all: Vec<(i64, Change)> = changes
        .into_iter()
        .map(|c| {
            (
                c.at_ms,
                Change {
                    actor: c.actor,
                    action: c.action,
                    detail: c.detail,
                    at: ts(c.at_ms),
                },
            )
        })
        .collect();
    let mut out_replies = Vec::with_capacity(replies.len());
    for r in replies {
        let action = match r.status.as_deref() {
            Some("closed") => "closed",
            Some("open") => "reopened",
            _ => "replied",
        };
        all.push((
            r.at_ms,
            Change {
                actor: r.author.clone(),
                action: action.into(),
                detail: Some(r.message.clone()),
                at: ts(r.at_ms),
            },
        ));
        out_replies.push(json!({
            "event_id": r.event_id,
            "author": r.author,
            "message": r.message,
            "status": r.status,
            "at": ts(r.at_ms),
        }));
    }
    all.sort_by_key(|(at, _)| *at);
    DeskDetail {
        ticket,
        opened,
        replies: out_replies,
        changes: all.into_iter().map(|(_, c)| c).collect(),
    }
}

/// The category a `ticket.opened` payload names (`other` when absent or unknown).
pub fn category_of(payload: &Value) -> &str {
    payload
        .get("category")
        .and_then(Value::as_str)
        .filter(|c| TICKET_CATEGORIES.contains(c))
        .unwrap_or("other")
}

/// A routing rule: tickets of `category` go to `team`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub category: String,
    pub team: String,
}

/// A support team: its members (HQ user names) and the one on call, notified of new tickets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Team {
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub on_call: Option<String>,
    /// Generic JSON webhook for the on-call notification.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Where the on-call notification is mailed.
    #[serde(default)]
    pub email: Option<String>,
}

fn check_category(c: &str, what: &str) -> HqResult<()> {
    if TICKET_CATEGORIES.contains(&c) {
        Ok(())
    } else {
        Err(HqError::invalid(
            "bad_query",
            format!(
                "{what} {c:?} is not one of {}",
                TICKET_CATEGORIES.join(", ")
            ),
        ))
    }
}

/// Checks teams (pure): names, members, on-call among members, URL and address shapes, bounds.
pub fn check_teams(teams: &[Team]) -> HqResult<()> {
    let bad = |m: String| Err(HqError::invalid("invalid_team", m));
    if teams.len() > MAX_TEAMS {
        return bad(format!("more than {MAX_TEAMS} teams"));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, t) in teams.iter().enumerate() {
        let at = format!("teams[{i}]");
        if let Err(m) = crate::proto::check_name("team name", &t.name) {
            return bad(format!("{at}.name: {m}"));
        }
        if !seen.insert(t.name.as_str()) {
            return bad(format!("{at}.name: team {:?} appears twice", t.name));
        }
        if t.members.len() > MAX_MEMBERS {
            return bad(format!("{at}.members: more than {MAX_MEMBERS}"));
        }
        if let Some(m) = t
            .members
            .iter()
            .find(|m| m.trim().is_empty() || m.len() > 64)
        {
            return bad(format!("{at}.members: {m:?} is not a user name"));
        }
        if let Some(o) = &t.on_call {
            if !t.members.contains(o) {
                return bad(format!("{at}.on_call: {o:?} is not a member of the team"));
            }
        }
        if let Some(u) = &t.webhook_url {
            let ok = (u.starts_with("http://") || u.starts_with("https://"))
                && u.len() <= MAX_URL
                && !u.contains(char::is_whitespace);
            if !ok {
                return bad(format!(
                    "{at}.webhook_url: {u:?} is not an http(s) URL of at most {MAX_URL} bytes"
                ));
            }
        }
        if let Some(e) = &t.email {
            let ok = e.len() <= MAX_EMAIL
                && e.split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
                && !e.contains(char::is_whitespace);
            if !ok {
                return bad(format!("{at}.email: {e:?} is not an e-mail address"));
            }
        }
    }
    Ok(())
}

/// Checks routing rules (pure) against the known team names: one rule per category at most.
pub fn check_routing(routes: &[Route], teams: &[Team]) -> HqResult<()> {
    let bad = |m: String| Err(HqError::invalid("invalid_route", m));
    let mut seen = std::collections::HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        if !TICKET_CATEGORIES.contains(&r.category.as_str()) {
            return bad(format!(
                "routes[{i}].category: {:?} is not one of {}",
                r.category,
                TICKET_CATEGORIES.join(", ")
            ));
        }
        if !seen.insert(r.category.as_str()) {
            return bad(format!(
                "routes[{i}].category: {:?} appears twice",
                r.category
            ));
        }
        if !teams.iter().any(|t| t.name == r.team) {
            return bad(format!(
                "routes[{i}].team: no team {:?} (define it with PUT /hq/v1/desk/teams)",
                r.team
            ));
        }
    }
    Ok(())
}

/// One notification of a team's on-call member about a routed ticket, and how its delivery went.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub id: i64,
    pub store: String,
    pub ticket: String,
    pub team: String,
    /// `webhook` or `email`.
    pub channel: String,
    /// The webhook URL or the e-mail address.
    pub target: String,
    /// What is sent: `{"ticket","store","category","subject","url","team","on_call"}`.
    pub payload: Value,
    /// `pending`, `sent` or `failed` (attempts used up).
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_at: Option<String>,
    pub sent_at: Option<String>,
    pub created_at: String,
}

/// What a new ticket's notification says (`url`: the ticket on HQ, a path until the sender
/// prefixes `[hq_server] public_url`).
pub fn notification_payload(
    store: &str,
    ticket: &str,
    category: &str,
    subject: &str,
    team: &str,
    on_call: &str,
) -> Value {
    json!({
        "ticket": ticket,
        "store": store,
        "category": category,
        "subject": subject,
        "url": format!("/#/desk/{}/{}", encode(store), encode(ticket)),
        "team": team,
        "on_call": on_call,
    })
}

/// Percent-encodes all but unreserved URL characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// When the next attempt is due after `attempts` failed ones (pure): `base` seconds after the
/// first, doubling each time; None once `max_attempts` are used up.
pub fn next_attempt_ms(
    now_ms: i64,
    attempts: i64,
    max_attempts: u32,
    base_secs: u64,
) -> Option<i64> {
    if attempts >= i64::from(max_attempts) {
        return None;
    }
    let factor = 1i64 << (attempts - 1).clamp(0, 20);
    Some(
        now_ms
            + (base_secs as i64)
                .saturating_mul(1000)
                .saturating_mul(factor),
    )
}

/// How the sender is set up (`[hq_server]` desk keys).
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub public_url: String,
    pub max_attempts: u32,
    pub retry_base_secs: u64,
    pub webhook_timeout: std::time::Duration,
    /// How often due notifications are looked for.
    pub poll: std::time::Duration,
    pub smtp: Option<SmtpSettings>,
}

/// `[hq_server] smtp_*`, read at start.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: String,
    pub from: String,
    pub credentials: Option<(String, String)>,
}

type Mailer = lettre::AsyncSmtpTransport<lettre::Tokio1Executor>;

fn mailer(s: &SmtpSettings, timeout: std::time::Duration) -> Result<Mailer, String> {
    use lettre::AsyncSmtpTransport;
    let b = match s.tls.as_str() {
        "none" => AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(&s.host),
        "starttls" => AsyncSmtpTransport::<lettre::Tokio1Executor>::starttls_relay(&s.host)
            .map_err(|e| format!("smtp_host {:?}: {e}", s.host))?,
        "tls" => AsyncSmtpTransport::<lettre::Tokio1Executor>::relay(&s.host)
            .map_err(|e| format!("smtp_host {:?}: {e}", s.host))?,
        other => {
            return Err(format!(
                "smtp_tls {other:?} is not one of none, starttls, tls"
            ))
        }
    };
    let mut b = b.port(s.port).timeout(Some(timeout));
    if let Some((u, p)) = &s.credentials {
        b = b.credentials(lettre::transport::smtp::authentication::Credentials::new(
            u.clone(),
            p.clone(),
        ));
    }
    Ok(b.build())
}

/// Mails one notification (plain text) through the configured SMTP server.
async fn send_mail(
    mailer: Option<&(Mailer, SmtpSettings)>,
    public_url: &str,
    n: &Notification,
) -> Result<(), String> {
    use lettre::AsyncTransport;
    let Some((mailer, s)) = mailer else {
        return Err("no SMTP server is configured ([hq_server] smtp_host)".into());
    };
    let p = &n.payload;
    let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let url = format!("{}{}", public_url.trim_end_matches('/'), text("url"));
    let body = format!(
        "A new {} ticket from store {} was routed to team {}.\n\nSubject: {}\nTicket: {}\nOpen it: {}\n",
        text("category"),
        text("store"),
        text("team"),
        text("subject"),
        text("ticket"),
        url
    );
    let msg = lettre::Message::builder()
        .from(
            s.from
                .parse()
                .map_err(|e| format!("smtp_from {:?}: {e}", s.from))?,
        )
        .to(n
            .target
            .parse()
            .map_err(|e| format!("address {:?}: {e}", n.target))?)
        .subject(format!(
            "[storebox] Ticket from {}: {}",
            text("store"),
            text("subject")
        ))
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| format!("cannot build the message: {e}"))?;
    mailer
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP: {e}"))
}

/// Notifications claimed per round.
const CLAIM_BATCH: i64 = 16;

/// The background sender: claims due notifications (a lease, so one node sends each), posts each
/// webhook with a bounded time and records the outcome; failures are retried with back-off.
pub async fn run_notifier(
    storage: super::storage::Storage,
    clock: crate::clock::SharedClock,
    cfg: NotifierConfig,
) {
    let client = match reqwest::Client::builder()
        .timeout(cfg.webhook_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "desk notifier: no HTTP client; notifications are not sent");
            return;
        }
    };
    let lease_ms = cfg.webhook_timeout.as_millis() as i64 + 30_000;
    let smtp = match &cfg.smtp {
        None => None,
        Some(s) => match mailer(s, cfg.webhook_timeout) {
            Ok(m) => Some((m, s.clone())),
            Err(e) => {
                tracing::error!(error = %e, "desk notifier: e-mail is not sent");
                None
            }
        },
    };
    loop {
        let now = clock.now().as_millisecond();
        match storage
            .claim_notifications(now, lease_ms, CLAIM_BATCH)
            .await
        {
            Ok(batch) => {
                for n in batch {
                    let outcome = match n.channel.as_str() {
                        "email" => send_mail(smtp.as_ref(), &cfg.public_url, &n).await,
                        _ => send_webhook(&client, &cfg.public_url, &n).await,
                    };
                    let attempts = n.attempts + 1;
                    let now = clock.now().as_millisecond();
                    let next = match &outcome {
                        Ok(()) => None,
                        Err(_) => {
                            next_attempt_ms(now, attempts, cfg.max_attempts, cfg.retry_base_secs)
                        }
                    };
                    if let Err(e) = &outcome {
                        tracing::warn!(id = n.id, ticket = %n.ticket, attempts, error = %e, "desk notification failed");
                    }
                    if let Err(e) = storage
                        .finish_notification(n.id, attempts, outcome, next, now)
                        .await
                    {
                        tracing::error!(id = n.id, error = %e, "desk notification: cannot record the outcome");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "desk notifier: cannot claim notifications"),
        }
        tokio::time::sleep(cfg.poll).await;
    }
}

/// Posts one webhook; any status but 2xx is a failure naming it. The response body is not read.
async fn send_webhook(
    client: &reqwest::Client,
    public_url: &str,
    n: &Notification,
) -> Result<(), String> {
    let mut body = n.payload.clone();
    if let Some(path) = body.get("url").and_then(Value::as_str) {
        body["url"] = Value::String(format!("{}{path}", public_url.trim_end_matches('/')));
    }
    let r = client
        .post(&n.target)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("POST failed: {e}"))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {}", r.status()))
    }
}

/// Who may work the desk (admin always may).
const DESK: &[HqRole] = &[HqRole::Support, HqRole::Operator];

pub fn routes() -> Router<HqState> {
    Router::new()
        .route("/hq/v1/desk/tickets", get(queue))
        .route("/hq/v1/desk/tickets/{id}", get(ticket))
        .route("/hq/v1/desk/tickets/{id}/assign", post(assign))
        .route("/hq/v1/desk/tickets/{id}/close", post(close))
        .route("/hq/v1/desk/routing", get(routing).put(put_routing))
        .route("/hq/v1/desk/teams", get(teams).put(put_teams))
        .route("/hq/v1/desk/notifications", get(notifications))
        .route("/hq/v1/guides/preview", post(guide_preview))
        .route("/hq/v1/guides", get(guides))
}

/// Most guides listed (HQ writes tens, not thousands; each may have several targets).
const MAX_GUIDE_ROWS: i64 = 2000;

/// The live support guides, by id, each with the targets it was published for and the newest
/// version's payload (`GET /hq/v1/guides`, every signed-in role).
async fn guides(State(state): State<HqState>, headers: HeaderMap) -> HqResult<Response> {
    require(
        &state,
        &Method::GET,
        &headers,
        &[HqRole::Operator, HqRole::Support],
        "support guides",
    )
    .await?;
    let rows = state.storage.guides(MAX_GUIDE_ROWS).await?;
    Ok(Json(json!({ "guides": group_guides(rows) })).into_response())
}

/// Rows (one per guide and target, ordered by id) to one entry per guide: the payload of its
/// newest publication plus every target.
fn group_guides(rows: Vec<super::storage::GuideRow>) -> Vec<Value> {
    let mut out: Vec<(i64, Value)> = Vec::new();
    for r in rows {
        let id = r.payload["id"].as_str().unwrap_or_default().to_string();
        let target = if r.kind == "all" {
            json!({"all": true})
        } else {
            json!({"kind": r.kind, "name": r.name})
        };
        match out.last_mut() {
            Some((seq, g)) if g["id"] == id.as_str() => {
                if r.seq > *seq {
                    let targets = g["targets"].take();
                    *g = r.payload.clone();
                    g["targets"] = targets;
                    *seq = r.seq;
                }
                if let Some(t) = g["targets"].as_array_mut() {
                    t.push(target);
                }
            }
            _ => {
                let mut g = r.payload.clone();
                g["targets"] = json!([target]);
                out.push((r.seq, g));
            }
        }
    }
    out.into_iter().map(|(_, g)| g).collect()
}

fn aged(mut t: DeskTicket, now_ms: i64) -> DeskTicket {
    t.age_seconds = ((now_ms - t.opened_ms) / 1000).max(0);
    t
}

async fn queue(
    State(state): State<HqState>,
    headers: HeaderMap,
    Query(q): Query<DeskQuery>,
) -> HqResult<Response> {
    require(&state, &Method::GET, &headers, DESK, "the support desk").await?;
    let q = q.checked()?;
    let now = state.now_ms();
    let list: Vec<DeskTicket> = state
        .storage
        .desk_tickets(&q)
        .await?
        .into_iter()
        .map(|t| aged(t, now))
        .collect();
    Ok(Json(json!({"tickets": list, "limit": q.limit, "offset": q.offset})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreQuery {
    #[serde(default)]
    store: Option<String>,
}

async fn ticket(
    State(state): State<HqState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<StoreQuery>,
) -> HqResult<Response> {
    require(&state, &Method::GET, &headers, DESK, "the support desk").await?;
    let mut d = state.storage.desk_ticket(q.store.as_deref(), &id).await?;
    d.ticket = aged(d.ticket, state.now_ms());
    Ok(Json(d).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignRequest {
    /// An HQ user name; null unassigns.
    user: Option<String>,
}

async fn assign(
    State(state): State<HqState>,
    Path(id): Path<String>,
    Query(q): Query<StoreQuery>,
    req: Request,
) -> HqResult<Response> {
    let caller = require(
        &state,
        req.method(),
        req.headers(),
        DESK,
        "assigning tickets",
    )
    .await?;
    let r: AssignRequest = json_body(req).await?;
    if let Some(u) = &r.user {
        if state.storage.user(u).await?.is_none() {
            return Err(HqError::invalid(
                "unknown_user",
                format!("user: no HQ user {u:?}"),
            ));
        }
    }
    state
        .storage
        .desk_assign(
            q.store.as_deref(),
            &id,
            r.user.as_deref(),
            &caller.name,
            state.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CloseRequest {
    #[serde(default)]
    message: Option<String>,
}

/// Closing is a reply with status `closed`: recorded with who and when, and sent to the store.
async fn close(
    State(state): State<HqState>,
    Path(id): Path<String>,
    Query(q): Query<StoreQuery>,
    req: Request,
) -> HqResult<Response> {
    let caller = require(&state, req.method(), req.headers(), DESK, "closing tickets").await?;
    let empty = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .is_some_and(|v| v == "0");
    let r: CloseRequest = if empty {
        CloseRequest::default()
    } else {
        json_body(req).await?
    };
    let reply = TicketReply {
        event_id: super::new_event_id("reply"),
        author: caller.name,
        message: r
            .message
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| "HQ support closed this ticket.".into()),
        status: Some("closed".into()),
    };
    super::reply_event(&id, &reply)?;
    let seq = state
        .storage
        .reply(q.store.as_deref(), &id, reply, state.now_ms())
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"seq": seq}))).into_response())
}

async fn routing(State(state): State<HqState>, headers: HeaderMap) -> HqResult<Response> {
    require(&state, &Method::GET, &headers, DESK, "desk routing").await?;
    let routes = state.storage.desk_routing().await?;
    Ok(Json(json!({"routes": routes, "categories": TICKET_CATEGORIES})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingBody {
    routes: Vec<Route>,
}

async fn put_routing(State(state): State<HqState>, req: Request) -> HqResult<Response> {
    require(
        &state,
        req.method(),
        req.headers(),
        &[HqRole::Admin],
        "editing desk routing",
    )
    .await?;
    let b: RoutingBody = json_body(req).await?;
    let teams = state.storage.desk_teams().await?;
    check_routing(&b.routes, &teams)?;
    state.storage.put_desk_routing(b.routes).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn teams(State(state): State<HqState>, headers: HeaderMap) -> HqResult<Response> {
    require(&state, &Method::GET, &headers, DESK, "desk teams").await?;
    let teams = state.storage.desk_teams().await?;
    Ok(Json(json!({"teams": teams})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamsBody {
    teams: Vec<Team>,
}

async fn put_teams(State(state): State<HqState>, req: Request) -> HqResult<Response> {
    require(
        &state,
        req.method(),
        req.headers(),
        &[HqRole::Admin],
        "editing desk teams",
    )
    .await?;
    let b: TeamsBody = json_body(req).await?;
    check_teams(&b.teams)?;
    if let Some(r) = state
        .storage
        .desk_routing()
        .await?
        .into_iter()
        .find(|r| !b.teams.iter().any(|t| t.name == r.team))
    {
        return Err(HqError::invalid(
            "invalid_team",
            format!(
                "team {:?} is still the route for category {:?}; change the routing first",
                r.team, r.category
            ),
        ));
    }
    for t in &b.teams {
        for m in &t.members {
            if state.storage.user(m).await?.is_none() {
                return Err(HqError::invalid(
                    "invalid_team",
                    format!("team {:?}: no HQ user {m:?}", t.name),
                ));
            }
        }
    }
    state.storage.put_desk_teams(b.teams).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    limit: Option<i64>,
}

/// Most notifications listed at once.
pub const MAX_NOTIFICATIONS: i64 = 500;

async fn notifications(
    State(state): State<HqState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> HqResult<Response> {
    require(&state, &Method::GET, &headers, DESK, "desk notifications").await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_NOTIFICATIONS).contains(&limit) {
        return Err(HqError::invalid(
            "bad_query",
            format!("limit {limit} is not within 1-{MAX_NOTIFICATIONS}"),
        ));
    }
    let list = state.storage.notifications(limit).await?;
    Ok(Json(json!({"notifications": list})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    body: String,
}

/// A guide's Markdown rendered exactly as stores will show it (operator: guide authors).
async fn guide_preview(State(state): State<HqState>, req: Request) -> HqResult<Response> {
    require(
        &state,
        req.method(),
        req.headers(),
        &[HqRole::Operator],
        "previewing guides",
    )
    .await?;
    let b: PreviewBody = json_body(req).await?;
    let max = crate::proto::events::GUIDE_MAX_BODY_BYTES;
    if b.body.len() > max {
        return Err(HqError::invalid(
            "invalid_guide",
            format!("body is {} bytes; a guide has at most {max}", b.body.len()),
        ));
    }
    let html = crate::proto::guide_render::render(&b.body);
    Ok(Json(json!({"html": html})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guides_are_listed_once_with_every_target_and_the_newest_text() {
        let row =
            |id: &str, title: &str, kind: &str, name: &str, seq| super::super::storage::GuideRow {
                payload: json!({"id": id, "title": title}),
                kind: kind.into(),
                name: name.into(),
                seq,
            };
        let g = group_guides(vec![
            row("a", "old", "group", "north", 1),
            row("a", "new", "store", "s9", 5),
            row("b", "B", "all", "", 3),
        ]);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0]["title"], "new");
        assert_eq!(
            g[0]["targets"],
            json!([{"kind":"group","name":"north"},{"kind":"store","name":"s9"}])
        );
        assert_eq!(g[1]["targets"], json!([{"all": true}]));
    }

    fn team(name: &str, members: &[&str], on_call: Option<&str>) -> Team {
        Team {
            name: name.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            on_call: on_call.map(str::to_string),
            webhook_url: None,
            email: None,
        }
    }

    #[test]
    fn teams_and_routes_are_checked_with_the_place_named() {
        let ok = vec![team("scales", &["ann"], Some("ann"))];
        check_teams(&ok).unwrap();
        let e = check_teams(&[team("scales", &["ann"], Some("bob"))]).unwrap_err();
        assert!(e.to_string().contains("teams[0].on_call"), "{e}");
        let e = check_teams(&[team("a", &[], None), team("a", &[], None)]).unwrap_err();
        assert!(e.to_string().contains("teams[1].name"), "{e}");
        let mut hook = team("a", &[], None);
        hook.webhook_url = Some("ftp://x".into());
        let e = check_teams(&[hook]).unwrap_err();
        assert!(e.to_string().contains("webhook_url"), "{e}");
        let r = |c: &str, t: &str| Route {
            category: c.into(),
            team: t.into(),
        };
        check_routing(&[r("scale", "scales")], &ok).unwrap();
        let e = check_routing(&[r("scale", "nobody")], &ok).unwrap_err();
        assert!(e.to_string().contains("routes[0].team"), "{e}");
        let e = check_routing(&[r("toaster", "scales")], &ok).unwrap_err();
        assert!(e.to_string().contains("routes[0].category"), "{e}");
        let e = check_routing(&[r("scale", "scales"), r("scale", "scales")], &ok).unwrap_err();
        assert!(e.to_string().contains("routes[1]"), "{e}");
    }

    #[test]
    fn retries_back_off_and_end() {
        let at = |n| next_attempt_ms(0, n, 8, 30);
        assert_eq!(at(1), Some(30_000));
        assert_eq!(at(2), Some(60_000));
        assert_eq!(at(7), Some(30_000 << 6));
        assert_eq!(at(8), None, "8 attempts then given up");
        let total: i64 = (1..8).map(|n| at(n).unwrap()).sum();
        assert!(
            (3_600_000..4_000_000).contains(&total),
            "about an hour: {total}"
        );
    }

    #[test]
    fn queue_filters_are_bounded() {
        let q = DeskQuery {
            status: Some(String::new()),
            ..Default::default()
        }
        .checked()
        .unwrap();
        assert_eq!((q.status, q.limit, q.offset), (None, Some(50), Some(0)));
        for bad in [
            DeskQuery {
                limit: Some(MAX_PAGE + 1),
                ..Default::default()
            },
            DeskQuery {
                status: Some("lost".into()),
                ..Default::default()
            },
            DeskQuery {
                category: Some("toaster".into()),
                ..Default::default()
            },
            DeskQuery {
                offset: Some(-1),
                ..Default::default()
            },
        ] {
            assert!(bad.checked().is_err());
        }
    }
}
