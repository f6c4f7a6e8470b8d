//! Root fields and mutations: they read and change [`State`] and return full objects, which the
//! projector then trims to the selection. Documents are validated before they cost anything by
//! projecting them onto prototypes: fully populated objects of every type a root field returns.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::engine::{
    self, Field, MUTATION_COST, OpKind, Operation, Projector, field_error, gql_error,
};
use super::model::{
    self, BulkOp, EVENT_STATUSES, FulfillmentEvent, FulfillmentSpec, HOLD_REASONS, State,
    Subscription, Tracking, UserError, fmt_secs, gid, gid_of, parse_time_ms,
};
use super::search::{self, Filter, PageRequest, SortKey};
use super::{NewLine, NewOrder};

/// Root fields of QueryRoot the sandbox answers.
pub(crate) const QUERY_FIELDS: [&str; 9] = [
    "orders",
    "nodes",
    "node",
    "order",
    "bulkOperation",
    "currentBulkOperation",
    "shop",
    "locations",
    "webhookSubscriptions",
];

/// Root fields of Mutation the sandbox answers.
pub(crate) const MUTATION_FIELDS: [&str; 7] = [
    "fulfillmentCreate",
    "fulfillmentEventCreate",
    "fulfillmentTrackingInfoUpdate",
    "fulfillmentOrderHold",
    "fulfillmentOrderReleaseHold",
    "bulkOperationRunQuery",
    "webhookSubscriptionCreate",
];

/// Webhook topics the sandbox knows, for `WebhookSubscriptionTopic` names.
pub(crate) const TOPICS: [&str; 20] = [
    "orders/create",
    "orders/updated",
    "orders/cancelled",
    "orders/edited",
    "orders/fulfilled",
    "orders/partially_fulfilled",
    "orders/paid",
    "orders/delete",
    "fulfillments/create",
    "fulfillments/update",
    "fulfillment_events/create",
    "fulfillment_orders/placed_on_hold",
    "fulfillment_orders/hold_released",
    "fulfillment_orders/cancelled",
    "fulfillment_orders/split",
    "fulfillment_orders/merged",
    "fulfillment_orders/moved",
    "bulk_operations/finish",
    "app/uninstalled",
    "shop/update",
];

/// The enum name of a topic (`orders/create` → `ORDERS_CREATE`).
pub(crate) fn topic_enum(topic: &str) -> String {
    topic.replace('/', "_").to_uppercase()
}

/// A bulk operation that nobody polled completes on its own after this long.
pub(crate) const BULK_RUN_MS: i64 = 1000;
/// Bulk query operations that may run at once per shop (2026-01+).
pub(crate) const BULK_CONCURRENCY: usize = 5;

/// What a request needs besides the state.
pub(crate) struct Ctx<'a> {
    pub now_ms: i64,
    pub base_url: &'a str,
    pub plan_name: &'a str,
}

/// The result of executing an operation.
pub(crate) struct Executed {
    pub data: Option<Value>,
    pub errors: Vec<Value>,
    pub actual_cost: u64,
    pub search: Vec<Value>,
}

/// Checks the root fields exist and projects every root field's selection onto prototypes,
/// so an unknown field anywhere is reported before the request costs anything.
pub(crate) fn validate(op: &Operation) -> Vec<Value> {
    let (root_type, known): (&str, &[&str]) = match op.kind {
        OpKind::Query => ("QueryRoot", &QUERY_FIELDS),
        OpKind::Mutation => ("Mutation", &MUTATION_FIELDS),
    };
    let mut errors = Vec::new();
    for field in op.root_fields() {
        if field.name == "__typename" {
            continue;
        }
        if !known.contains(&field.name.as_str()) {
            errors.push(json!({
                "message": format!("Field '{}' doesn't exist on type '{root_type}'", field.name),
                "locations": field.locations(),
                "extensions": { "code": "undefinedField", "typeName": root_type, "fieldName": field.name },
            }));
            continue;
        }
        if let Some(proto) = prototype(&field.name) {
            let mut p = Projector::validating();
            let _ = p.value(proto, field);
            errors.append(&mut p.errors);
        }
    }
    errors
}

/// Runs an operation against the state. Mutations change it; queries may too (a bulk
/// operation's status advances when polled).
pub(crate) fn execute(state: &mut State, op: &Operation, ctx: &Ctx<'_>) -> Executed {
    let mut data = Map::new();
    let mut errors = Vec::new();
    let mut actual = 0;
    let mut warnings = Vec::new();
    for field in op.root_fields() {
        if field.name == "__typename" {
            let root = if op.kind == OpKind::Query {
                "QueryRoot"
            } else {
                "Mutation"
            };
            data.insert(field.key().to_string(), json!(root));
            continue;
        }
        let resolved = match op.kind {
            OpKind::Query => query_field(state, field, ctx, &mut warnings),
            OpKind::Mutation => mutation_field(state, field, ctx),
        };
        let full = match resolved {
            Ok(v) => v,
            Err(mut e) => {
                errors.append(&mut e);
                return Executed {
                    data: None,
                    errors,
                    actual_cost: actual,
                    search: warnings,
                };
            }
        };
        let mut p = Projector::new();
        let (value, cost) = match (&full, field.name.as_str()) {
            // nodes(ids:) is charged per object found; a null costs nothing.
            (Value::Array(items), "nodes") => {
                let mut out = Vec::with_capacity(items.len());
                let mut sum = 0;
                for item in items {
                    let (v, c) = p.value(item, field);
                    out.push(v);
                    sum += c;
                }
                (Value::Array(out), sum)
            }
            _ => p.value(&full, field),
        };
        actual += match op.kind {
            // The payload object is included in the mutation's 10 points.
            OpKind::Mutation => MUTATION_COST + cost.saturating_sub(1),
            OpKind::Query => cost,
        };
        errors.append(&mut p.errors);
        data.insert(field.key().to_string(), value);
    }
    Executed {
        data: Some(Value::Object(data)),
        errors,
        actual_cost: actual,
        search: warnings,
    }
}

fn missing(field: &Field, arg: &str) -> Vec<Value> {
    vec![field_error(
        field,
        format!(
            "Field '{}' is missing required arguments: {arg}",
            field.name
        ),
        "missingRequiredArguments",
    )]
}

fn invalid(field: &Field, arg: &str, explanation: impl std::fmt::Display) -> Vec<Value> {
    vec![field_error(
        field,
        format!(
            "Argument '{arg}' on Field '{}' has an invalid value: {explanation}",
            field.name
        ),
        "argumentLiteralsIncompatible",
    )]
}

/// A required string argument, or Shopify's "missing required arguments" error.
fn required_str<'a>(field: &'a Field, name: &str) -> Result<&'a str, Vec<Value>> {
    field.arg_str(name).ok_or_else(|| missing(field, name))
}

/// A required input-object argument, or Shopify's "missing required arguments" error.
fn required_object<'a>(
    field: &'a Field,
    name: &str,
) -> Result<&'a serde_json::Map<String, Value>, Vec<Value>> {
    field
        .arg(name)
        .and_then(Value::as_object)
        .ok_or_else(|| missing(field, name))
}

/// A non-null string field `key` of an input object (`value` is what the object holds there), or
/// Shopify's "invalid value" error naming it.
fn required_in<'a>(
    field: &Field,
    arg: &str,
    value: Option<&'a Value>,
    key: &str,
) -> Result<&'a str, Vec<Value>> {
    value
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(field, arg, format!("{key} (Expected value to not be null)")))
}

fn query_field(
    state: &mut State,
    field: &Field,
    ctx: &Ctx<'_>,
    warnings: &mut Vec<Value>,
) -> Result<Value, Vec<Value>> {
    match field.name.as_str() {
        "orders" => orders(state, field, warnings),
        "nodes" => {
            let ids = field
                .arg("ids")
                .and_then(Value::as_array)
                .ok_or_else(|| missing(field, "ids"))?;
            if ids.len() > engine::MAX_PAGE as usize {
                return Err(invalid(
                    field,
                    "ids",
                    format!("at most {} ids per request", engine::MAX_PAGE),
                ));
            }
            let only = engine::selected_names(&field.selection);
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let id = id
                    .as_str()
                    .ok_or_else(|| invalid(field, "ids", "ids must be strings"))?;
                if model::parse_gid(id).is_none() {
                    return Err(vec![field_error(
                        field,
                        format!("Invalid global id '{id}'"),
                        "argumentLiteralsIncompatible",
                    )]);
                }
                out.push(state.node_json_only(id, Some(&only)).unwrap_or(Value::Null));
            }
            Ok(Value::Array(out))
        }
        "node" | "order" => {
            let id = required_str(field, "id")?;
            if model::parse_gid(id).is_none() {
                return Err(vec![field_error(
                    field,
                    format!("Invalid global id '{id}'"),
                    "argumentLiteralsIncompatible",
                )]);
            }
            let only = engine::selected_names(&field.selection);
            let node = state.node_json_only(id, Some(&only)).unwrap_or(Value::Null);
            if field.name == "order"
                && node.get("__typename").and_then(Value::as_str) != Some("Order")
            {
                return Ok(Value::Null);
            }
            Ok(node)
        }
        "bulkOperation" => {
            let id = required_str(field, "id")?;
            settle_bulk(state, ctx.now_ms);
            let Some(n) = gid_of(id, "BulkOperation") else {
                return Ok(Value::Null);
            };
            Ok(poll_bulk(state, n, ctx).unwrap_or(Value::Null))
        }
        "currentBulkOperation" => {
            settle_bulk(state, ctx.now_ms);
            let Some(n) = state.bulk_ops.last().map(|op| op.id) else {
                return Ok(Value::Null);
            };
            Ok(poll_bulk(state, n, ctx).unwrap_or(Value::Null))
        }
        "shop" => Ok(shop_json(&state.shop, ctx.plan_name)),
        "locations" => {
            Ok(json!({ "__connection": state.locations_json(), "__itemType": "Location" }))
        }
        "webhookSubscriptions" => Ok(json!({
            "__connection": state.subscriptions.iter().map(subscription_json).collect::<Vec<_>>(),
            "__itemType": "WebhookSubscription",
        })),
        other => Err(vec![gql_error(format!(
            "Field '{other}' doesn't exist on type 'QueryRoot'"
        ))]),
    }
}

fn orders(state: &State, field: &Field, warnings: &mut Vec<Value>) -> Result<Value, Vec<Value>> {
    let first = field.arg_u64("first");
    let last = field.arg_u64("last");
    if first.is_none() && last.is_none() {
        return Err(vec![field_error(
            field,
            "you must provide one of first or last",
            "argumentLiteralsIncompatible",
        )]);
    }
    if first.or(last).is_some_and(|n| n > engine::MAX_PAGE) {
        return Err(invalid(
            field,
            if first.is_some() { "first" } else { "last" },
            format!("must be at most {}", engine::MAX_PAGE),
        ));
    }
    let sort_name = field.arg_str("sortKey").unwrap_or("ID");
    let sort = SortKey::parse(sort_name).ok_or_else(|| {
        invalid(
            field,
            "sortKey",
            format!(
                "{sort_name} (the sandbox sorts by ID, UPDATED_AT, CREATED_AT or PROCESSED_AT)"
            ),
        )
    })?;
    let cursor = |name: &str| -> Result<Option<(i64, u64)>, Vec<Value>> {
        match field.arg_str(name) {
            None => Ok(None),
            Some(c) => search::decode_cursor(c).map(Some).ok_or_else(|| {
                vec![field_error(
                    field,
                    format!("Invalid cursor for '{name}'"),
                    "BAD_REQUEST",
                )]
            }),
        }
    };
    let query = field.arg_str("query").unwrap_or("");
    let filter = Filter::parse(query);
    if !filter.warnings.is_empty() {
        warnings.push(json!({
            "path": [field.key()],
            "query": query,
            "warnings": filter.warnings,
        }));
    }
    let page = search::page(
        state,
        &filter,
        &PageRequest {
            first: first.map(|n| n as usize),
            last: last.map(|n| n as usize),
            after: cursor("after")?,
            before: cursor("before")?,
            sort,
            reverse: field
                .arg("reverse")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
    );
    let only = engine::node_names(field);
    let items: Vec<Value> = page
        .ids
        .iter()
        .map(|id| state.order_json_only(&state.orders[id], Some(&only)))
        .collect();
    Ok(json!({
        "__connection": items,
        "__cursors": page.cursors,
        "__itemType": "Order",
        "__pageInfo": { "hasNextPage": page.has_next, "hasPreviousPage": page.has_previous },
    }))
}

fn shop_json(domain: &str, plan: &str) -> Value {
    json!({
        "__typename": "Shop",
        "id": gid("Shop", 1),
        "name": "Sandbox Store",
        "myshopifyDomain": domain,
        "currencyCode": "USD",
        "ianaTimezone": "America/New_York",
        "plan": { "__typename": "ShopPlan", "displayName": plan, "partnerDevelopment": false, "shopifyPlus": plan == "Shopify Plus" },
    })
}

fn subscription_json(s: &Subscription) -> Value {
    json!({
        "__typename": "WebhookSubscription",
        "id": gid("WebhookSubscription", s.id),
        "topic": topic_enum(&s.topic),
        "uri": s.uri,
        "callbackUrl": s.uri,
        "format": s.format,
        "includeFields": s.include_fields,
        "filter": s.filter,
        "createdAt": fmt_secs(s.created_at),
        "updatedAt": fmt_secs(s.created_at),
        "apiVersion": { "__typename": "ApiVersion", "handle": "2026-10", "displayName": "2026-10", "supported": true },
        "endpoint": { "__typename": "WebhookHttpEndpoint", "callbackUrl": s.uri },
    })
}

fn user_errors(errors: &[UserError], typed: Option<&str>) -> Value {
    Value::Array(
        errors
            .iter()
            .map(|e| match typed {
                Some(ty) => json!({ "__typename": ty, "field": e.field, "message": e.message, "code": e.code }),
                None => json!({ "__typename": "UserError", "field": e.field, "message": e.message }),
            })
            .collect(),
    )
}

fn mutation_field(state: &mut State, field: &Field, ctx: &Ctx<'_>) -> Result<Value, Vec<Value>> {
    let now = ctx.now_ms;
    match field.name.as_str() {
        "fulfillmentCreate" => {
            let input = required_object(field, "fulfillment")?;
            let groups = input
                .get("lineItemsByFulfillmentOrder")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    invalid(
                        field,
                        "fulfillment",
                        "lineItemsByFulfillmentOrder (Expected value to not be null)",
                    )
                })?;
            let mut spec = FulfillmentSpec {
                notify_customer: input
                    .get("notifyCustomer")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                message: field.arg_str("message").map(str::to_string),
                tracking: tracking_input(input.get("trackingInfo")),
                by_app: true,
                ..FulfillmentSpec::default()
            };
            for group in groups {
                let fo = required_in(
                    field,
                    "fulfillment",
                    group.get("fulfillmentOrderId"),
                    "fulfillmentOrderId",
                )?;
                let lines = match group
                    .get("fulfillmentOrderLineItems")
                    .filter(|v| !v.is_null())
                {
                    None => None,
                    Some(list) => {
                        let list = list.as_array().ok_or_else(|| {
                            invalid(
                                field,
                                "fulfillment",
                                "fulfillmentOrderLineItems must be a list",
                            )
                        })?;
                        let mut lines = Vec::with_capacity(list.len());
                        for item in list {
                            let id = item.get("id").and_then(Value::as_str);
                            let quantity = item.get("quantity").and_then(Value::as_i64);
                            match (id, quantity) {
                                (Some(id), Some(q)) => lines.push((id.to_string(), q)),
                                _ => {
                                    return Err(invalid(
                                        field,
                                        "fulfillment",
                                        "fulfillmentOrderLineItems need id and quantity",
                                    ));
                                }
                            }
                        }
                        Some(lines)
                    }
                };
                spec.groups.push((fo.to_string(), lines));
            }
            let (fulfillment, errors) = match state.create_fulfillment(&spec, now) {
                Ok(id) => {
                    let (o, f) = state
                        .fulfillment(&gid("Fulfillment", id))
                        .expect("just created");
                    (state.fulfillment_json(o, f), vec![])
                }
                Err(e) => (Value::Null, vec![e]),
            };
            Ok(
                json!({ "__typename": "FulfillmentCreatePayload", "fulfillment": fulfillment, "userErrors": user_errors(&errors, None) }),
            )
        }
        "fulfillmentEventCreate" => {
            let input = required_object(field, "fulfillmentEvent")?;
            let fulfillment_id = required_in(
                field,
                "fulfillmentEvent",
                input.get("fulfillmentId"),
                "fulfillmentId",
            )?;
            let status = input
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !EVENT_STATUSES.contains(&status) {
                return Err(invalid(
                    field,
                    "fulfillmentEvent",
                    format!("status ({status}). Expected type 'FulfillmentEventStatus!'"),
                ));
            }
            let time = |key: &str| -> Result<Option<i64>, Vec<Value>> {
                match input.get(key).and_then(Value::as_str) {
                    None => Ok(None),
                    Some(t) => parse_time_ms(t)
                        .map(|ms| Some(ms.div_euclid(1000)))
                        .ok_or_else(|| {
                            invalid(
                                field,
                                "fulfillmentEvent",
                                format!("{key} ({t}) is not a DateTime"),
                            )
                        }),
                }
            };
            let text = |key: &str| input.get(key).and_then(Value::as_str).map(str::to_string);
            let event = FulfillmentEvent {
                id: 0,
                status: status.to_string(),
                happened_at: time("happenedAt")?.unwrap_or(now / 1000),
                created_at: now / 1000,
                estimated_delivery_at: time("estimatedDeliveryAt")?,
                message: text("message"),
                city: text("city"),
                province: text("province"),
                country: text("country"),
                zip: text("zip"),
            };
            let (event, errors) = match state.add_event(fulfillment_id, event, now) {
                Ok((order_id, event_id)) => {
                    let order = &state.orders[&order_id];
                    let event = order
                        .fulfillments
                        .iter()
                        .flat_map(|f| &f.events)
                        .find(|e| e.id == event_id)
                        .map(State::event_json)
                        .unwrap_or(Value::Null);
                    (event, vec![])
                }
                Err(e) => (Value::Null, vec![e]),
            };
            Ok(
                json!({ "__typename": "FulfillmentEventCreatePayload", "fulfillmentEvent": event, "userErrors": user_errors(&errors, None) }),
            )
        }
        "fulfillmentTrackingInfoUpdate" => {
            let id = required_str(field, "fulfillmentId")?;
            let input = field
                .arg("trackingInfoInput")
                .ok_or_else(|| missing(field, "trackingInfoInput"))?;
            let tracking = tracking_input(Some(input));
            let (fulfillment, errors) = match state.update_tracking(id, tracking, now) {
                Ok(_) => {
                    let (o, f) = state.fulfillment(id).expect("just updated");
                    (state.fulfillment_json(o, f), vec![])
                }
                Err(e) => (Value::Null, vec![e]),
            };
            Ok(
                json!({ "__typename": "FulfillmentTrackingInfoUpdatePayload", "fulfillment": fulfillment, "userErrors": user_errors(&errors, None) }),
            )
        }
        "fulfillmentOrderHold" => {
            let id = required_str(field, "id")?;
            let input = required_object(field, "fulfillmentHold")?;
            let reason = input
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !HOLD_REASONS.contains(&reason) {
                return Err(invalid(
                    field,
                    "fulfillmentHold",
                    format!("reason ({reason}). Expected type 'FulfillmentHoldReason!'"),
                ));
            }
            if input
                .get("fulfillmentOrderLineItems")
                .and_then(Value::as_array)
                .is_some_and(|l| !l.is_empty())
            {
                let error = UserError::new(
                    &["fulfillmentHold", "fulfillmentOrderLineItems"],
                    "The sandbox holds whole fulfillment orders only; it does not split them.",
                )
                .with_code("FULFILLMENT_ORDER_NOT_SPLITTABLE");
                return Ok(hold_payload(state, None, None, &[error]));
            }
            let notes = input
                .get("reasonNotes")
                .and_then(Value::as_str)
                .map(str::to_string);
            let handle = input
                .get("handle")
                .and_then(Value::as_str)
                .map(str::to_string);
            match state.place_hold(id, reason, notes, handle, true, now) {
                Ok((_, hold_id)) => Ok(hold_payload(state, Some(id), Some(hold_id), &[])),
                Err(e) => Ok(hold_payload(state, None, None, &[e])),
            }
        }
        "fulfillmentOrderReleaseHold" => {
            let id = required_str(field, "id")?;
            let hold_ids: Option<Vec<String>> =
                field.arg("holdIds").and_then(Value::as_array).map(|ids| {
                    ids.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                });
            let (fo, errors) = match state.release_holds(id, hold_ids.as_deref(), true, now) {
                Ok(_) => (state.node_json(id).unwrap_or(Value::Null), vec![]),
                Err(e) => (Value::Null, vec![e]),
            };
            Ok(json!({
                "__typename": "FulfillmentOrderReleaseHoldPayload",
                "fulfillmentOrder": fo,
                "userErrors": user_errors(&errors, Some("FulfillmentOrderReleaseHoldUserError")),
            }))
        }
        "bulkOperationRunQuery" => {
            let query = required_str(field, "query")?;
            Ok(run_bulk(state, query, ctx))
        }
        "webhookSubscriptionCreate" => {
            let topic_name = required_str(field, "topic")?;
            let topic = TOPICS
                .iter()
                .find(|t| topic_enum(t) == topic_name)
                .ok_or_else(|| {
                    invalid(
                        field,
                        "topic",
                        format!("{topic_name}. Expected type 'WebhookSubscriptionTopic!'"),
                    )
                })?;
            let input = required_object(field, "webhookSubscription")?;
            let uri = input
                .get("uri")
                .or_else(|| input.get("callbackUrl"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let mut errors = Vec::new();
            if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                errors.push(UserError::new(
                    &["webhookSubscription", "callbackUrl"],
                    "Address is invalid",
                ));
            } else if state
                .subscriptions
                .iter()
                .any(|s| s.topic == *topic && s.uri == uri)
            {
                errors.push(UserError::new(
                    &["webhookSubscription", "callbackUrl"],
                    "Address for this topic has already been taken",
                ));
            }
            let subscription = if errors.is_empty() {
                let s = Subscription {
                    id: state.new_id(),
                    topic: topic.to_string(),
                    uri,
                    format: input
                        .get("format")
                        .and_then(Value::as_str)
                        .unwrap_or("JSON")
                        .to_string(),
                    include_fields: input
                        .get("includeFields")
                        .and_then(Value::as_array)
                        .map(|l| {
                            l.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default(),
                    filter: input
                        .get("filter")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    created_at: now / 1000,
                };
                let json = subscription_json(&s);
                state.subscriptions.push(s);
                json
            } else {
                Value::Null
            };
            Ok(json!({
                "__typename": "WebhookSubscriptionCreatePayload",
                "webhookSubscription": subscription,
                "userErrors": user_errors(&errors, None),
            }))
        }
        other => Err(vec![gql_error(format!(
            "Field '{other}' doesn't exist on type 'Mutation'"
        ))]),
    }
}

fn hold_payload(
    state: &State,
    fo_gid: Option<&str>,
    hold_id: Option<u64>,
    errors: &[UserError],
) -> Value {
    let fo = fo_gid
        .and_then(|id| state.node_json(id))
        .unwrap_or(Value::Null);
    let hold = hold_id
        .and_then(|h| {
            fo.get("fulfillmentHolds")?
                .as_array()?
                .iter()
                .find(|x| x["id"] == gid("FulfillmentHold", h))
                .cloned()
        })
        .unwrap_or(Value::Null);
    json!({
        "__typename": "FulfillmentOrderHoldPayload",
        "fulfillmentHold": hold,
        "fulfillmentOrder": fo,
        "remainingFulfillmentOrder": null,
        "userErrors": user_errors(errors, Some("FulfillmentOrderHoldUserError")),
    })
}

/// Reads `FulfillmentTrackingInput`: `number`/`numbers` paired with `url`/`urls`. Without a URL,
/// carriers Shopify knows get their tracking page; others keep none.
fn tracking_input(input: Option<&Value>) -> Vec<Tracking> {
    let Some(input) = input.and_then(Value::as_object) else {
        return Vec::new();
    };
    let text = |key: &str| input.get(key).and_then(Value::as_str).map(str::to_string);
    let list = |key: &str| -> Vec<String> {
        input
            .get(key)
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let company = text("company");
    let mut numbers = list("numbers");
    if numbers.is_empty()
        && let Some(n) = text("number")
    {
        numbers.push(n);
    }
    let mut urls = list("urls");
    if urls.is_empty()
        && let Some(u) = text("url")
    {
        urls.push(u);
    }
    if numbers.is_empty() {
        return urls
            .into_iter()
            .map(|url| Tracking {
                company: company.clone(),
                number: None,
                url: Some(url),
            })
            .collect();
    }
    numbers
        .into_iter()
        .enumerate()
        .map(|(i, number)| Tracking {
            url: urls
                .get(i)
                .or(urls.first().filter(|_| i == 0))
                .cloned()
                .or_else(|| model::tracking_url(company.as_deref(), &number)),
            company: company.clone(),
            number: Some(number),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Bulk operations
// ---------------------------------------------------------------------------------------------

fn bulk_json(op: &BulkOp, base_url: &str, status: &str) -> Value {
    let done = status == "COMPLETED";
    json!({
        "__typename": "BulkOperation",
        "id": gid("BulkOperation", op.id),
        "status": status,
        "type": "QUERY",
        "errorCode": null,
        "query": op.query,
        "createdAt": fmt_secs(op.created_at / 1000),
        "completedAt": op.completed_at.filter(|_| done).map(|ms| fmt_secs(ms / 1000)),
        // UnsignedInt64 travels as a string.
        "objectCount": if done { op.object_count.to_string() } else { "0".to_string() },
        "rootObjectCount": if done { op.root_object_count.to_string() } else { "0".to_string() },
        "fileSize": op.result.as_ref().filter(|_| done).map(|r| r.len().to_string()),
        "url": if done { Some(format!("{base_url}/_sandbox/bulk/{}.jsonl", op.id)) } else { None },
        "partialDataUrl": null,
    })
}

/// Completes operations whose run finished and that nobody polled within their running time,
/// emitting `bulk_operations/finish` for each.
pub(crate) fn settle_bulk(state: &mut State, now_ms: i64) {
    let mut finished = Vec::new();
    for op in &mut state.bulk_ops {
        if let (None, Some(computed)) = (op.completed_at, op.computed_at)
            && now_ms - op.created_at >= BULK_RUN_MS
        {
            op.completed_at = Some(computed.max(op.created_at + BULK_RUN_MS));
            finished.push(op.clone());
        }
    }
    for op in finished {
        emit_bulk_finish(state, &op, now_ms);
    }
}

fn emit_bulk_finish(state: &mut State, op: &BulkOp, now_ms: i64) {
    let body = json!({
        "admin_graphql_api_id": gid("BulkOperation", op.id),
        "completed_at": op.completed_at.map(|ms| model::fmt_rest(ms / 1000)),
        "created_at": model::fmt_rest(op.created_at / 1000),
        "error_code": null,
        "status": "completed",
        "type": "query",
    });
    state.outbox.push(model::Outgoing {
        topic: "bulk_operations/finish".into(),
        body: model::shopify_json(&body),
        at_ms: now_ms,
    });
}

/// Reports a bulk operation to a poll: the first poll of a fresh operation sees it RUNNING,
/// a later one COMPLETED once its run went through every order, so clients must really poll.
fn poll_bulk(state: &mut State, id: u64, ctx: &Ctx<'_>) -> Option<Value> {
    let index = state.bulk_ops.iter().position(|op| op.id == id)?;
    let op = &mut state.bulk_ops[index];
    if op.completed_at.is_some() {
        return Some(bulk_json(op, ctx.base_url, "COMPLETED"));
    }
    if op.polls == 0 || op.result.is_none() {
        op.polls += 1;
        return Some(bulk_json(op, ctx.base_url, "RUNNING"));
    }
    op.completed_at = Some(ctx.now_ms);
    let op = op.clone();
    emit_bulk_finish(state, &op, ctx.now_ms);
    Some(bulk_json(&op, ctx.base_url, "COMPLETED"))
}

/// Orders a bulk run goes through under the lock at a time: other requests get their turn
/// between chunks, as they would while Shopify runs a bulk query.
pub(crate) const BULK_CHUNK: usize = 200;

/// Runs one chunk of a bulk operation; returns true when the run is finished (or gone).
pub(crate) fn bulk_step(state: &mut State, id: u64, now_ms: i64) -> bool {
    let Some(index) = state.bulk_ops.iter().position(|op| op.id == id) else {
        return true;
    };
    let Some(mut job) = state.bulk_ops[index].job.take() else {
        return true;
    };
    let only = engine::selected_names(&job.selection);
    let lower = match job.after {
        Some(after) => std::ops::Bound::Excluded(after),
        None => std::ops::Bound::Unbounded,
    };
    let mut errors = Vec::new();
    let mut seen = 0;
    let mut last = None;
    for (order_id, order) in state.orders.range((lower, std::ops::Bound::Unbounded)) {
        if seen == BULK_CHUNK {
            break;
        }
        seen += 1;
        last = Some(*order_id);
        if !job.filter.matches(order) {
            continue;
        }
        // One order at a time: the JSON objects of 100k orders at once would not fit in memory.
        let item = state.order_json_only(order, Some(&only));
        engine::bulk_lines(
            std::slice::from_ref(&item),
            &job.selection,
            None,
            &mut job.out,
            &mut job.counts,
            &mut errors,
        );
    }
    let op = &mut state.bulk_ops[index];
    if seen == BULK_CHUNK {
        job.after = last;
        op.job = Some(job);
        return false;
    }
    op.object_count = job.counts.0;
    op.root_object_count = job.counts.1;
    op.result = Some(std::sync::Arc::new(job.out));
    op.computed_at = Some(now_ms);
    true
}

/// Starts a bulk query: validates it, refuses a sixth concurrent one, and computes its JSONL.
fn run_bulk(state: &mut State, query: &str, ctx: &Ctx<'_>) -> Value {
    let payload = |op: Value, errors: Vec<UserError>| {
        json!({
            "__typename": "BulkOperationRunQueryPayload",
            "bulkOperation": op,
            "userErrors": user_errors(&errors, Some("BulkOperationUserError")),
        })
    };
    let invalid = |message: String| {
        payload(
            Value::Null,
            vec![UserError::new(&["query"], message).with_code("INVALID")],
        )
    };
    settle_bulk(state, ctx.now_ms);
    if state
        .bulk_ops
        .iter()
        .filter(|op| op.completed_at.is_none())
        .count()
        >= BULK_CONCURRENCY
    {
        return payload(
            Value::Null,
            vec![UserError::new(
                &["query"],
                format!("A maximum of {BULK_CONCURRENCY} bulk query operations can run at the same time for this app and shop."),
            )
            .with_code("LIMIT_REACHED")],
        );
    }
    let op = match engine::prepare(query, &Map::new(), None) {
        Ok(op) => op,
        Err(errors) => {
            let message = errors
                .first()
                .and_then(|e| e["message"].as_str())
                .unwrap_or("Invalid bulk query")
                .to_string();
            return invalid(message);
        }
    };
    let roots = op.root_fields();
    if op.kind != OpKind::Query || roots.len() != 1 || roots[0].name != "orders" {
        return invalid(
            "Bulk queries in the sandbox must have exactly one root field, the orders connection."
                .into(),
        );
    }
    let root = roots[0];
    let mut node_selection = Vec::new();
    let mut fields = Vec::new();
    engine::flatten_fields(&root.selection, &mut fields);
    for f in fields {
        match f.name.as_str() {
            "nodes" => node_selection.extend(f.selection.iter().cloned()),
            "edges" => {
                let mut inner = Vec::new();
                engine::flatten_fields(&f.selection, &mut inner);
                for g in inner.into_iter().filter(|g| g.name == "node") {
                    node_selection.extend(g.selection.iter().cloned());
                }
            }
            "pageInfo" => {}
            other => {
                return invalid(format!(
                    "Field '{other}' doesn't exist on type 'OrderConnection'"
                ));
            }
        }
    }
    if node_selection.is_empty() {
        return invalid(
            "Bulk queries must select the connection's edges { node } or nodes.".into(),
        );
    }
    // Validate the node selection on the prototype order before running it for real.
    let mut check = Vec::new();
    let mut errors = Vec::new();
    engine::bulk_lines(
        std::slice::from_ref(prototype_order()),
        &node_selection,
        None,
        &mut check,
        &mut (0, 0),
        &mut errors,
    );
    if let Some(e) = errors.first() {
        return invalid(
            e["message"]
                .as_str()
                .unwrap_or("Invalid bulk query")
                .to_string(),
        );
    }
    let id = state.new_id();
    state.bulk_ops.push(BulkOp {
        id,
        query: query.to_string(),
        created_at: ctx.now_ms,
        completed_at: None,
        polls: 0,
        result: None,
        computed_at: None,
        object_count: 0,
        root_object_count: 0,
        job: Some(model::BulkJob {
            filter: Filter::parse(root.arg_str("query").unwrap_or("")),
            selection: node_selection,
            after: None,
            out: Vec::new(),
            counts: (0, 0),
        }),
    });
    // A small shop is done in one step; a big one goes on in the background.
    if !bulk_step(state, id, ctx.now_ms) {
        state.bulk_started.push(id);
    }
    let op = state.bulk_ops.last().expect("just pushed");
    payload(bulk_json(op, ctx.base_url, "CREATED"), vec![])
}

/// The JSONL of a completed bulk operation.
pub(crate) fn bulk_result(state: &State, id: u64) -> Option<std::sync::Arc<Vec<u8>>> {
    state
        .bulk_ops
        .iter()
        .find(|op| op.id == id && op.completed_at.is_some())
        .and_then(|op| op.result.clone())
}

// ---------------------------------------------------------------------------------------------
// Prototypes
// ---------------------------------------------------------------------------------------------

struct Prototypes {
    order: Value,
    by_field: Vec<(&'static str, Value)>,
}

fn prototypes() -> &'static Prototypes {
    static PROTOTYPES: OnceLock<Prototypes> = OnceLock::new();
    PROTOTYPES.get_or_init(build_prototypes)
}

fn prototype_order() -> &'static Value {
    &prototypes().order
}

fn prototype(field: &str) -> Option<&'static Value> {
    prototypes()
        .by_field
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, v)| v)
}

/// A shop with one order that has one of everything (an address, a partial fulfillment with
/// tracking and an event, a hold), whose objects stand for every type in validation.
fn build_prototypes() -> Prototypes {
    let mut state = State::new(
        "prototype.myshopify.com",
        &["A".to_string(), "B".to_string()],
    );
    let now = 1_790_000_000_000;
    let line = |sku: &str, location| NewLine {
        sku: sku.into(),
        quantity: 2,
        location,
        variant_title: Some("V".into()),
    };
    let order_id = state
        .create_order(
            &NewOrder {
                name: None,
                lines: vec![line("A", 0), line("B", 0), line("C", 1)],
                customer_email: Some("a@example.com".into()),
                shipping_address: Some(json!({ "name": "A", "address1": "1 Road", "city": "C", "zip": "1", "countryCodeV2": "US" })),
            },
            now,
        )
        .expect("prototype order");
    let (fo_a, fo_b) = {
        let o = &state.orders[&order_id];
        (
            gid("FulfillmentOrder", o.fos[0].id),
            gid("FulfillmentOrder", o.fos[1].id),
        )
    };
    let first_line = gid(
        "FulfillmentOrderLineItem",
        state.orders[&order_id].fos[0].lines[0].id,
    );
    let fulfillment = state
        .create_fulfillment(
            &FulfillmentSpec {
                groups: vec![(fo_a.clone(), Some(vec![(first_line, 1)]))],
                tracking: vec![Tracking {
                    company: Some("USPS".into()),
                    number: Some("1".into()),
                    url: Some("https://example.com".into()),
                }],
                by_app: true,
                ..FulfillmentSpec::default()
            },
            now,
        )
        .expect("prototype fulfillment");
    let fulfillment_gid = gid("Fulfillment", fulfillment);
    let event = FulfillmentEvent {
        id: 0,
        status: "IN_TRANSIT".into(),
        happened_at: now / 1000,
        created_at: now / 1000,
        estimated_delivery_at: Some(now / 1000),
        message: Some("m".into()),
        city: Some("c".into()),
        province: Some("p".into()),
        country: Some("US".into()),
        zip: Some("z".into()),
    };
    state
        .add_event(&fulfillment_gid, event, now)
        .expect("prototype event");
    let (_, hold_id) = state
        .place_hold(
            &fo_b,
            "OTHER",
            Some("n".into()),
            Some("h".into()),
            true,
            now,
        )
        .expect("prototype hold");
    let order = state.order_json(&state.orders[&order_id]);
    let fo = state.node_json(&fo_b).expect("prototype fo");
    let hold = fo["fulfillmentHolds"][0].clone();
    let f = state
        .node_json(&fulfillment_gid)
        .expect("prototype fulfillment json");
    let event = f["events"]["__connection"][0].clone();
    let location = state.locations_json()[0].clone();
    let ctx = Ctx {
        now_ms: now,
        base_url: "http://sandbox",
        plan_name: "Basic",
    };
    let bulk = BulkOp {
        id: 1,
        query: "{ orders { edges { node { id } } } }".into(),
        created_at: now,
        completed_at: Some(now),
        polls: 1,
        result: Some(std::sync::Arc::new(Vec::new())),
        computed_at: Some(now),
        object_count: 1,
        root_object_count: 1,
        job: None,
    };
    let bulk = bulk_json(&bulk, ctx.base_url, "COMPLETED");
    let subscription = subscription_json(&Subscription {
        id: 1,
        topic: "orders/create".into(),
        uri: "https://example.com".into(),
        format: "JSON".into(),
        include_fields: vec!["id".into()],
        filter: Some("f".into()),
        created_at: now / 1000,
    });
    let error = UserError::new(&["a"], "m").with_code("INVALID");
    let connection = |items: Vec<Value>, ty: &str| {
        json!({
            "__connection": items,
            "__cursors": ["c"],
            "__itemType": ty,
            "__pageInfo": { "hasNextPage": false, "hasPreviousPage": false },
        })
    };
    let _ = hold_id;
    let by_field = vec![
        ("orders", connection(vec![order.clone()], "Order")),
        (
            "nodes",
            json!([order.clone(), fo.clone(), f.clone(), location.clone()]),
        ),
        ("node", order.clone()),
        ("order", order.clone()),
        ("bulkOperation", bulk.clone()),
        ("currentBulkOperation", bulk.clone()),
        ("shop", shop_json("prototype.myshopify.com", "Basic")),
        ("locations", connection(vec![location], "Location")),
        (
            "webhookSubscriptions",
            connection(vec![subscription.clone()], "WebhookSubscription"),
        ),
        (
            "fulfillmentCreate",
            json!({ "__typename": "FulfillmentCreatePayload", "fulfillment": f.clone(), "userErrors": user_errors(std::slice::from_ref(&error), None) }),
        ),
        (
            "fulfillmentEventCreate",
            json!({ "__typename": "FulfillmentEventCreatePayload", "fulfillmentEvent": event, "userErrors": user_errors(std::slice::from_ref(&error), None) }),
        ),
        (
            "fulfillmentTrackingInfoUpdate",
            json!({ "__typename": "FulfillmentTrackingInfoUpdatePayload", "fulfillment": f, "userErrors": user_errors(std::slice::from_ref(&error), None) }),
        ),
        (
            "fulfillmentOrderHold",
            json!({
                "__typename": "FulfillmentOrderHoldPayload", "fulfillmentHold": hold, "fulfillmentOrder": fo.clone(),
                "remainingFulfillmentOrder": fo.clone(),
                "userErrors": user_errors(std::slice::from_ref(&error), Some("FulfillmentOrderHoldUserError")),
            }),
        ),
        (
            "fulfillmentOrderReleaseHold",
            json!({
                "__typename": "FulfillmentOrderReleaseHoldPayload", "fulfillmentOrder": fo,
                "userErrors": user_errors(std::slice::from_ref(&error), Some("FulfillmentOrderReleaseHoldUserError")),
            }),
        ),
        (
            "bulkOperationRunQuery",
            json!({
                "__typename": "BulkOperationRunQueryPayload", "bulkOperation": bulk,
                "userErrors": user_errors(std::slice::from_ref(&error), Some("BulkOperationUserError")),
            }),
        ),
        (
            "webhookSubscriptionCreate",
            json!({ "__typename": "WebhookSubscriptionCreatePayload", "webhookSubscription": subscription, "userErrors": user_errors(&[error], None) }),
        ),
    ];
    Prototypes { order, by_field }
}
