use super::*;
use crate::order::{OrderMirror, Timestamp};

fn delivery(shop: &str, id: &str, body: &str) -> Delivery {
    Delivery {
        origin: Origin::Shopify {
            shop: shop.to_string(),
        },
        id: id.to_string(),
        topic: "orders/create".into(),
        received_at_ms: 1,
        headers: vec![("x-shopify-topic".into(), "orders/create".into())],
        body: body.as_bytes().to_vec(),
        redacted: false,
    }
}

/// Opens the store in `dir`. Tests that reopen a store they just closed in this same process
/// may find sled's file lock still held for a moment: sled's own I/O threads let go of the file
/// after the last handle is dropped, and tell nobody when. A restarted daemon is a new process
/// (the lock goes with the old one), so only tests need this bounded retry.
fn open(dir: &Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir, &StoreOptions::default()) {
            Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
}

#[tokio::test]
async fn a_delivery_id_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = store
        .record_delivery(&delivery("a.myshopify.com", "w1", "{}"))
        .await
        .unwrap();
    let again = store
        .record_delivery(&delivery("a.myshopify.com", "w1", "{\"other\":1}"))
        .await
        .unwrap();
    let Recorded::New(seq) = first else {
        panic!("first delivery was {first:?}")
    };
    assert_eq!(again, Recorded::Duplicate(seq));
    // The same id from another shop is another delivery.
    let other = store
        .record_delivery(&delivery("b.myshopify.com", "w1", "{}"))
        .await
        .unwrap();
    assert!(matches!(other, Recorded::New(s) if s != seq));
    assert_eq!(store.delivery_count(), 2);
    assert_eq!(store.delivery(seq).unwrap().unwrap().body, b"{}");
}

#[tokio::test]
async fn concurrent_writers_share_flushes_and_all_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .record_delivery(&delivery("a.myshopify.com", &format!("w{i}"), "{}"))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Recorded::New(_)));
    }
    let stats = store.flush_stats();
    assert_eq!(stats.waiters, 200);
    assert!(
        stats.rounds <= stats.waiters,
        "every flush answers at least one waiter: {stats:?}"
    );
    store.close();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.delivery_count(), 200);
    assert_eq!(store.inbox_len(), 200);
    let origin = Origin::Shopify {
        shop: "a.myshopify.com".into(),
    };
    for i in 0..200 {
        assert!(
            store
                .delivery_seq(&origin, &format!("w{i}"))
                .unwrap()
                .is_some()
        );
    }
}

#[tokio::test]
async fn the_inbox_hands_out_deliveries_in_arrival_order_until_done() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..5 {
        store
            .record_delivery(&delivery("a.myshopify.com", &format!("w{i}"), "{}"))
            .await
            .unwrap();
    }
    let pending = store.inbox(10).unwrap();
    let ids: Vec<&str> = pending.iter().map(|(_, d)| d.id.as_str()).collect();
    assert_eq!(ids, ["w0", "w1", "w2", "w3", "w4"]);
    for (seq, _) in &pending {
        store.inbox_done(*seq).unwrap();
    }
    // The processor's next look finds nothing left: what was stored before is covered.
    assert!(store.inbox(10).unwrap().is_empty());
    store.inbox_empty().await;
    assert_eq!(store.inbox_len(), 0);
    assert_eq!(store.delivery_count(), 5, "processing keeps the delivery");
}

#[tokio::test]
async fn an_injected_fault_fails_writes_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.inject_write_fault(true);
    let err = store
        .record_delivery(&delivery("a.myshopify.com", "w1", "{}"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)));
    assert_eq!(store.delivery_count(), 0);
    store.inject_write_fault(false);
    assert!(matches!(
        store
            .record_delivery(&delivery("a.myshopify.com", "w1", "{}"))
            .await
            .unwrap(),
        Recorded::New(_)
    ));
}

#[tokio::test]
async fn erasing_a_shop_leaves_no_trace_of_it_and_spares_other_shops() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for shop in ["gone.myshopify.com", "kept.myshopify.com"] {
        store
            .record_delivery(&delivery(shop, "w1", "{\"email\":\"x@y\"}"))
            .await
            .unwrap();
        store
            .trigger_order(shop, "gid://shopify/Order/1", None)
            .unwrap();
        store
            .set_shop_state(
                shop,
                &ShopState {
                    uninstalled_at_ms: Some(5),
                    ..ShopState::default()
                },
            )
            .unwrap();
    }
    let erased = store.erase_shop("gone.myshopify.com", None, 10).unwrap();
    assert_eq!(erased.deliveries, 1);
    // All that is left is the tombstone: the shop's state, naming the domain and times only.
    assert_eq!(
        store.find_bytes(b"gone.myshopify.com").unwrap(),
        vec![("shops".to_string(), b"gone.myshopify.com".to_vec())]
    );
    assert_eq!(
        store.shop_state("gone.myshopify.com").unwrap(),
        Some(ShopState {
            uninstalled_at_ms: Some(10),
            reinstalled_at_ms: None,
            erased_at_ms: Some(10),
        })
    );
    assert!(!store.find_bytes(b"kept.myshopify.com").unwrap().is_empty());
    assert_eq!(store.delivery_count(), 1);
    assert_eq!(store.order_triggers("kept.myshopify.com").unwrap().len(), 1);
}

#[tokio::test]
async fn triggers_for_one_order_coalesce_and_keep_the_newest_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let gid = "gid://shopify/Order/820982911946154508";
    for at in [
        "2026-11-25T10:00:02Z",
        "2026-11-25T10:00:01Z",
        "2026-11-25T05:00:03-05:00",
        // A duplicate names nothing new.
        "2026-11-25T10:00:03Z",
    ] {
        store
            .trigger_order("a.myshopify.com", gid, Some(at))
            .unwrap();
    }
    let triggers = store.order_triggers("a.myshopify.com").unwrap();
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0].0, gid);
    assert_eq!(
        triggers[0].1.deliveries, 2,
        "only the triggers with news counted"
    );
    assert_eq!(
        triggers[0].1.newest_change_ms,
        Some(Timestamp::parse("2026-11-25T10:00:03Z").unwrap().unix_ms)
    );
    // A trigger without a time always counts: nothing proves it is old news.
    store.trigger_order("a.myshopify.com", gid, None).unwrap();
    assert_eq!(
        store.order_triggers("a.myshopify.com").unwrap()[0]
            .1
            .deliveries,
        3
    );
}

#[test]
fn a_store_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema", &u64_key(SCHEMA_VERSION + 1))
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path(), &StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
}

#[test]
fn a_second_process_cannot_open_a_store_in_use() {
    // sled locks the directory per process; within one process a second open of the same path
    // would share nothing, so the lock is what keeps the CLI from writing beside the daemon.
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let second = Store::open(dir.path(), &StoreOptions::default());
    assert!(matches!(second, Err(StoreError::Locked(_))), "{second:?}");
}

#[tokio::test]
async fn an_id_left_without_its_delivery_by_a_crash_is_repaired_by_the_retry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // What a crash between the two inserts leaves behind: the id, pointing at nothing.
    let id_key = composite_key(&["shopify", "a.myshopify.com", "w1"]);
    store
        .inner
        .delivery_ids
        .insert(id_key, &u64_key(99))
        .unwrap();
    let outcome = store
        .record_delivery(&delivery("a.myshopify.com", "w1", "{}"))
        .await
        .unwrap();
    let Recorded::New(seq) = outcome else {
        panic!("the retry was taken for a duplicate: {outcome:?}")
    };
    assert!(store.delivery(seq).unwrap().is_some());
    assert_eq!(
        store
            .record_delivery(&delivery("a.myshopify.com", "w1", "{}"))
            .await
            .unwrap(),
        Recorded::Duplicate(seq)
    );
    assert_eq!(store.inbox(10).unwrap().len(), 1);
}

#[tokio::test]
async fn sequence_numbers_are_not_reused_below_the_cursor_after_an_erasure() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for i in 0..3 {
            store
                .record_delivery(&delivery("gone.myshopify.com", &format!("w{i}"), "{}"))
                .await
                .unwrap();
        }
        let pending = store.inbox(10).unwrap();
        store.inbox_done(pending.last().unwrap().0).unwrap();
        store.erase_shop("gone.myshopify.com", None, 10).unwrap();
        store.flush().await.unwrap();
        store.close();
    }
    let store = open(dir.path());
    assert_eq!(store.inbox_len(), 0);
    store
        .record_delivery(&delivery("new.myshopify.com", "w1", "{}"))
        .await
        .unwrap();
    let pending = store.inbox(10).unwrap();
    assert_eq!(
        pending.len(),
        1,
        "the new delivery is seen by the processor"
    );
    assert_eq!(pending[0].1.id, "w1");
}

fn mirrored(updated_at: &str, name: &str) -> OrderMirror {
    OrderMirror {
        shop: "a.myshopify.com".into(),
        id: "gid://shopify/Order/1".into(),
        name: name.into(),
        created_at: None,
        updated_at: Timestamp::parse(updated_at).unwrap(),
        cancelled_at: None,
        cancel_reason: None,
        display_fulfillment_status: "UNFULFILLED".into(),
        shipping_address: None,
        line_items: Vec::new(),
        fulfillment_orders: Vec::new(),
        fulfillments: Vec::new(),
        truncated: false,
    }
}

#[test]
fn an_older_order_state_never_replaces_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let newer = mirrored("2026-11-25T10:00:05Z", "newer");
    let older = mirrored("2026-11-25T10:00:04Z", "older");
    assert_eq!(store.put_order(&newer).unwrap(), Applied::Inserted);
    assert!(matches!(
        store.put_order(&older).unwrap(),
        Applied::Stale { .. }
    ));
    let stored = store.order("a.myshopify.com", &newer.id).unwrap().unwrap();
    assert_eq!(stored.name, "newer");
    // Equally new: fetched later, so it wins (a cancellation within the same second).
    let same_second = mirrored("2026-11-25T10:00:05Z", "refetched");
    assert_eq!(store.put_order(&same_second).unwrap(), Applied::Updated);
    assert_eq!(
        store
            .order("a.myshopify.com", &newer.id)
            .unwrap()
            .unwrap()
            .name,
        "refetched"
    );
}

#[tokio::test]
async fn a_trigger_touched_during_the_fetch_is_kept_for_another_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .trigger_order("a.myshopify.com", "gid://shopify/Order/1", None)
        .unwrap();
    let (gid, seen) = store.order_triggers("a.myshopify.com").unwrap().remove(0);
    // A webhook for the same order arrives while it is being fetched.
    store.trigger_order("a.myshopify.com", &gid, None).unwrap();
    assert!(
        !store
            .complete_trigger("a.myshopify.com", &gid, &seen)
            .unwrap()
    );
    let (_, again) = store.order_triggers("a.myshopify.com").unwrap().remove(0);
    assert!(
        store
            .complete_trigger("a.myshopify.com", &gid, &again)
            .unwrap()
    );
    store.triggers_empty("a.myshopify.com").await;
}

#[tokio::test]
async fn an_orphaned_id_whose_number_was_reused_after_a_restart_is_still_repaired() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .record_delivery(&delivery("a.myshopify.com", "w0", "{}"))
            .await
            .unwrap();
        // The crash left w1's id pointing at the next number, without its delivery.
        let id_key = composite_key(&["shopify", "a.myshopify.com", "w1"]);
        store
            .inner
            .delivery_ids
            .insert(id_key, &u64_key(2))
            .unwrap();
        store.flush().await.unwrap();
        store.close();
    }
    let store = open(dir.path());
    // After the restart another delivery takes number 2 ...
    let other = store
        .record_delivery(&delivery("a.myshopify.com", "w2", "{}"))
        .await
        .unwrap();
    assert_eq!(other, Recorded::New(2));
    // ... and Shopify's retry of w1 must be stored, not taken for a duplicate of w2.
    let retry = store
        .record_delivery(&delivery("a.myshopify.com", "w1", "{}"))
        .await
        .unwrap();
    assert!(matches!(retry, Recorded::New(n) if n != 2), "{retry:?}");
    let ids: Vec<String> = store.deliveries().map(|d| d.unwrap().1.id).collect();
    assert_eq!(ids, ["w0", "w2", "w1"]);
}

#[test]
fn a_trigger_in_an_older_format_still_means_fetch_this_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = composite_key(&["a.myshopify.com", "gid://shopify/Order/1"]);
    // Version 1 of the trigger record, as the previous build wrote it.
    store
        .inner
        .order_triggers
        .insert(&key, &[1u8, 5, 1, 0][..])
        .unwrap();
    let triggers = store.order_triggers("a.myshopify.com").unwrap();
    assert_eq!(triggers.len(), 1);
    assert!(
        store
            .complete_trigger("a.myshopify.com", &triggers[0].0, &triggers[0].1)
            .unwrap()
    );
}

#[tokio::test]
async fn a_delivery_erased_behind_the_cursor_leaves_no_gap_to_wait_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .record_delivery(&delivery("kept.myshopify.com", "w1", "{}"))
        .await
        .unwrap();
    let (seq, _) = store.inbox(10).unwrap().remove(0);
    store.inbox_done(seq).unwrap();
    // Stored after the processor's read, then erased by a shop/redact before it was processed.
    store
        .record_delivery(&delivery("gone.myshopify.com", "w2", "{}"))
        .await
        .unwrap();
    store.erase_shop("gone.myshopify.com", None, 10).unwrap();
    assert!(store.inbox(10).unwrap().is_empty());
    // Would wait forever if the erased number stayed a gap in front of the cursor.
    tokio::time::timeout(std::time::Duration::from_secs(5), store.inbox_empty())
        .await
        .expect("nothing is left to wait for");
    assert_eq!(store.inbox_len(), 0);
}

#[test]
fn a_shop_state_in_an_older_format_does_not_stop_the_shop() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Version 1 of the shop state, as the first build of this session wrote it.
    store
        .inner
        .shops
        .insert("a.myshopify.com", &[1u8, 1, 5][..])
        .unwrap();
    assert_eq!(store.shop_state("a.myshopify.com").unwrap(), None);
}

#[test]
fn an_erased_shop_stays_stopped_until_a_sign_of_a_reinstall_after_the_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let shop = "erased.myshopify.com";
    // A shop whose uninstall was never seen is stopped by the erasure itself.
    store.erase_shop(shop, None, 1_000).unwrap();
    let state = store.shop_state(shop).unwrap().unwrap();
    assert!(state.is_stopped());
    assert_eq!(state.erased_at_ms, Some(1_000));
    // An answer from before the erasure is no reinstall; one after it is.
    assert!(!store.mark_reinstalled(shop, 1_000).unwrap());
    assert!(store.shop_state(shop).unwrap().unwrap().is_stopped());
    assert!(store.mark_reinstalled(shop, 1_001).unwrap());
    let state = store.shop_state(shop).unwrap().unwrap();
    assert!(!state.is_stopped());
    assert_eq!(state.reinstalled_at_ms, Some(1_001));
    assert_eq!(
        state.erased_at_ms,
        Some(1_000),
        "the erasure stays on record"
    );
    // A running shop is not "reinstalled" again.
    assert!(!store.mark_reinstalled(shop, 2_000).unwrap());

    // A later uninstall is kept over an earlier erasure's time, and a reinstall seen after the
    // erasure's time keeps the shop running through an erasure request that was late.
    let other = "late.myshopify.com";
    store
        .set_shop_state(
            other,
            &ShopState {
                uninstalled_at_ms: Some(5_000),
                ..ShopState::default()
            },
        )
        .unwrap();
    store.erase_shop(other, None, 4_000).unwrap();
    assert_eq!(
        store.shop_state(other).unwrap().unwrap().uninstalled_at_ms,
        Some(5_000)
    );
    assert!(store.mark_reinstalled(other, 6_000).unwrap());
    store.erase_shop(other, None, 5_500).unwrap();
    assert!(!store.shop_state(other).unwrap().unwrap().is_stopped());
}

#[test]
fn a_shop_state_of_format_version_2_is_read_without_a_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Version byte 2, then postcard: Some(7) and None.
    let v2 = [2u8, 1, 7, 0];
    store.put_raw_shop_state("old.myshopify.com", &v2).unwrap();
    assert_eq!(
        store.shop_state("old.myshopify.com").unwrap(),
        Some(ShopState {
            uninstalled_at_ms: Some(7),
            reinstalled_at_ms: None,
            erased_at_ms: None,
        })
    );
}

#[tokio::test]
async fn the_retention_deletes_processed_deliveries_past_the_window_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut seqs = Vec::new();
    for (id, received) in [
        ("old-1", 1_000),
        ("old-2", 2_000),
        ("new-1", 9_000),
        ("old-3", 1_500),
    ] {
        let mut d = delivery("a.myshopify.com", id, "{\"email\":\"x@example.org\"}");
        d.received_at_ms = received;
        match store.record_delivery(&d).await.unwrap() {
            Recorded::New(seq) => seqs.push(seq),
            other => panic!("{other:?}"),
        }
    }
    // The first three were processed; the fourth (old, but late) still waits.
    store.inbox_done(seqs[2]).unwrap();
    assert_eq!(store.prune_deliveries(5_000).unwrap(), 2);
    assert!(!store.has_delivery(seqs[0]).unwrap());
    assert!(!store.has_delivery(seqs[1]).unwrap());
    assert!(store.has_delivery(seqs[2]).unwrap(), "inside the window");
    assert!(store.has_delivery(seqs[3]).unwrap(), "not processed yet");
    let origin = Origin::Shopify {
        shop: "a.myshopify.com".into(),
    };
    assert_eq!(
        store.delivery_seq(&origin, "old-1").unwrap(),
        None,
        "its id goes too"
    );
    assert_eq!(store.delivery_seq(&origin, "new-1").unwrap(), Some(seqs[2]));
    assert_eq!(store.prune_deliveries(5_000).unwrap(), 0, "nothing twice");
}

#[test]
fn the_newest_of_an_uninstall_and_a_reinstall_wins_whatever_order_they_are_recorded_in() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let shop = "flip.myshopify.com";
    // A shop never seen before is stopped by its uninstall.
    assert!(store.mark_uninstalled(shop, 1_000).unwrap());
    assert_eq!(
        store.shop_state(shop).unwrap().unwrap().uninstalled_at_ms,
        Some(1_000)
    );
    // A late retry of an older uninstall does not wind the time back.
    assert!(store.mark_uninstalled(shop, 900).unwrap());
    assert_eq!(
        store.shop_state(shop).unwrap().unwrap().uninstalled_at_ms,
        Some(1_000)
    );
    // The probe's answer after it resumes the shop; a late retry of the uninstall it answered
    // after (or at) keeps it running.
    assert!(store.mark_reinstalled(shop, 2_000).unwrap());
    assert!(!store.mark_uninstalled(shop, 1_000).unwrap());
    assert!(!store.mark_uninstalled(shop, 2_000).unwrap());
    assert!(!store.shop_state(shop).unwrap().unwrap().is_stopped());
    // A newer uninstall stops it again, and an older probe answer cannot undo that.
    assert!(store.mark_uninstalled(shop, 3_000).unwrap());
    assert!(!store.mark_reinstalled(shop, 2_500).unwrap());
    let state = store.shop_state(shop).unwrap().unwrap();
    assert!(state.is_stopped());
    assert_eq!(state.reinstalled_at_ms, Some(2_000));
}
