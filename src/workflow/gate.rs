//! The gate (invariant 3): the one function that decides which quantities of a shipment may be
//! fulfilled in Shopify. Every write-back of a fulfillment passes through [`fulfillable`];
//! nothing else creates fulfillments.
//!
//! A quantity of a fulfillment-order line may be fulfilled only when it has (a) a passing
//! physical check, (b) a packing record placing it in a parcel, (c) carrier acceptance evidence
//! for that parcel, (d) no open exception, (e) an order that is not cancelled, and (f) a Shopify
//! fulfillment order that is still open and not held by anyone. The inputs are plain facts the
//! workflow derives from evidence and the mirror; the function is pure, so the property test can
//! throw arbitrary histories at it.

use std::collections::{BTreeMap, BTreeSet};

/// One line of the shipment, as currently planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateLine {
    pub fulfillment_order_line_id: String,
    pub line_item_id: String,
    /// The shipment's current quantity of the line.
    pub quantity: i64,
}

/// A parcel as packed: which lines, how many of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateParcel {
    pub parcel_id: String,
    pub lines: Vec<(String, i64)>,
    /// Whether carrier acceptance evidence exists for this parcel's tracking number.
    pub accepted: bool,
}

/// The Shopify side of the shipment's fulfillment order, as mirrored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateFulfillmentOrder {
    pub id: String,
    pub location_id: Option<String>,
    /// OPEN or IN_PROGRESS, and not closed, cancelled or scheduled.
    pub open: bool,
    /// Held by anyone (shipgate included): nothing is fulfilled while a hold is on it.
    pub held: bool,
    /// Remaining quantity per fulfillment-order line id.
    pub remaining: BTreeMap<String, i64>,
}

/// Everything the gate looks at for one shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateInput {
    pub lines: Vec<GateLine>,
    /// Passed quantity per line item id, from the latest valid passing check (empty when the
    /// check failed or none exists).
    pub passed: BTreeMap<String, i64>,
    pub parcels: Vec<GateParcel>,
    /// Quantities per line item id already fulfilled through shipgate for this shipment.
    pub fulfilled: BTreeMap<String, i64>,
    /// The parcels whose tracking an earlier fulfillment of the shipment already carries.
    pub fulfilled_parcels: BTreeSet<String>,
    /// Whether an exception about this shipment is open. One about another line of the order
    /// (an unmapped SKU, say) does not stop this shipment's own quantities: its hold on the
    /// fulfillment order does, while it is on, through `fulfillment_order.held`.
    pub open_exception: bool,
    pub order_cancelled: bool,
    pub fulfillment_order: Option<GateFulfillmentOrder>,
}

/// What may be fulfilled now, in one `fulfillmentCreate` call (one location).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateDecision {
    pub fulfillment_order_id: String,
    pub location_id: Option<String>,
    /// (fulfillment-order line id, quantity), only positive quantities.
    pub lines: Vec<(String, i64)>,
    /// The accepted parcels whose contents make up these quantities: those no earlier
    /// fulfillment carries, or, when the units left are in parcels one already carries (a check
    /// that passed fewer units first), those.
    pub parcels: Vec<String>,
}

/// Why nothing may be fulfilled now (the first condition that fails), for the status and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    OrderCancelled,
    OpenException,
    FulfillmentOrderGone,
    FulfillmentOrderNotOpen,
    FulfillmentOrderHeld,
    NothingCovered,
}

impl Closed {
    /// Why, in words, for evidence and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Closed::OrderCancelled => "the order was cancelled",
            Closed::OpenException => "an exception is open on the shipment",
            Closed::FulfillmentOrderGone => "the fulfillment order is gone from Shopify",
            Closed::FulfillmentOrderNotOpen => "the fulfillment order is no longer open",
            Closed::FulfillmentOrderHeld => "the fulfillment order is on hold",
            Closed::NothingCovered => "nothing is covered",
        }
    }
}

/// Whether the gate is shut for the shipment as a whole, whatever its quantities: conditions
/// (d), (e) and (f). An intent recorded while the gate was open must not go out once one of
/// these holds; that quantities are already intended (`NothingCovered`) is no such reason.
pub fn shut(input: &GateInput) -> Option<Closed> {
    if input.order_cancelled {
        return Some(Closed::OrderCancelled);
    }
    if input.open_exception {
        return Some(Closed::OpenException);
    }
    let Some(fo) = input.fulfillment_order.as_ref() else {
        return Some(Closed::FulfillmentOrderGone);
    };
    if !fo.open {
        return Some(Closed::FulfillmentOrderNotOpen);
    }
    if fo.held {
        return Some(Closed::FulfillmentOrderHeld);
    }
    None
}

/// Decides what may be fulfilled. Quantities per line are the smallest of: what the check
/// passed, what accepted parcels hold, what Shopify still has open, and the shipment's own
/// quantity; minus what was already fulfilled through shipgate.
pub fn fulfillable(input: &GateInput) -> Result<GateDecision, Closed> {
    if let Some(closed) = shut(input) {
        return Err(closed);
    }
    let Some(fo) = input.fulfillment_order.as_ref() else {
        return Err(Closed::FulfillmentOrderGone);
    };
    let mut in_accepted: BTreeMap<&str, i64> = BTreeMap::new();
    let mut parcels_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for parcel in input.parcels.iter().filter(|p| p.accepted) {
        for (line, quantity) in &parcel.lines {
            *in_accepted.entry(line.as_str()).or_default() += (*quantity).max(0);
            parcels_of
                .entry(line.as_str())
                .or_default()
                .insert(parcel.parcel_id.as_str());
        }
    }
    let mut lines = Vec::new();
    let mut parcels = BTreeSet::new();
    for line in &input.lines {
        let item = line.line_item_id.as_str();
        let passed = input.passed.get(item).copied().unwrap_or(0);
        let accepted = in_accepted.get(item).copied().unwrap_or(0);
        let remaining = fo
            .remaining
            .get(&line.fulfillment_order_line_id)
            .copied()
            .unwrap_or(0);
        let done = input.fulfilled.get(item).copied().unwrap_or(0);
        let covered = passed.min(accepted).min(line.quantity) - done;
        let quantity = covered.min(remaining);
        if quantity > 0 {
            lines.push((line.fulfillment_order_line_id.clone(), quantity));
            // The customer is told each number once: a parcel an earlier fulfillment carries
            // is named again only when no other parcel holds the units left.
            let holding: Vec<&str> = parcels_of
                .get(item)
                .into_iter()
                .flatten()
                .copied()
                .collect();
            let fresh: Vec<&str> = holding
                .iter()
                .copied()
                .filter(|p| !input.fulfilled_parcels.contains(*p))
                .collect();
            parcels.extend(if fresh.is_empty() { holding } else { fresh });
        }
    }
    if lines.is_empty() {
        return Err(Closed::NothingCovered);
    }
    Ok(GateDecision {
        fulfillment_order_id: fo.id.clone(),
        location_id: fo.location_id.clone(),
        lines,
        parcels: parcels.into_iter().map(str::to_string).collect(),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn line(n: u32, quantity: i64) -> GateLine {
        GateLine {
            fulfillment_order_line_id: format!("fol{n}"),
            line_item_id: format!("li{n}"),
            quantity,
        }
    }

    fn input() -> GateInput {
        GateInput {
            lines: vec![line(1, 2), line(2, 1)],
            passed: [("li1".into(), 2), ("li2".into(), 1)].into(),
            parcels: vec![GateParcel {
                parcel_id: "P1".into(),
                lines: vec![("li1".into(), 2), ("li2".into(), 1)],
                accepted: true,
            }],
            fulfilled: BTreeMap::new(),
            fulfilled_parcels: BTreeSet::new(),
            open_exception: false,
            order_cancelled: false,
            fulfillment_order: Some(GateFulfillmentOrder {
                id: "fo1".into(),
                location_id: Some("loc1".into()),
                open: true,
                held: false,
                remaining: [("fol1".into(), 2), ("fol2".into(), 1)].into(),
            }),
        }
    }

    #[test]
    fn everything_in_place_opens_the_gate_for_everything() {
        let decision = fulfillable(&input()).unwrap();
        assert_eq!(decision.lines, vec![("fol1".into(), 2), ("fol2".into(), 1)]);
        assert_eq!(decision.parcels, vec!["P1".to_string()]);
    }

    #[test]
    fn a_second_fulfillment_names_only_the_parcels_the_first_did_not() {
        let mut i = input();
        i.lines = vec![line(1, 2)];
        i.passed = [("li1".into(), 2)].into();
        i.fulfillment_order.as_mut().unwrap().remaining = [("fol1".into(), 1)].into();
        i.parcels = vec![
            GateParcel {
                parcel_id: "P1".into(),
                lines: vec![("li1".into(), 1)],
                accepted: true,
            },
            GateParcel {
                parcel_id: "P2".into(),
                lines: vec![("li1".into(), 1)],
                accepted: true,
            },
        ];
        i.fulfilled = [("li1".into(), 1)].into();
        i.fulfilled_parcels = ["P1".to_string()].into();
        let second = fulfillable(&i).unwrap();
        assert_eq!(second.lines, vec![("fol1".into(), 1)]);
        assert_eq!(second.parcels, vec!["P2".to_string()]);
        // Units left only in a parcel the first fulfillment carries: that parcel, again.
        i.parcels = vec![GateParcel {
            parcel_id: "P1".into(),
            lines: vec![("li1".into(), 2)],
            accepted: true,
        }];
        assert_eq!(fulfillable(&i).unwrap().parcels, vec!["P1".to_string()]);
    }

    #[test]
    fn each_condition_alone_closes_it() {
        let mut i = input();
        i.order_cancelled = true;
        assert_eq!(fulfillable(&i), Err(Closed::OrderCancelled));
        let mut i = input();
        i.open_exception = true;
        assert_eq!(fulfillable(&i), Err(Closed::OpenException));
        let mut i = input();
        i.fulfillment_order.as_mut().unwrap().held = true;
        assert_eq!(fulfillable(&i), Err(Closed::FulfillmentOrderHeld));
        let mut i = input();
        i.fulfillment_order.as_mut().unwrap().open = false;
        assert_eq!(fulfillable(&i), Err(Closed::FulfillmentOrderNotOpen));
        let mut i = input();
        i.passed.clear();
        assert_eq!(fulfillable(&i), Err(Closed::NothingCovered));
        let mut i = input();
        i.parcels[0].accepted = false;
        assert_eq!(fulfillable(&i), Err(Closed::NothingCovered));
    }

    #[test]
    fn a_partial_shipment_fulfils_only_what_is_covered() {
        let mut i = input();
        i.parcels = vec![
            GateParcel {
                parcel_id: "P1".into(),
                lines: vec![("li1".into(), 1)],
                accepted: true,
            },
            GateParcel {
                parcel_id: "P2".into(),
                lines: vec![("li1".into(), 1), ("li2".into(), 1)],
                accepted: false,
            },
        ];
        let decision = fulfillable(&i).unwrap();
        assert_eq!(decision.lines, vec![("fol1".into(), 1)]);
        assert_eq!(decision.parcels, vec!["P1".to_string()]);
        // Once that is fulfilled, the same evidence opens nothing more.
        i.fulfilled.insert("li1".into(), 1);
        assert_eq!(fulfillable(&i), Err(Closed::NothingCovered));
    }

    /// A random history: which conditions hold, and random quantities everywhere.
    fn history() -> impl Strategy<Value = GateInput> {
        (
            prop::collection::vec(0i64..4, 2),
            prop::collection::vec(0i64..4, 2),
            prop::collection::vec((0i64..3, 0i64..3, any::<bool>()), 0..3),
            prop::collection::vec(0i64..3, 2),
            prop::collection::vec(0i64..4, 2),
            (
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(quantities, passed, parcels, fulfilled, remaining, flags)| {
                    let (exception, cancelled, fo_exists, open, held) = flags;
                    GateInput {
                        lines: vec![line(1, quantities[0]), line(2, quantities[1])],
                        passed: [("li1".into(), passed[0]), ("li2".into(), passed[1])].into(),
                        parcels: parcels
                            .into_iter()
                            .enumerate()
                            .map(|(n, (a, b, accepted))| GateParcel {
                                parcel_id: format!("P{n}"),
                                lines: vec![("li1".into(), a), ("li2".into(), b)],
                                accepted,
                            })
                            .collect(),
                        fulfilled: [("li1".into(), fulfilled[0]), ("li2".into(), fulfilled[1])]
                            .into(),
                        fulfilled_parcels: BTreeSet::new(),
                        open_exception: exception,
                        order_cancelled: cancelled,
                        fulfillment_order: fo_exists.then(|| GateFulfillmentOrder {
                            id: "fo1".into(),
                            location_id: None,
                            open,
                            held,
                            remaining: [
                                ("fol1".into(), remaining[0]),
                                ("fol2".into(), remaining[1]),
                            ]
                            .into(),
                        }),
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Invariant 3: whatever the history, every quantity the gate lets through has all six
        /// conditions, counted independently here.
        #[test]
        fn nothing_passes_the_gate_without_all_six_conditions(i in history()) {
            if let Ok(decision) = fulfillable(&i) {
                prop_assert!(!i.order_cancelled, "(e) the order is not cancelled");
                prop_assert!(!i.open_exception, "(d) no open exception");
                let fo = i.fulfillment_order.as_ref().expect("(f) the fulfillment order exists");
                prop_assert!(fo.open && !fo.held, "(f) open and not held");
                for (fol, quantity) in &decision.lines {
                    let line = i.lines.iter().find(|l| &l.fulfillment_order_line_id == fol).unwrap();
                    let item = &line.line_item_id;
                    let done = i.fulfilled.get(item).copied().unwrap_or(0);
                    let passed = i.passed.get(item).copied().unwrap_or(0);
                    let accepted: i64 = i.parcels.iter().filter(|p| p.accepted)
                        .flat_map(|p| &p.lines).filter(|(l, _)| l == item).map(|(_, q)| *q).sum();
                    prop_assert!(*quantity > 0);
                    prop_assert!(done + quantity <= passed, "(a) checked and passed");
                    prop_assert!(done + quantity <= accepted, "(b)+(c) packed in accepted parcels");
                    prop_assert!(done + quantity <= line.quantity, "never more than shipped");
                    prop_assert!(*quantity <= fo.remaining[fol], "never more than Shopify has open");
                }
                for parcel in &decision.parcels {
                    prop_assert!(i.parcels.iter().any(|p| &p.parcel_id == parcel && p.accepted));
                }
            }
        }
    }
}
