//! The simulator's HTTP client of the box: only the public API of docs/api.md (provisioning,
//! catalog, basket pricing) with a bearer token.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum BoxApiError {
    #[error("{what} at the box")]
    Http {
        what: String,
        source: reqwest::Error,
    },
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
}

/// A catalog item as the box lists it (the fields the simulator uses).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct CatalogEntry {
    pub sku: String,
    pub name: String,
    #[serde(default)]
    pub department: Option<String>,
    pub unit: String,
}

#[derive(Clone)]
pub struct BoxApi {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl BoxApi {
    pub fn new(base: &str, token: Option<String>) -> BoxApi {
        BoxApi {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Result<Value, BoxApiError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let r = req.send().await.map_err(|source| BoxApiError::Http {
            what: what.into(),
            source,
        })?;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(BoxApiError::Status {
                what: what.into(),
                status,
                body: text.chars().take(300).collect(),
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Provisions a device and returns its password. An existing device of that id is removed
    /// first (its password cannot be read back), so its old password stops working.
    pub async fn provision(&self, id: &str, kind: &str, name: &str) -> Result<String, BoxApiError> {
        let what = format!("provisioning {id}");
        let body = json!({"id": id, "kind": kind, "name": name});
        let url = format!("{}/api/v1/devices", self.base);
        let r = match self.send(&what, self.http.post(&url).json(&body)).await {
            Err(BoxApiError::Status { status: 409, .. }) => {
                self.send(
                    &what,
                    self.http
                        .delete(format!("{}/api/v1/devices/{id}", self.base)),
                )
                .await?;
                self.send(&what, self.http.post(&url).json(&body)).await?
            }
            other => other?,
        };
        Ok(r["password"].as_str().unwrap_or_default().to_string())
    }

    /// Up to `max` catalog items, in the box's name order.
    pub async fn catalog(&self, max: usize) -> Result<Vec<CatalogEntry>, BoxApiError> {
        let mut out: Vec<CatalogEntry> = Vec::new();
        while out.len() < max {
            let limit = (max - out.len()).min(500);
            let v = self
                .send(
                    "reading the catalog",
                    self.http.get(format!(
                        "{}/api/v1/catalog?limit={limit}&offset={}",
                        self.base,
                        out.len()
                    )),
                )
                .await?;
            let items: Vec<CatalogEntry> =
                serde_json::from_value(v["items"].clone()).unwrap_or_default();
            let n = items.len();
            out.extend(items);
            if n < limit {
                break;
            }
        }
        Ok(out)
    }

    /// `POST /api/v1/baskets/price`: the priced basket as the box answers it.
    pub async fn price_basket(&self, lines: &[(String, i64)]) -> Result<Value, BoxApiError> {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(sku, q)| json!({"sku": sku, "quantity": q}))
            .collect();
        self.send(
            "pricing a basket",
            self.http
                .post(format!("{}/api/v1/baskets/price", self.base))
                .json(&json!({ "lines": lines })),
        )
        .await
    }
}
