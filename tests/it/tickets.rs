//! Support tickets and the sync status over the real HTTP API.

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_ticket_is_stored_queued_for_hq_with_diagnostics_and_no_secrets() {
    let sb = StoreBox::start_with(&[
        ("STOREBOX_HQ__URL", "http://127.0.0.1:9/"),
        ("STOREBOX_HQ__TOKEN", "hq-secret-token-123"),
    ]);
    let _pw = sb.add_device("printer-1", "printer");

    // Bad input names the field and stores nothing.
    let (s, body) = sb
        .post(
            "/api/v1/tickets",
            json!({"subject": " ", "description": "x"}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("subject"),
        "{body}"
    );
    let (s, body) = sb
        .post(
            "/api/v1/tickets",
            json!({"subject": "Jam", "description": "x", "device_id": "lane-404"}),
        )
        .await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_device", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lane-404"),
        "{body}"
    );
    let (s, body) = sb
        .post(
            "/api/v1/tickets",
            json!({"subject": "Jam", "description": "x", "colour": "red"}),
        )
        .await;
    assert_eq!(s, 400, "unknown field refused: {body}");

    let (s, t) = sb
        .post(
            "/api/v1/tickets",
            json!({"subject": "Receipt printer jams", "description": "Every third receipt jams.", "device_id": "printer-1"}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let id = t["id"].as_str().unwrap().to_string();
    assert_eq!(t["status"], "open");
    assert_eq!(t["opened_by"], "token:tests");
    let d = &t["diagnostics"];
    assert_eq!(d["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(d["devices"]["total"], 1);
    assert_eq!(d["devices"]["offline"][0], "printer-1");
    assert_eq!(d["sync"]["configured"], true);
    let text = t.to_string();
    assert!(
        !text.contains("hq-secret-token-123"),
        "no secret in diagnostics: {text}"
    );
    assert!(!text.contains(&sb.token), "no API token in diagnostics");

    let (s, list) = sb.get("/api/v1/tickets").await;
    assert_eq!(s, 200);
    assert_eq!(list["tickets"][0]["id"], id.as_str());
    let (s, one) = sb.get(&format!("/api/v1/tickets/{id}")).await;
    assert_eq!(
        (s, one["subject"].as_str()),
        (200, Some("Receipt printer jams"))
    );
    let (s, _) = sb.get("/api/v1/tickets/tk-nope").await;
    assert_eq!(s, 404);

    // Queued for HQ in the outbox as a business event.
    let (ty, payload): (String, String) = sb
        .db()
        .query_row(
            "SELECT type, payload FROM outbox WHERE type = 'ticket.opened'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(ty, "ticket.opened");
    assert!(payload.contains(&id) && !payload.contains("hq-secret-token-123"));

    let (s, sync) = sb.get("/api/v1/sync").await;
    assert_eq!(s, 200, "{sync}");
    assert_eq!(sync["configured"], true);
    assert_eq!(sync["outbox"]["business"], 1);
    assert!(!sync.to_string().contains("hq-secret-token-123"));
}
