//! The supplier part of the demo: sandbox agents behind the `http` adapter, a spreadsheet agent
//! behind `csv`, and every exception path, with a manual clock for the waits.

use std::time::Duration;

use serde_json::json;

use super::Timeline;
use crate::clock::Clock;
use crate::daemon::Daemon;
use crate::sandbox::harness::{check_event, settle};
use crate::sandbox::shopify::{NewLine, NewOrder, OrderEdit, SandboxShopify};
use crate::sandbox::supplier::SandboxAgent;
use crate::workflow::derive::{self, ShipmentStatus};
use crate::workflow::effect::EffectState;
use crate::workflow::model::{Actor, Decision, ExceptionKind, OrderCase};

pub(super) struct Agents {
    pub shenzhen: SandboxAgent,
    pub la: SandboxAgent,
    pub tracker: crate::sandbox::tracking::SandboxTracker,
}

struct Ctx<'a> {
    daemon: &'a Daemon,
    sandbox: &'a SandboxShopify,
    agents: &'a Agents,
}

impl Ctx<'_> {
    async fn settle(&self) -> anyhow::Result<bool> {
        settle(
            self.daemon,
            self.sandbox,
            &[&self.agents.shenzhen, &self.agents.la],
            40,
        )
        .await
    }

    fn case(&self, order: &str) -> Option<OrderCase> {
        self.daemon
            .store()
            .case(self.sandbox.shop(), order)
            .ok()
            .flatten()
    }

    /// When the order was placed, as the mirror says.
    fn placed(&self, order: &str) -> Option<i64> {
        let mirror = self
            .daemon
            .store()
            .order(self.sandbox.shop(), order)
            .ok()
            .flatten();
        crate::workflow::plan::placed(mirror.as_ref())
    }

    fn statuses(&self, order: &str) -> Vec<(String, ShipmentStatus)> {
        let Some(case) = self.case(order) else {
            return Vec::new();
        };
        let placed = self.placed(order);
        let mut out: Vec<_> = case
            .shipments
            .iter()
            .map(|s| {
                (
                    s.supplier.clone(),
                    derive::status(s, &case.exceptions, placed),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn open(&self, order: &str) -> Vec<(String, ExceptionKind)> {
        self.case(order)
            .map(|c| {
                c.open_exceptions()
                    .map(|e| (e.id.clone(), e.kind))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn holds(&self, order: &str) -> Vec<String> {
        self.sandbox
            .order_snapshot(order)
            .map(|o| {
                o["fulfillmentOrders"]["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|fo| {
                        fo["fulfillmentHolds"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                    })
                    .map(|h| {
                        format!(
                            "{} {}",
                            h["reason"].as_str().unwrap_or(""),
                            h["handle"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn decide(&self, exception: &str, decision: Decision) -> anyhow::Result<()> {
        self.daemon
            .workflow()
            .decide(exception, decision, Actor::Operator("demo".into()), None)
            .await?;
        self.settle().await?;
        Ok(())
    }
}

fn order(lines: &[(&str, i64)]) -> NewOrder {
    NewOrder {
        name: None,
        lines: lines
            .iter()
            .map(|(sku, quantity)| NewLine {
                sku: sku.to_string(),
                quantity: *quantity,
                location: 0,
                variant_title: None,
            })
            .collect(),
        customer_email: Some("grace@example.org".into()),
        shipping_address: Some(json!({
            "name": "Grace Hopper", "address1": "1 Harbor Way", "city": "Arlington",
            "provinceCode": "VA", "zip": "22201", "countryCodeV2": "US"
        })),
    }
}

pub(super) async fn run(
    t: &mut Timeline,
    daemon: &Daemon,
    sandbox: &SandboxShopify,
    agents: &Agents,
    clock: &Clock,
    sample_ids: &[String],
) -> anyhow::Result<()> {
    let c = Ctx {
        daemon,
        sandbox,
        agents,
    };
    sandbox.set_faults(Default::default());
    let settled = c.settle().await?;
    let live: Vec<&String> = sample_ids
        .iter()
        .filter(|id| {
            sandbox
                .order_snapshot(id)
                .is_some_and(|o| o["cancelledAt"].is_null())
        })
        .collect();
    let waiting_for_check = live
        .iter()
        .filter(|id| {
            let s = c.statuses(id);
            !s.is_empty() && s.iter().all(|(_, st)| *st == ShipmentStatus::AwaitingCheck)
        })
        .count();
    let submissions =
        agents.shenzhen.accepted_messages().len() + agents.la.accepted_messages().len();
    let duplicates = agents.shenzhen.duplicates() + agents.la.duplicates();
    t.check(
        "every live sample order was routed by SKU, submitted once and confirmed by its agents",
        settled && waiting_for_check == live.len() && duplicates == 0,
        format!(
            "{waiting_for_check} of {} orders awaiting the physical check; {submissions} messages, {duplicates} duplicates",
            live.len()
        ),
    );

    // A stockout: held in Shopify, rerouted to the backup, released.
    agents.shenzhen.stockout("SUNSET-LAMP-16C", None);
    let lamp = sandbox.create_order(order(&[("SUNSET-LAMP-16C", 1)]));
    c.settle().await?;
    let open = c.open(&lamp);
    let holds = c.holds(&lamp);
    t.check(
        "a stockout opens an exception and holds the order in Shopify",
        open.len() == 1
            && open[0].1 == ExceptionKind::Stockout
            && holds.len() == 1
            && holds[0].starts_with("INVENTORY_OUT_OF_STOCK shipgate-EX-"),
        format!("open {open:?}, Shopify holds {holds:?}"),
    );
    if let Some((id, _)) = open.first() {
        c.decide(id, Decision::Reroute { supplier: None }).await?;
    }
    t.check(
        "rerouted to the backup: the first agent is told to stop, the hold is released",
        c.open(&lamp).is_empty()
            && c.holds(&lamp).is_empty()
            && c.statuses(&lamp)
                == vec![
                    ("la-3pl".into(), ShipmentStatus::AwaitingCheck),
                    ("shenzhen".into(), ShipmentStatus::Cancelled),
                ],
        format!("shipments {:?}", c.statuses(&lamp)),
    );
    agents.shenzhen.clear_switches();

    // An unmapped SKU: routed by hand to the spreadsheet agent, who answers with a sheet.
    let mystery = sandbox.create_order(order(&[("MYSTERY-BOX-XL", 2)]));
    c.settle().await?;
    let open = c.open(&mystery);
    t.check(
        "an unmapped SKU opens an exception with a hold",
        open.len() == 1 && open[0].1 == ExceptionKind::UnmappedSku && c.holds(&mystery).len() == 1,
        format!("open {open:?}, Shopify holds {:?}", c.holds(&mystery)),
    );
    if let Some((id, _)) = open.first() {
        c.decide(
            id,
            Decision::RouteTo {
                supplier: "sheets".into(),
            },
        )
        .await?;
    }
    let pending = daemon.workflow().pending_for("sheets")?;
    let export = crate::suppliers::csv::export(&pending);
    let workflow = daemon.workflow();
    let shipment = pending
        .first()
        .map(|p| p.shipment_id.clone())
        .unwrap_or_default();
    let line = pending
        .first()
        .and_then(|p| p.lines.first())
        .map(|l| l.line_id.clone())
        .unwrap_or_default();
    let header = "shipment_id,event,line_id,sku,variant,quantity,date,parcel_id,carrier,tracking_number,tracking_url,weight_grams,note";
    let bad = format!(
        "{header}\n{shipment},received,,,,,,,,,,,PO-55\n{shipment},confirmed,{line},MYSTERY-BOX-XL,,5,,,,,,,\n{shipment},confirmed,gid://shopify/LineItem/1,MYSTERY-BOX-XL,,1,,,,,,,\n"
    );
    let refused = workflow
        .import_sheet(
            "sheets",
            "bad.csv",
            bad.as_bytes(),
            Actor::Operator("demo".into()),
        )
        .await;
    let refusal = refused
        .as_ref()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    t.check(
        "the agent's sheet with two bad rows is refused whole, naming the rows",
        refusal.contains("row 3") && refusal.contains("row 4") && !refusal.contains("row 2"),
        refusal.replace('\n', "; "),
    );
    let good = format!(
        "{header}\n{shipment},received,,,,,,,,,,,PO-55\n{shipment},confirmed,{line},MYSTERY-BOX-XL,,2,2026-12-01,,,,,,\n"
    );
    let imported = workflow
        .import_sheet(
            "sheets",
            "good.csv",
            good.as_bytes(),
            Actor::Operator("demo".into()),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    c.settle().await?;
    t.check(
        "routed by hand to the spreadsheet agent, exported, and confirmed by its sheet",
        export.contains(&shipment)
            && imported.recorded == 2
            && c.open(&mystery).is_empty()
            && c.holds(&mystery).is_empty()
            && c.statuses(&mystery) == vec![("sheets".into(), ShipmentStatus::AwaitingCheck)],
        format!(
            "export {} bytes, {} events recorded, shipments {:?}",
            export.len(),
            imported.recorded,
            c.statuses(&mystery)
        ),
    );

    // A substitute offered and approved.
    agents.la.substitute(
        "YOGA-MAT-6MM",
        "YOGA-MAT-8MM",
        "8 mm instead of 6 mm, same colour",
    );
    let mat = sandbox.create_order(order(&[("YOGA-MAT-6MM", 1)]));
    c.settle().await?;
    let open = c.open(&mat);
    let offered = open.len() == 1 && open[0].1 == ExceptionKind::SubstituteOffered;
    if let Some((id, _)) = open.first() {
        c.decide(id, Decision::ApproveSubstitute).await?;
    }
    t.check(
        "a substitute offer is held until approved, then confirmed as the substitute",
        offered
            && c.open(&mat).is_empty()
            && c.statuses(&mat) == vec![("la-3pl".into(), ShipmentStatus::AwaitingCheck)],
        format!("shipments {:?}", c.statuses(&mat)),
    );
    agents.la.clear_switches();

    // An address the agent cannot ship to: held, corrected in Shopify, sent again.
    agents.la.refuse_addresses_containing("PO Box");
    let mut boxed = order(&[("YOGA-MAT-6MM", 1)]);
    boxed.shipping_address = Some(json!({
        "name": "Grace Hopper", "address1": "PO Box 1906", "city": "Arlington",
        "provinceCode": "VA", "zip": "22201", "countryCodeV2": "US"
    }));
    let boxed = sandbox.create_order(boxed);
    c.settle().await?;
    let open = c.open(&boxed);
    let held = c.holds(&boxed);
    let flagged = open.len() == 1
        && open[0].1 == ExceptionKind::AddressIssue
        && held.len() == 1
        && held[0].starts_with("INCORRECT_ADDRESS ");
    sandbox.set_shipping_address(
        &boxed,
        json!({
            "name": "Grace Hopper", "address1": "1 Harbor Way", "city": "Arlington",
            "provinceCode": "VA", "zip": "22201", "countryCodeV2": "US"
        }),
    )?;
    c.settle().await?;
    if let Some((id, _)) = open.first() {
        c.decide(id, Decision::CorrectAddress).await?;
    }
    let resent = agents
        .la
        .accepted_messages()
        .iter()
        .any(|m| m.kind == "amendment" && m.body["ship_to"]["address1"] == "1 Harbor Way");
    t.check(
        "an address the agent cannot ship to is held (INCORRECT_ADDRESS) until corrected in Shopify, then sent again",
        flagged
            && resent
            && c.open(&boxed).is_empty()
            && c.holds(&boxed).is_empty()
            && c.statuses(&boxed) == vec![("la-3pl".into(), ShipmentStatus::AwaitingCheck)],
        format!("opened {open:?}, Shopify holds {held:?}, resent {resent}, shipments {:?}", c.statuses(&boxed)),
    );
    agents.la.clear_switches();

    // Changes made in Shopify after submission.
    let scale = sandbox.create_order(order(&[("KITCHEN-SCALE-5KG", 3)]));
    let roller = sandbox.create_order(order(&[("PET-HAIR-ROLLER", 1)]));
    c.settle().await?;
    sandbox.edit_order(
        &scale,
        OrderEdit::SetQuantity {
            sku: "KITCHEN-SCALE-5KG".into(),
            quantity: 1,
        },
    )?;
    sandbox.cancel_order(&roller, "CUSTOMER")?;
    c.settle().await?;
    let kinds: Vec<(String, String)> = agents
        .shenzhen
        .accepted_messages()
        .into_iter()
        .map(|m| (m.shipment_id, m.kind))
        .collect();
    let scale_sg = c
        .case(&scale)
        .and_then(|c| c.shipments.first().map(|s| s.id.clone()));
    let roller_case = c.case(&roller);
    let roller_sg = roller_case
        .as_ref()
        .and_then(|c| c.shipments.first().map(|s| s.id.clone()));
    let amended = kinds
        .iter()
        .any(|(s, k)| Some(s) == scale_sg.as_ref() && k == "amendment");
    let cancel_sent = kinds
        .iter()
        .any(|(s, k)| Some(s) == roller_sg.as_ref() && k == "cancellation");
    let cancel_closed = roller_case.as_ref().is_some_and(|c| {
        c.exceptions
            .iter()
            .any(|e| e.kind == ExceptionKind::CancelledAfterSubmission && !e.is_open())
    });
    t.check(
        "an edit after submission reaches the agent as a revision; a cancellation as a cancel, closed by its answer",
        amended && cancel_sent && cancel_closed,
        format!("amendment {amended}, cancellation {cancel_sent}, exception closed {cancel_closed}"),
    );

    // A supplier down for a simulated day.
    agents.la.set_down(true);
    let earbuds = sandbox.create_order(order(&[("EARBUDS-TWS-X3", 2)]));
    c.settle().await?;
    for _ in 0..96 {
        clock.advance(Duration::from_secs(15 * 60));
        daemon.workflow().wait_quiet().await?;
    }
    let key = c
        .case(&earbuds)
        .and_then(|c| c.shipments.first().map(|s| format!("{}.r1", s.id)))
        .unwrap_or_default();
    let attempts = agents.la.posts_for(&key);
    agents.la.set_down(false);
    // The longest pause is 30 minutes plus up to 20% jitter.
    clock.advance(Duration::from_secs(37 * 60));
    c.settle().await?;
    let delivered = agents
        .la
        .accepted_messages()
        .iter()
        .filter(|m| m.key == key)
        .count();
    t.check(
        "an agent down for a simulated day gets the submission once when it is back",
        attempts >= 24
            && delivered == 1
            && agents.la.duplicates() == 0
            && c.statuses(&earbuds) == vec![("la-3pl".into(), ShipmentStatus::AwaitingCheck)],
        format!("{attempts} attempts while down, delivered {delivered} time(s)"),
    );

    // The whole path: check, pack, label, the carrier's acceptance, then Shopify.
    let phone = sandbox.create_order(order(&[("PHN-CASE-MAG-IP15", 2)]));
    c.settle().await?;
    let case = c
        .case(&phone)
        .ok_or_else(|| anyhow::anyhow!("no case for {phone}"))?;
    let sg = case.shipments[0].id.clone();
    let line = case.shipments[0].lines[0].line_item_id.clone();
    let number = agents
        .shenzhen
        .ship(&sg)
        .map_err(|e| anyhow::anyhow!("shipping {sg}: {e:?}"))?;
    c.settle().await?;
    let before_check = sandbox.fulfillments(&phone).len();
    let short_check = check_event(
        "demo-qc-short",
        &sg,
        &[(&line, "PHN-CASE-MAG-IP15", 1, 1)],
        "pass",
    );
    let refusal = match daemon.workflow().validate_event("shenzhen", &short_check) {
        Err(e) => e.to_string(),
        Ok(()) => "not refused".to_string(),
    };
    t.check(
        "a check that covers 1 of 2 units is refused at the door",
        refusal.contains("1 of 2 checked"),
        refusal,
    );
    let event = check_event(
        "demo-qc-1",
        &sg,
        &[(&line, "PHN-CASE-MAG-IP15", 2, 2)],
        "pass",
    );
    daemon
        .workflow()
        .record_event("shenzhen", event, Actor::Operator("demo".into()))
        .await?;
    c.settle().await?;
    let before_carrier = sandbox.fulfillments(&phone).len();
    let label_only = c.statuses(&phone);
    let labelled_at = crate::delivery::now_ms() as i64;
    agents
        .tracker
        .gwms_false_positive(&number, "cainiao", labelled_at);
    agents.tracker.flush().await;
    c.settle().await?;
    let fulfillments = sandbox.fulfillments(&phone);
    t.check(
        "nothing reached Shopify before a passing check and the carrier's own pickup scan",
        before_check == 0
            && before_carrier == 0
            && label_only == vec![("shenzhen".into(), ShipmentStatus::AwaitingAcceptance)],
        format!("checked and labelled: {label_only:?}"),
    );
    t.check(
        "after the carrier's pickup (not the warehouse's GWMS_ACCEPT): one fulfillment with tracking",
        fulfillments.len() == 1 && fulfillments[0]["trackingInfo"].to_string().contains(&number),
        format!(
            "{} fulfillment(s), tracking {}, shipment {:?}",
            fulfillments.len(),
            fulfillments
                .first()
                .map(|f| f["trackingInfo"].to_string())
                .unwrap_or_default(),
            c.statuses(&phone)
        ),
    );

    // The carrier carries on: Shopify hears of each change of status, once.
    use crate::sandbox::tracking::Checkpoint;
    let hour = 3_600_000;
    for checkpoint in [
        Checkpoint::new(
            "InTransit_007",
            Some("DEP"),
            "Departed from facility",
            Some("SHENZHEN"),
            labelled_at + 9 * hour,
        ),
        Checkpoint::new(
            "OutForDelivery_001",
            Some("OFD"),
            "Out for delivery",
            Some("PORTLAND, OR"),
            labelled_at + 50 * hour,
        ),
        Checkpoint::new(
            "Delivered_001",
            Some("DLV"),
            "Delivered, in mailbox",
            Some("PORTLAND, OR"),
            labelled_at + 56 * hour,
        ),
    ] {
        agents.tracker.push(&number, checkpoint)?;
    }
    agents.tracker.flush().await;
    c.settle().await?;
    let posted: Vec<String> = sandbox
        .fulfillments(&phone)
        .first()
        .and_then(|f| {
            f["events"]["nodes"]
                .as_array()
                .or_else(|| f["events"].as_array())
                .cloned()
        })
        .unwrap_or_default()
        .iter()
        .map(|e| e["status"].as_str().unwrap_or_default().to_string())
        .collect();
    t.check(
        "the carrier's progress reached Shopify as fulfillment events, each once, and the order is delivered",
        posted == ["CARRIER_PICKED_UP", "OUT_FOR_DELIVERY", "DELIVERED"]
            && c.statuses(&phone) == vec![("shenzhen".into(), ShipmentStatus::Delivered)],
        format!("events {posted:?}, shipment {:?}", c.statuses(&phone)),
    );

    // A label the carrier never takes: three business days later it is an exception; the
    // owner asks for a new label, and the new number is what Shopify gets once it is taken.
    let stuck = sandbox.create_order(order(&[("PHN-CASE-MAG-IP15", 1)]));
    c.settle().await?;
    let case = c
        .case(&stuck)
        .ok_or_else(|| anyhow::anyhow!("no case for {stuck}"))?;
    let sg = case.shipments[0].id.clone();
    let line = case.shipments[0].lines[0].line_item_id.clone();
    agents
        .shenzhen
        .ship(&sg)
        .map_err(|e| anyhow::anyhow!("shipping {sg}: {e:?}"))?;
    c.settle().await?;
    let check = crate::sandbox::harness::check_event_at(
        "demo-qc-stuck",
        &sg,
        &[(&line, "PHN-CASE-MAG-IP15", 1, 1)],
        "pass",
        clock.now_ms(),
    );
    daemon
        .workflow()
        .record_event("shenzhen", check, Actor::Operator("demo".into()))
        .await?;
    clock.advance(Duration::from_secs(6 * 24 * 3600));
    daemon.workflow().tick().await?;
    c.settle().await?;
    let opened = c.open(&stuck);
    let exception = opened
        .iter()
        .find(|(_, kind)| *kind == ExceptionKind::NoCarrierMovement)
        .map(|(id, _)| id.clone());
    if let Some(id) = &exception {
        c.decide(id, Decision::NewLabel).await?;
    }
    let parcel = c
        .case(&stuck)
        .and_then(|case| derive::parcels(&case.shipments[0]).into_keys().next())
        .unwrap_or_default();
    let relabel = crate::suppliers::SupplierEvent {
        id: "demo-relabel".into(),
        shipment_id: sg.clone(),
        occurred_at: crate::order::Timestamp::from_unix_ms(clock.now_ms()),
        kind: crate::suppliers::EventKind::LabelCreated {
            parcel_id: Some(parcel),
            carrier: "UPS".into(),
            tracking_number: "1ZDEMORELABEL01".into(),
            tracking_url: None,
        },
    };
    daemon
        .workflow()
        .record_event("shenzhen", relabel, Actor::Operator("demo".into()))
        .await?;
    agents.tracker.register("1ZDEMORELABEL01", "ups");
    agents.tracker.push(
        "1ZDEMORELABEL01",
        Checkpoint::new(
            "InTransit_002",
            Some("PU"),
            "Pickup scan",
            Some("SHENZHEN"),
            clock.now_ms() + hour,
        ),
    )?;
    agents.tracker.flush().await;
    c.settle().await?;
    let tracking = sandbox
        .fulfillments(&stuck)
        .first()
        .map(|f| f["trackingInfo"].to_string())
        .unwrap_or_default();
    t.check(
        "a label the carrier never took became an exception after 3 business days; the new label was fulfilled",
        exception.is_some() && tracking.contains("1ZDEMORELABEL01") && c.open(&stuck).is_empty(),
        format!("opened {opened:?}, tracking {tracking}, shipment {:?}", c.statuses(&stuck)),
    );

    // The gate was never bypassed: every fulfillment shipgate made in Shopify is one the gate
    // let through, for a shipment with a passing check and its carrier's acceptance.
    let mut made = 0;
    let mut unexplained = Vec::new();
    for id in sandbox.order_ids() {
        for fulfillment in sandbox.fulfillments(&id) {
            if fulfillment["origin"] != "app" {
                continue;
            }
            made += 1;
            let fid = fulfillment["id"].as_str().unwrap_or_default().to_string();
            let explained = c.case(&id).is_some_and(|case| {
                case.shipments.iter().any(|s| {
                    s.evidence.iter().any(|e| {
                        matches!(&e.kind, crate::workflow::model::EvidenceKind::FulfillmentCreated { fulfillment_id, .. } if *fulfillment_id == fid)
                    }) && !derive::passed_quantities(s).is_empty()
                        && derive::acceptances(s, c.placed(&id))
                            .iter()
                            .all(|(_, a)| a.is_some())
                })
            });
            if !explained {
                unexplained.push(fid);
            }
        }
    }
    t.check(
        "the gate was never bypassed: every fulfillment shipgate made had a passing check and carrier acceptance",
        made > 0 && unexplained.is_empty(),
        format!("{made} fulfillment(s) made by shipgate; unexplained: {unexplained:?}"),
    );

    let effects: Vec<_> = daemon.store().effects().collect::<Result<_, _>>()?;
    let failed = effects
        .iter()
        .filter(|e| matches!(e.state, EffectState::Failed { .. }))
        .count();
    let pending = effects.iter().filter(|e| e.is_pending()).count();
    let open_total = daemon.store().open_exception_count();
    t.check(
        "nothing left open or unsent: every exception decided or resolved, every effect delivered",
        failed == 0 && pending == 0 && open_total == 0,
        format!(
            "{} outbox effects ({pending} pending, {failed} failed), {open_total} open exceptions",
            effects.len()
        ),
    );
    Ok(())
}
