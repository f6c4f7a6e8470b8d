//! What the intake's route tests share: an intake over a temporary store, sending a request
//! through the router, reading the counters, and a body that never arrives.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::{Intake, IntakeCounters, IntakeMode, IntakeSettings};
use crate::store::{Store, StoreOptions};

/// An intake over a temporary store, with its router.
pub struct TestIntake {
    _dir: tempfile::TempDir,
    pub store: Store,
    pub counters: Arc<IntakeCounters>,
    pub router: Router,
}

/// An intake with no shops, this body limit and a 200 ms body timeout; `configure` adds the
/// senders under test (suppliers, tracking providers).
pub fn intake(
    mode: IntakeMode,
    body_limit: usize,
    configure: impl FnOnce(Intake) -> Intake,
) -> TestIntake {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let counters = Arc::new(IntakeCounters::default());
    let intake = Intake::new(
        store.clone(),
        [],
        IntakeSettings {
            body_limit,
            body_read_timeout: Duration::from_millis(200),
            mode,
        },
        counters.clone(),
    );
    TestIntake {
        _dir: dir,
        store,
        counters,
        router: configure(intake).router(),
    }
}

/// Sends a request through the router; the status and the body as text.
pub async fn send(router: &Router, request: Request) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// How many answers the counters hold for (topic, result).
pub fn counted(counters: &IntakeCounters, topic: &str, result: &str) -> u64 {
    counters
        .by_topic()
        .into_iter()
        .find(|((t, r), _)| t == topic && *r == result)
        .map_or(0, |(_, n)| n)
}

/// A body whose sender never sends anything.
pub struct Stalled;

impl HttpBody for Stalled {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Poll::Pending
    }
}

/// A stalled body, ready for a request.
pub fn stalled() -> Body {
    Body::new(Stalled)
}
