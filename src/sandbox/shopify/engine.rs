//! The GraphQL machinery of the sandbox: parsing a document, substituting variables, computing
//! Shopify's requested cost, and projecting full resolver objects onto a selection set while
//! counting the actual cost.
//!
//! Resolvers never look at selection sets. They build the whole object in GraphQL field names
//! (with `__typename`), and [`Projector`] trims it to what was asked. A connection is a JSON
//! object `{"__connection": [items…]}`; the projector slices it by `first`/`after`/`last`/`before`
//! and renders `nodes`, `edges` and `pageInfo`. A resolver that already sliced (the root `orders`
//! field, whose cursors are positions in a sort order rather than items) adds `__cursors` and
//! `__pageInfo`, and the projector then takes the items as they are.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use graphql_parser::query as q;
use serde_json::{Map, Value, json};

/// Whether an operation reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Query,
    Mutation,
}

/// A field of the document after fragments were resolved and variables substituted.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub alias: Option<String>,
    pub name: String,
    pub args: Map<String, Value>,
    pub selection: Vec<Selection>,
    pub line: usize,
    pub column: usize,
}

impl Field {
    /// The key the field's value gets in the response.
    pub fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }

    /// An argument's value; an explicit `null` counts as absent, as GraphQL input coercion does.
    pub fn arg(&self, name: &str) -> Option<&Value> {
        self.args.get(name).filter(|v| !v.is_null())
    }

    /// A non-negative integer argument such as `first`.
    pub fn arg_u64(&self, name: &str) -> Option<u64> {
        self.arg(name).and_then(Value::as_u64)
    }

    /// A string argument.
    pub fn arg_str(&self, name: &str) -> Option<&str> {
        self.arg(name).and_then(Value::as_str)
    }

    /// The location of the field in the document, as GraphQL errors report it.
    pub fn locations(&self) -> Value {
        json!([{ "line": self.line, "column": self.column }])
    }
}

/// One item of a selection set.
#[derive(Debug, Clone)]
pub(crate) enum Selection {
    Field(Field),
    /// An inline fragment or a resolved fragment spread; `on` is its type condition.
    Fragment {
        on: Option<String>,
        selection: Vec<Selection>,
    },
}

/// The operation to execute.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub kind: OpKind,
    pub name: Option<String>,
    pub selection: Vec<Selection>,
}

impl Operation {
    /// The root fields, with untyped fragments at the root flattened.
    pub fn root_fields(&self) -> Vec<&Field> {
        let mut out = Vec::new();
        flatten_fields(&self.selection, &mut out);
        out
    }
}

/// Collects the fields of a selection set, descending into every fragment.
pub(crate) fn flatten_fields<'a>(selection: &'a [Selection], out: &mut Vec<&'a Field>) {
    for item in selection {
        match item {
            Selection::Field(f) => out.push(f),
            Selection::Fragment { selection, .. } => flatten_fields(selection, out),
        }
    }
}

/// The names of every field selected at this level (through fragments too).
pub(crate) fn selected_names(selection: &[Selection]) -> std::collections::BTreeSet<String> {
    let mut fields = Vec::new();
    flatten_fields(selection, &mut fields);
    fields.into_iter().map(|f| f.name.clone()).collect()
}

/// The names selected on the nodes of a connection field (`nodes { … }` and
/// `edges { node { … } }` together).
pub(crate) fn node_names(connection: &Field) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut fields = Vec::new();
    flatten_fields(&connection.selection, &mut fields);
    for f in fields {
        match f.name.as_str() {
            "nodes" => names.extend(selected_names(&f.selection)),
            "edges" => {
                let mut inner = Vec::new();
                flatten_fields(&f.selection, &mut inner);
                for g in inner.into_iter().filter(|g| g.name == "node") {
                    names.extend(selected_names(&g.selection));
                }
            }
            _ => {}
        }
    }
    names
}

/// A GraphQL error object as Shopify renders it.
pub(crate) fn gql_error(message: impl Into<String>) -> Value {
    json!({ "message": message.into() })
}

/// A GraphQL error at a field, with its location and an error code.
pub(crate) fn field_error(field: &Field, message: impl Into<String>, code: &str) -> Value {
    json!({
        "message": message.into(),
        "locations": field.locations(),
        "extensions": { "code": code },
    })
}

/// Parses `query`, picks the operation and substitutes `variables`. Errors are GraphQL error
/// objects, answered with HTTP 200 and no data, as Shopify does for invalid documents.
pub(crate) fn prepare(
    query: &str,
    variables: &Map<String, Value>,
    operation_name: Option<&str>,
) -> Result<Operation, Vec<Value>> {
    let document = q::parse_query::<String>(query)
        .map_err(|e| vec![gql_error(format!("syntax error: {}", e.to_string().trim()))])?;
    let mut fragments = HashMap::new();
    let mut operations = Vec::new();
    for definition in &document.definitions {
        match definition {
            q::Definition::Fragment(f) => {
                fragments.insert(f.name.clone(), f);
            }
            q::Definition::Operation(op) => operations.push(op),
        }
    }
    let op_name = |op: &q::OperationDefinition<'_, String>| -> Option<String> {
        match op {
            q::OperationDefinition::SelectionSet(_) => None,
            q::OperationDefinition::Query(x) => x.name.clone(),
            q::OperationDefinition::Mutation(x) => x.name.clone(),
            q::OperationDefinition::Subscription(x) => x.name.clone(),
        }
    };
    let chosen = match operation_name.filter(|n| !n.is_empty()) {
        Some(wanted) => operations
            .iter()
            .find(|op| op_name(op).as_deref() == Some(wanted))
            .ok_or_else(|| vec![gql_error(format!("No operation named \"{wanted}\""))])?,
        None if operations.len() == 1 => &operations[0],
        None if operations.is_empty() => {
            return Err(vec![gql_error("No operations in query document")]);
        }
        None => {
            return Err(vec![gql_error(
                "An operation name is required when the document holds more than one operation",
            )]);
        }
    };
    let (kind, definitions, selection_set) = match chosen {
        q::OperationDefinition::SelectionSet(s) => (OpKind::Query, &[][..], s),
        q::OperationDefinition::Query(x) => {
            (OpKind::Query, &x.variable_definitions[..], &x.selection_set)
        }
        q::OperationDefinition::Mutation(x) => (
            OpKind::Mutation,
            &x.variable_definitions[..],
            &x.selection_set,
        ),
        q::OperationDefinition::Subscription(_) => {
            return Err(vec![gql_error("Subscriptions are not supported")]);
        }
    };
    // Variables: provided values, else declared defaults; a missing non-null one is an error.
    let mut values = Map::new();
    let mut errors = Vec::new();
    for definition in definitions {
        let provided = variables.get(&definition.name).filter(|v| !v.is_null());
        let value = match (provided, &definition.default_value) {
            (Some(v), _) => v.clone(),
            (None, Some(default)) => literal(default, &Map::new()),
            (None, None) => Value::Null,
        };
        if value.is_null() && matches!(definition.var_type, q::Type::NonNullType(_)) {
            errors.push(json!({
                "message": format!(
                    "Variable ${} of type {} was provided invalid value",
                    definition.name, definition.var_type
                ),
                "locations": [{ "line": definition.position.line, "column": definition.position.column }],
                "extensions": {
                    "value": null,
                    "problems": [{ "path": [], "explanation": "Expected value to not be null" }],
                },
            }));
        }
        values.insert(definition.name.clone(), value);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let selection = convert_selection(selection_set, &values, &fragments, 0)?;
    Ok(Operation {
        kind,
        name: op_name(chosen),
        selection,
    })
}

type Fragments<'a, 'b> = HashMap<String, &'b q::FragmentDefinition<'a, String>>;

fn convert_selection(
    set: &q::SelectionSet<'_, String>,
    variables: &Map<String, Value>,
    fragments: &Fragments<'_, '_>,
    depth: usize,
) -> Result<Vec<Selection>, Vec<Value>> {
    // Fragment spreads can refer to each other; a cycle would recurse forever.
    if depth > 64 {
        return Err(vec![gql_error(
            "Query is nested too deeply (fragment cycle?)",
        )]);
    }
    let mut out = Vec::new();
    for item in &set.items {
        match item {
            q::Selection::Field(f) => {
                if !included(&f.directives, variables) {
                    continue;
                }
                let args = f
                    .arguments
                    .iter()
                    .map(|(name, value)| (name.clone(), literal(value, variables)))
                    .collect();
                out.push(Selection::Field(Field {
                    alias: f.alias.clone(),
                    name: f.name.clone(),
                    args,
                    selection: convert_selection(
                        &f.selection_set,
                        variables,
                        fragments,
                        depth + 1,
                    )?,
                    line: f.position.line,
                    column: f.position.column,
                }));
            }
            q::Selection::InlineFragment(f) => {
                if !included(&f.directives, variables) {
                    continue;
                }
                out.push(Selection::Fragment {
                    on: f
                        .type_condition
                        .as_ref()
                        .map(|q::TypeCondition::On(t)| t.clone()),
                    selection: convert_selection(
                        &f.selection_set,
                        variables,
                        fragments,
                        depth + 1,
                    )?,
                });
            }
            q::Selection::FragmentSpread(spread) => {
                if !included(&spread.directives, variables) {
                    continue;
                }
                let fragment = fragments.get(&spread.fragment_name).ok_or_else(|| {
                    vec![gql_error(format!(
                        "Fragment {} was used, but not defined",
                        spread.fragment_name
                    ))]
                })?;
                let q::TypeCondition::On(on) = &fragment.type_condition;
                out.push(Selection::Fragment {
                    on: Some(on.clone()),
                    selection: convert_selection(
                        &fragment.selection_set,
                        variables,
                        fragments,
                        depth + 1,
                    )?,
                });
            }
        }
    }
    Ok(out)
}

/// Evaluates `@skip(if:)` and `@include(if:)`.
fn included(directives: &[q::Directive<'_, String>], variables: &Map<String, Value>) -> bool {
    for d in directives {
        let condition = d
            .arguments
            .iter()
            .find(|(n, _)| n == "if")
            .map(|(_, v)| literal(v, variables).as_bool().unwrap_or(false));
        match (d.name.as_str(), condition) {
            ("skip", Some(true)) | ("include", Some(false)) => return false,
            _ => {}
        }
    }
    true
}

/// A literal of the document as JSON, with variables substituted. Enum values become strings,
/// which is how they arrive when sent as variables too.
fn literal(value: &q::Value<'_, String>, variables: &Map<String, Value>) -> Value {
    match value {
        q::Value::Variable(name) => variables.get(name).cloned().unwrap_or(Value::Null),
        q::Value::Int(n) => json!(n.as_i64().unwrap_or_default()),
        q::Value::Float(f) => json!(f),
        q::Value::String(s) => Value::String(s.clone()),
        q::Value::Boolean(b) => Value::Bool(*b),
        q::Value::Null => Value::Null,
        q::Value::Enum(e) => Value::String(e.clone()),
        q::Value::List(items) => {
            Value::Array(items.iter().map(|v| literal(v, variables)).collect())
        }
        q::Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), literal(v, variables)))
                .collect(),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Requested cost
// ---------------------------------------------------------------------------------------------

/// What a mutation's root field costs before its selection, as Shopify charges it.
pub(crate) const MUTATION_COST: u64 = 10;

/// The requested cost of an operation, computed from the document alone the way Shopify
/// documents it: scalars and enums 0, objects 1, connections and paged lists
/// `2 + first × (cost of one item)`, `nodes(ids:)` one item per id, `pageInfo` free, and each
/// mutation root field 10 plus its selection.
pub(crate) fn requested_cost(op: &Operation) -> u64 {
    op.root_fields()
        .into_iter()
        .map(|f| match op.kind {
            OpKind::Mutation if f.name != "__typename" => {
                MUTATION_COST + selection_cost(&f.selection)
            }
            _ => field_cost(f),
        })
        .sum()
}

/// The cost of a selection set. Fragments on different types exclude each other, so only the
/// most expensive type counts; untyped fragments add to the base.
pub(crate) fn selection_cost(selection: &[Selection]) -> u64 {
    let mut base = 0;
    let mut per_type: BTreeMap<&str, u64> = BTreeMap::new();
    for item in selection {
        match item {
            Selection::Field(f) => base += field_cost(f),
            Selection::Fragment {
                on: None,
                selection,
            } => base += selection_cost(selection),
            Selection::Fragment {
                on: Some(on),
                selection,
            } => *per_type.entry(on.as_str()).or_default() += selection_cost(selection),
        }
    }
    base + per_type.values().copied().max().unwrap_or(0)
}

fn page_size(f: &Field) -> Option<u64> {
    f.arg_u64("first").or_else(|| f.arg_u64("last"))
}

fn field_cost(f: &Field) -> u64 {
    if f.selection.is_empty() || f.name == "pageInfo" {
        return 0;
    }
    if f.name == "nodes"
        && let Some(ids) = f.arg("ids")
    {
        let n = ids.as_array().map_or(1, Vec::len) as u64;
        return n * (1 + selection_cost(&f.selection));
    }
    if let Some(n) = page_size(f) {
        let item =
            connection_item_cost(&f.selection).unwrap_or_else(|| 1 + selection_cost(&f.selection));
        return 2 + n * item;
    }
    1 + selection_cost(&f.selection)
}

/// The cost of one node of a connection selection (`nodes { … }` or `edges { node { … } }`), or
/// None when the selection is not shaped like a connection (a paged list of objects).
fn connection_item_cost(selection: &[Selection]) -> Option<u64> {
    let mut fields = Vec::new();
    flatten_fields(selection, &mut fields);
    let mut best: Option<u64> = None;
    for f in fields {
        let cost = match f.name.as_str() {
            "nodes" => Some(1 + selection_cost(&f.selection)),
            "edges" => {
                let mut inner = Vec::new();
                flatten_fields(&f.selection, &mut inner);
                inner
                    .iter()
                    .filter(|g| g.name == "node")
                    .map(|g| 1 + selection_cost(&g.selection))
                    .max()
                    .or(Some(0))
            }
            _ => None,
        };
        if let Some(c) = cost {
            best = Some(best.map_or(c, |b| b.max(c)));
        }
    }
    best
}

// ---------------------------------------------------------------------------------------------
// Projection and actual cost
// ---------------------------------------------------------------------------------------------

/// The most items one page may ask for.
pub(crate) const MAX_PAGE: u64 = 250;

/// The opaque cursor of an item of a nested connection: its id, encoded.
pub(crate) fn item_cursor(item: &Value) -> String {
    BASE64.encode(item.get("id").and_then(Value::as_str).unwrap_or_default())
}

/// A nested connection met while projecting a bulk operation's node: its items become lines
/// of their own after the parent's line.
pub(crate) struct PendingChildren {
    pub parent_id: String,
    pub items: Vec<Value>,
    pub selection: Vec<Selection>,
}

/// Trims full objects to a selection set, counting the actual cost of what it returns.
#[derive(Default)]
pub(crate) struct Projector {
    /// Errors met (unknown fields, misuse of arguments): the request fails with them.
    pub errors: Vec<Value>,
    /// In bulk mode nested connections need no `first` and are not rendered inline: they are
    /// collected in `pending` with the id of the object that holds them.
    pub bulk: bool,
    pub pending: Vec<PendingChildren>,
    /// Validation against prototypes: cursors name items that do not exist there.
    validating: bool,
    parent_ids: Vec<String>,
}

impl Projector {
    /// A projector for ordinary requests.
    pub fn new() -> Projector {
        Projector::default()
    }

    /// A projector that checks a selection against prototype objects.
    pub fn validating() -> Projector {
        Projector {
            validating: true,
            ..Projector::default()
        }
    }

    /// A projector for one object of a bulk operation.
    pub fn for_bulk() -> Projector {
        Projector {
            bulk: true,
            ..Projector::default()
        }
    }

    /// Projects the value of `field` and returns it with its actual cost.
    pub fn value(&mut self, value: &Value, field: &Field) -> (Value, u64) {
        match value {
            Value::Null => (Value::Null, 0),
            Value::Object(map) if map.contains_key("__connection") => self.connection(map, field),
            Value::Object(map) => {
                if field.selection.is_empty() {
                    let ty = type_name(map);
                    self.errors.push(field_error(
                        field,
                        format!(
                            "Field must have selections (field '{}' returns {ty} but has no selections. Did you mean '{} {{ ... }}'?)",
                            field.name, field.name
                        ),
                        "selectionMismatch",
                    ));
                    return (Value::Null, 0);
                }
                let (out, cost) = self.object(map, &field.selection);
                (Value::Object(out), 1 + cost)
            }
            Value::Array(items) => {
                let paged = page_size(field).is_some();
                let slice: &[Value] = match (field.arg_u64("first"), field.arg_u64("last")) {
                    (Some(n), _) => &items[..items.len().min(n as usize)],
                    (None, Some(n)) => &items[items.len().saturating_sub(n as usize)..],
                    _ => items,
                };
                let mut out = Vec::with_capacity(slice.len());
                let mut costs = Vec::with_capacity(slice.len());
                for item in slice {
                    let (v, c) = self.value(item, field);
                    out.push(v);
                    costs.push(c);
                }
                // A paged list is charged per item like a connection; an unpaged list of objects
                // is charged as one object, which is what its requested cost assumed.
                let cost = if paged {
                    2 + costs.iter().sum::<u64>()
                } else {
                    costs.iter().copied().max().unwrap_or(0)
                };
                (Value::Array(out), cost)
            }
            scalar => {
                if !field.selection.is_empty() {
                    self.errors.push(field_error(
                        field,
                        format!(
                            "Selections can't be made on scalars (field '{}' returns a scalar but has selections)",
                            field.name
                        ),
                        "selectionMismatch",
                    ));
                    return (Value::Null, 0);
                }
                (scalar.clone(), 0)
            }
        }
    }

    /// Projects an object onto a selection set; the cost returned excludes the object's own 1.
    pub fn object(
        &mut self,
        obj: &Map<String, Value>,
        selection: &[Selection],
    ) -> (Map<String, Value>, u64) {
        let mut out = Map::new();
        let pushed = match obj.get("id").and_then(Value::as_str) {
            Some(id) if self.bulk => {
                self.parent_ids.push(id.to_string());
                true
            }
            _ => false,
        };
        let cost = self.object_into(obj, selection, &mut out);
        if pushed {
            self.parent_ids.pop();
        }
        (out, cost)
    }

    fn object_into(
        &mut self,
        obj: &Map<String, Value>,
        selection: &[Selection],
        out: &mut Map<String, Value>,
    ) -> u64 {
        let ty = type_name(obj).to_string();
        let mut cost = 0;
        for item in selection {
            match item {
                Selection::Field(f) => {
                    if f.name == "__typename" {
                        out.insert(f.key().to_string(), Value::String(ty.clone()));
                        continue;
                    }
                    let Some(value) = obj.get(&f.name) else {
                        self.errors.push(json!({
                            "message": format!("Field '{}' doesn't exist on type '{ty}'", f.name),
                            "locations": f.locations(),
                            "extensions": { "code": "undefinedField", "typeName": ty, "fieldName": f.name },
                        }));
                        continue;
                    };
                    if self.bulk
                        && let Some(items) = value.get("__connection").and_then(Value::as_array)
                    {
                        self.defer_children(items, f);
                        continue;
                    }
                    let (v, c) = self.value(value, f);
                    cost += c;
                    merge(out, f.key(), v);
                }
                Selection::Fragment { on, selection } => {
                    if on.as_deref().is_none_or(|on| type_matches(obj, &ty, on)) {
                        cost += self.object_into(obj, selection, out);
                    }
                }
            }
        }
        cost
    }

    fn defer_children(&mut self, items: &[Value], field: &Field) {
        let mut fields = Vec::new();
        flatten_fields(&field.selection, &mut fields);
        let mut selection = Vec::new();
        for f in fields {
            match f.name.as_str() {
                "nodes" => selection.extend(f.selection.iter().cloned()),
                "edges" => {
                    let mut inner = Vec::new();
                    flatten_fields(&f.selection, &mut inner);
                    for g in inner.into_iter().filter(|g| g.name == "node") {
                        selection.extend(g.selection.iter().cloned());
                    }
                }
                _ => {}
            }
        }
        let Some(parent_id) = self.parent_ids.last().cloned() else {
            self.errors.push(field_error(
                field,
                "Bulk queries need an id on every object that holds a nested connection",
                "INVALID",
            ));
            return;
        };
        self.pending.push(PendingChildren {
            parent_id,
            items: items.to_vec(),
            selection,
        });
    }

    fn connection(&mut self, conn: &Map<String, Value>, field: &Field) -> (Value, u64) {
        let empty = Vec::new();
        let listed = conn
            .get("__connection")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        // `reverse: true` reverses the underlying list before any slicing, as Shopify does; a
        // resolver that sliced itself (`__pageInfo`) has applied it already.
        let reverse = conn.get("__pageInfo").is_none()
            && field.arg("reverse").and_then(Value::as_bool) == Some(true);
        let all: Vec<&Value> = if reverse {
            listed.iter().rev().collect()
        } else {
            listed.iter().collect()
        };
        let first = field.arg_u64("first");
        let last = field.arg_u64("last");
        if first.is_none() && last.is_none() && !self.bulk {
            self.errors.push(field_error(
                field,
                "you must provide one of first or last",
                "argumentLiteralsIncompatible",
            ));
            return (Value::Null, 0);
        }
        if first.or(last).is_some_and(|n| n > MAX_PAGE) && !self.bulk {
            self.errors.push(field_error(
                field,
                format!(
                    "The '{}' argument of '{}' must be at most {MAX_PAGE}",
                    if first.is_some() { "first" } else { "last" },
                    field.name
                ),
                "BAD_REQUEST",
            ));
            return (Value::Null, 0);
        }
        // Pre-sliced by the resolver, or sliced here by cursor position.
        let (items, cursors, has_next, has_prev): (Vec<&Value>, Vec<String>, bool, bool) =
            if let Some(page) = conn.get("__pageInfo") {
                let cursors = conn
                    .get("__cursors")
                    .and_then(Value::as_array)
                    .map(|c| {
                        c.iter()
                            .map(|v| v.as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    all.clone(),
                    cursors,
                    page["hasNextPage"].as_bool().unwrap_or(false),
                    page["hasPreviousPage"].as_bool().unwrap_or(false),
                )
            } else {
                let cursors: Vec<String> = all.iter().map(|item| item_cursor(item)).collect();
                let mut start = 0;
                let mut end = all.len();
                for (arg, is_after) in [("after", true), ("before", false)] {
                    if let Some(c) = field.arg_str(arg) {
                        match cursors.iter().position(|x| x == c) {
                            Some(i) if is_after => start = start.max(i + 1),
                            Some(i) => end = end.min(i),
                            None if self.validating => {}
                            None => {
                                self.errors.push(field_error(
                                    field,
                                    format!("Invalid cursor for '{arg}'"),
                                    "BAD_REQUEST",
                                ));
                                return (Value::Null, 0);
                            }
                        }
                    }
                }
                let end = end.max(start);
                let (lo, hi) = match (first, last) {
                    (Some(n), _) => (start, end.min(start + n as usize)),
                    (None, Some(n)) => (end.saturating_sub(n as usize).max(start), end),
                    (None, None) => (start, end),
                };
                (
                    all[lo..hi].to_vec(),
                    cursors[lo..hi].to_vec(),
                    hi < all.len(),
                    lo > 0,
                )
            };
        let item_type = items
            .first()
            .and_then(|v| v.get("__typename"))
            .and_then(Value::as_str)
            .or_else(|| conn.get("__itemType").and_then(Value::as_str))
            .unwrap_or("Node")
            .to_string();
        let mut out = Map::new();
        let mut item_costs = vec![0u64; items.len()];
        let mut fields = Vec::new();
        flatten_fields(&field.selection, &mut fields);
        for f in fields {
            match f.name.as_str() {
                "__typename" => {
                    out.insert(f.key().to_string(), json!(format!("{item_type}Connection")));
                }
                "nodes" => {
                    let mut list = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        let (v, c) = self.value(item, f);
                        item_costs[i] = item_costs[i].max(c);
                        list.push(v);
                    }
                    merge(&mut out, f.key(), Value::Array(list));
                }
                "edges" => {
                    let mut edge_fields = Vec::new();
                    flatten_fields(&f.selection, &mut edge_fields);
                    let mut list = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        let mut edge = Map::new();
                        for g in &edge_fields {
                            match g.name.as_str() {
                                "cursor" => {
                                    edge.insert(g.key().to_string(), json!(cursors.get(i)));
                                }
                                "__typename" => {
                                    edge.insert(g.key().to_string(), json!(format!("{item_type}Edge")));
                                }
                                "node" => {
                                    let (v, c) = self.value(item, g);
                                    item_costs[i] = item_costs[i].max(c);
                                    merge(&mut edge, g.key(), v);
                                }
                                other => self.errors.push(json!({
                                    "message": format!("Field '{other}' doesn't exist on type '{item_type}Edge'"),
                                    "locations": g.locations(),
                                    "extensions": { "code": "undefinedField" },
                                })),
                            }
                        }
                        list.push(Value::Object(edge));
                    }
                    merge(&mut out, f.key(), Value::Array(list));
                }
                "pageInfo" => {
                    let page = json!({
                        "__typename": "PageInfo",
                        "hasNextPage": has_next,
                        "hasPreviousPage": has_prev,
                        "startCursor": cursors.first(),
                        "endCursor": cursors.last(),
                    });
                    let (v, _) = self.value(&page, f);
                    // PageInfo is free: Shopify does not charge it.
                    merge(&mut out, f.key(), v);
                }
                other => self.errors.push(json!({
                    "message": format!("Field '{other}' doesn't exist on type '{item_type}Connection'"),
                    "locations": f.locations(),
                    "extensions": { "code": "undefinedField" },
                })),
            }
        }
        (Value::Object(out), 2 + item_costs.iter().sum::<u64>())
    }
}

fn type_name(obj: &Map<String, Value>) -> &str {
    obj.get("__typename")
        .and_then(Value::as_str)
        .unwrap_or("Object")
}

/// Whether a fragment's type condition applies to an object. Every object with an id is a
/// `Node`; the other interfaces shipgate could name are listed in `__implements`.
fn type_matches(obj: &Map<String, Value>, ty: &str, on: &str) -> bool {
    on == ty
        || (on == "Node" && obj.contains_key("id"))
        || obj
            .get("__implements")
            .and_then(Value::as_array)
            .is_some_and(|list| list.iter().any(|i| i == on))
}

/// Puts a projected value under its response key, merging objects selected twice (for example
/// once directly and once through a fragment).
fn merge(out: &mut Map<String, Value>, key: &str, value: Value) {
    match (out.get_mut(key), value) {
        (Some(Value::Object(existing)), Value::Object(new)) => {
            for (k, v) in new {
                merge(existing, &k, v);
            }
        }
        (Some(Value::Array(existing)), Value::Array(new)) if existing.len() == new.len() => {
            for (e, n) in existing.iter_mut().zip(new) {
                match (e, n) {
                    (Value::Object(e), Value::Object(n)) => {
                        for (k, v) in n {
                            merge(e, &k, v);
                        }
                    }
                    (e, n) => *e = n,
                }
            }
        }
        (_, value) => {
            out.insert(key.to_string(), value);
        }
    }
}

/// Renders a resolver object for people and tests: connections become `{"nodes": [...]}` and
/// the projector's private keys disappear.
pub(crate) fn render_plain(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            if let Some(items) = map.get("__connection").and_then(Value::as_array) {
                return json!({ "nodes": items.iter().map(render_plain).collect::<Vec<_>>() });
            }
            Value::Object(
                map.iter()
                    .filter(|(k, _)| k.as_str() != "__implements")
                    .map(|(k, v)| (k.clone(), render_plain(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(render_plain).collect()),
        other => other.clone(),
    }
}

/// Writes the lines of a bulk operation for `items` projected onto `selection`: each object,
/// then the items of its nested connections, each with `__parentId`.
pub(crate) fn bulk_lines(
    items: &[Value],
    selection: &[Selection],
    parent: Option<&str>,
    out: &mut Vec<u8>,
    counts: &mut (u64, u64),
    errors: &mut Vec<Value>,
) {
    for item in items {
        let Some(obj) = item.as_object() else {
            continue;
        };
        let mut p = Projector::for_bulk();
        let (mut line, _) = p.object(obj, selection);
        if let Some(parent) = parent {
            line.insert("__parentId".into(), json!(parent));
        } else {
            counts.1 += 1;
        }
        counts.0 += 1;
        // serde_json never fails on a Value it built.
        out.extend(serde_json::to_vec(&Value::Object(line)).unwrap_or_default());
        out.push(b'\n');
        errors.append(&mut p.errors);
        for pending in p.pending {
            bulk_lines(
                &pending.items,
                &pending.selection,
                Some(&pending.parent_id),
                out,
                counts,
                errors,
            );
        }
    }
}
