//! Inbound deliveries: webhooks exactly as they arrived, before anything interprets them.
//!
//! A delivery is kept raw (the body bytes as signed, the sender's headers) so that processing can
//! be re-run after a crash or a bug fix, and so that an operator can see what a sender really said.

use serde::{Deserialize, Serialize};

/// Who sent a delivery. The origin scopes the sender's delivery id for deduplication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// A Shopify webhook for one shop (its `*.myshopify.com` domain, lowercase).
    Shopify { shop: String },
    /// A supplier or agent reporting events (`/webhooks/suppliers/<supplier>`), by its configured
    /// name.
    Supplier { supplier: String },
    /// A parcel tracking provider reporting carrier events (`/webhooks/tracking/<provider>`), by
    /// the provider's name (`aftership`, `17track`).
    Tracking { provider: String },
}

impl Origin {
    /// The key parts that scope this sender's delivery ids.
    pub fn scope(&self) -> [&str; 2] {
        match self {
            Origin::Shopify { shop } => ["shopify", shop],
            Origin::Supplier { supplier } => ["supplier", supplier],
            Origin::Tracking { provider } => ["tracking", provider],
        }
    }

    /// Who sent it: the shop's domain, the supplier's name or the tracking provider's name.
    pub fn sender(&self) -> &str {
        match self {
            Origin::Shopify { shop } => shop,
            Origin::Supplier { supplier } => supplier,
            Origin::Tracking { provider } => provider,
        }
    }
}

/// One inbound delivery as received.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Who sent it.
    pub origin: Origin,
    /// The sender's unique delivery id (Shopify: `X-Shopify-Webhook-Id`); the deduplication key.
    pub id: String,
    /// The topic, e.g. `orders/create`.
    pub topic: String,
    /// When shipgate received it, in Unix milliseconds.
    pub received_at_ms: u64,
    /// The sender's own headers (for Shopify the `X-Shopify-*` ones), names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body bytes exactly as they were signed, unless `redacted` says otherwise.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Set once a compliance request rewrote the body to drop customer data.
    pub redacted: bool,
}

impl Delivery {
    /// The value of one of the stored headers.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

// The body holds customer data: Debug shows its size, never its content, so that a stray `{:?}`
// in a log line cannot leak an address.
impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("origin", &self.origin)
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("received_at_ms", &self.received_at_ms)
            .field("body_len", &self.body.len())
            .field("redacted", &self.redacted)
            .finish()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
