//! Sends Shopify webhook deliveries, signed as Shopify signs them, optionally broken on purpose.

use crate::intake::shopify::{HMAC_HEADER, sign};

/// One delivery to send.
#[derive(Debug, Clone)]
pub struct ShopifyDelivery {
    /// The shop domain header.
    pub shop: String,
    /// The topic header, e.g. `orders/create`.
    pub topic: String,
    /// The `X-Shopify-Webhook-Id` header.
    pub webhook_id: String,
    /// The raw body.
    pub body: Vec<u8>,
    /// The secret it is signed with.
    pub secret: Vec<u8>,
    /// How to break it, if at all.
    pub tamper: Tamper,
    /// The `X-Shopify-Triggered-At` header: when the event happened.
    pub triggered_at: String,
}

/// Ways to break a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// Sent as Shopify would.
    None,
    /// Without the signature header.
    NoSignature,
    /// With this signature header value instead of the right one.
    Signature(String),
    /// Signed, then the body re-serialized (as a framework that parses JSON first would).
    Reserialized,
    /// Without this header.
    DropHeader(&'static str),
}

impl ShopifyDelivery {
    /// A well-formed delivery.
    pub fn new(
        shop: &str,
        topic: &str,
        webhook_id: &str,
        body: impl Into<Vec<u8>>,
        secret: &[u8],
    ) -> Self {
        ShopifyDelivery {
            shop: shop.to_string(),
            topic: topic.to_string(),
            webhook_id: webhook_id.to_string(),
            body: body.into(),
            secret: secret.to_vec(),
            tamper: Tamper::None,
            triggered_at: "2026-11-25T10:00:00.000Z".to_string(),
        }
    }

    /// The same delivery, broken in one way.
    pub fn tampered(mut self, tamper: Tamper) -> Self {
        self.tamper = tamper;
        self
    }

    /// The headers and body as they go on the wire.
    pub fn wire(&self) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let signature = sign(&self.secret, &self.body);
        let body = match self.tamper {
            Tamper::Reserialized => serde_json::from_slice::<serde_json::Value>(&self.body)
                .map(|v| v.to_string().into_bytes())
                .unwrap_or_else(|_| self.body.clone()),
            _ => self.body.clone(),
        };
        let mut headers = vec![
            ("Content-Type", "application/json".to_string()),
            ("X-Shopify-Topic", self.topic.clone()),
            ("X-Shopify-Shop-Domain", self.shop.clone()),
            ("X-Shopify-Webhook-Id", self.webhook_id.clone()),
            ("X-Shopify-API-Version", "2026-10".to_string()),
            ("X-Shopify-Triggered-At", self.triggered_at.clone()),
            ("X-Shopify-Event-Id", format!("event-{}", self.webhook_id)),
        ];
        match &self.tamper {
            Tamper::NoSignature => {}
            Tamper::Signature(value) => headers.push((HMAC_HEADER, value.clone())),
            _ => headers.push((HMAC_HEADER, signature)),
        }
        if let Tamper::DropHeader(name) = self.tamper {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        }
        (headers, body)
    }

    /// Sends it to `base` (e.g. `http://127.0.0.1:8080`) and returns the status and body text.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        base: &str,
    ) -> reqwest::Result<(u16, String)> {
        let (headers, body) = self.wire();
        let mut request = client.post(format!("{base}/webhooks/shopify")).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.unwrap_or_default()))
    }
}

/// A sample `orders/create` body in Shopify's REST shape, with customer data to erase later.
pub fn sample_order(id: u64, customer_id: u64, email: &str, street: &str) -> Vec<u8> {
    serde_json::json!({
        "id": id,
        "admin_graphql_api_id": format!("gid://shopify/Order/{id}"),
        "name": format!("#{}", 1000 + id % 1000),
        "email": email,
        "updated_at": "2026-11-25T10:00:00-05:00",
        "customer": { "id": customer_id, "email": email, "first_name": "Ada", "last_name": "Lovelace" },
        "shipping_address": { "first_name": "Ada", "address1": street, "city": "London", "zip": "N1 9GU" },
        "line_items": [
            { "id": id * 10 + 1, "sku": "MUG-BLUE-350", "variant_id": 4410, "quantity": 2,
              "current_quantity": 2, "fulfillable_quantity": 2, "variant_title": "Blue / 350 ml",
              "requires_shipping": true }
        ],
        // Shopify escapes '/' in its JSON; keep one so a re-serialized body differs.
        "order_status_url": "https://shop.example/orders/status"
    })
    .to_string()
    .replace("https://shop.example/orders/status", "https:\\/\\/shop.example\\/orders\\/status")
    .into_bytes()
}
