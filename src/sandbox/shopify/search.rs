//! The `orders` connection: Shopify's search syntax, sort keys and stable cursors.
//!
//! A cursor is the position of an order in the sort (its sort value and id), not the order
//! itself, so an order that changes while a client pages moves behind the cursor and is found by
//! the next scan instead of shifting the pages under the client.

use std::ops::Bound;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::model::{Order, State, parse_time_ms};

/// A comparison of the search syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
}

impl Cmp {
    fn holds(self, left: i64, right: i64) -> bool {
        match self {
            Cmp::Gt => left > right,
            Cmp::Ge => left >= right,
            Cmp::Lt => left < right,
            Cmp::Le => left <= right,
            Cmp::Eq => left == right,
        }
    }
}

/// One term of a search.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    /// `updated_at` compared in milliseconds (the order's second-precision time × 1000).
    Updated(Cmp, i64),
    Created(Cmp, i64),
    /// `status:open|closed|cancelled|any`.
    Status(String),
    Id(Cmp, i64),
    Name(String),
}

/// A parsed search string.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    terms: Vec<Term>,
    /// Terms that were ignored, reported as Shopify reports them under `extensions.search`.
    pub warnings: Vec<Value>,
}

impl Filter {
    /// Parses Shopify's search syntax: `field:value` terms joined by ` AND ` (or spaces), values
    /// optionally prefixed by `>`, `>=`, `<`, `<=` and quoted with `'` or `"`. Dates must be
    /// quoted (their `:` would otherwise end the value); unknown or malformed terms are ignored
    /// with a warning, as Shopify ignores them.
    pub fn parse(query: &str) -> Filter {
        let mut filter = Filter::default();
        for token in tokens(query) {
            if token.text.eq_ignore_ascii_case("AND") && !token.quoted_value {
                continue;
            }
            let Some((field, raw)) = token.text.split_once(':') else {
                filter.warn(
                    &token.text,
                    "Free-text search is not supported by the sandbox; term ignored",
                );
                continue;
            };
            let (cmp, value) = if let Some(v) = raw.strip_prefix(">=") {
                (Cmp::Ge, v)
            } else if let Some(v) = raw.strip_prefix("<=") {
                (Cmp::Le, v)
            } else if let Some(v) = raw.strip_prefix('>') {
                (Cmp::Gt, v)
            } else if let Some(v) = raw.strip_prefix('<') {
                (Cmp::Lt, v)
            } else {
                (Cmp::Eq, raw)
            };
            let value = unquote(value);
            match field {
                "updated_at" | "created_at" | "processed_at" => {
                    if !token.quoted_value && value.contains(':') {
                        filter.warn(
                            field,
                            "Date values containing ':' must be quoted; term ignored",
                        );
                        continue;
                    }
                    let Some(ms) = parse_time_ms(value) else {
                        filter.warn(field, "Invalid date value; term ignored");
                        continue;
                    };
                    filter.terms.push(if field == "updated_at" {
                        Term::Updated(cmp, ms)
                    } else {
                        Term::Created(cmp, ms)
                    });
                }
                "status" => {
                    let v = value.to_ascii_lowercase();
                    if ["any", "open", "closed", "cancelled"].contains(&v.as_str()) {
                        filter.terms.push(Term::Status(v));
                    } else {
                        filter.warn(field, "Invalid status value; term ignored");
                    }
                }
                "id" => match value.parse::<i64>() {
                    Ok(n) => filter.terms.push(Term::Id(cmp, n)),
                    Err(_) => filter.warn(field, "Invalid id value; term ignored"),
                },
                "name" => filter.terms.push(Term::Name(value.to_string())),
                other => filter.warn(other, "Invalid search field for this query."),
            }
        }
        filter
    }

    fn warn(&mut self, field: &str, message: &str) {
        self.warnings
            .push(json!({ "field": field, "message": message }));
    }

    /// Whether an order matches every term.
    pub fn matches(&self, order: &Order) -> bool {
        self.terms.iter().all(|term| match term {
            Term::Updated(cmp, ms) => cmp.holds(order.updated_at * 1000, *ms),
            Term::Created(cmp, ms) => cmp.holds(order.created_at * 1000, *ms),
            Term::Status(s) => match s.as_str() {
                "open" => {
                    order.cancelled_at.is_none()
                        && order.display_fulfillment_status() != "FULFILLED"
                }
                "closed" => {
                    order.cancelled_at.is_some()
                        || order.display_fulfillment_status() == "FULFILLED"
                }
                "cancelled" => order.cancelled_at.is_some(),
                _ => true,
            },
            Term::Id(cmp, n) => cmp.holds(order.id as i64, *n),
            Term::Name(name) => {
                order.name == *name
                    || order.name.trim_start_matches('#') == name.trim_start_matches('#')
            }
        })
    }
}

struct Token {
    text: String,
    quoted_value: bool,
}

/// Splits on whitespace outside quotes.
fn tokens(query: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut quoted = false;
    for c in query.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                current.push(c);
            }
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                quoted = true;
                current.push(c);
            }
            (None, c) if c.is_whitespace() => {
                if !current.is_empty() {
                    out.push(Token {
                        text: std::mem::take(&mut current),
                        quoted_value: quoted,
                    });
                }
                quoted = false;
            }
            (None, c) => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(Token {
            text: current,
            quoted_value: quoted,
        });
    }
    out
}

fn unquote(value: &str) -> &str {
    for q in ['\'', '"'] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    value
}

/// `OrderSortKeys` the sandbox supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortKey {
    Id,
    UpdatedAt,
    CreatedAt,
}

impl SortKey {
    /// Parses the enum name.
    pub fn parse(name: &str) -> Option<SortKey> {
        match name {
            "ID" => Some(SortKey::Id),
            "UPDATED_AT" => Some(SortKey::UpdatedAt),
            "CREATED_AT" | "PROCESSED_AT" => Some(SortKey::CreatedAt),
            _ => None,
        }
    }
}

/// A position in a sort: (sort value, order id).
type Position = (i64, u64);

/// Encodes a cursor.
pub(crate) fn encode_cursor(pos: Position) -> String {
    BASE64.encode(json!({ "last_id": pos.1, "last_value": pos.0 }).to_string())
}

/// Decodes a cursor.
pub(crate) fn decode_cursor(cursor: &str) -> Option<Position> {
    let bytes = BASE64.decode(cursor).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some((v.get("last_value")?.as_i64()?, v.get("last_id")?.as_u64()?))
}

/// What the client asked for.
pub(crate) struct PageRequest {
    pub first: Option<usize>,
    pub last: Option<usize>,
    pub after: Option<Position>,
    pub before: Option<Position>,
    pub sort: SortKey,
    pub reverse: bool,
}

/// One page of orders: their ids in order, their cursors, and whether more lie on each side.
pub(crate) struct Page {
    pub ids: Vec<u64>,
    pub cursors: Vec<String>,
    pub has_next: bool,
    pub has_previous: bool,
}

/// Positions in ascending sort order strictly between the bounds.
fn positions<'a>(
    state: &'a State,
    sort: SortKey,
    lower: Bound<Position>,
    upper: Bound<Position>,
) -> Box<dyn DoubleEndedIterator<Item = Position> + 'a> {
    match sort {
        SortKey::UpdatedAt => Box::new(state.by_updated.range((lower, upper)).copied()),
        SortKey::CreatedAt => Box::new(state.by_created.range((lower, upper)).copied()),
        SortKey::Id => {
            let lo = match lower {
                Bound::Excluded((_, id)) => Bound::Excluded(id),
                Bound::Included((_, id)) => Bound::Included(id),
                Bound::Unbounded => Bound::Unbounded,
            };
            let hi = match upper {
                Bound::Excluded((_, id)) => Bound::Excluded(id),
                Bound::Included((_, id)) => Bound::Included(id),
                Bound::Unbounded => Bound::Unbounded,
            };
            // A range whose ends cross would panic; an empty iterator is the right answer.
            if let (
                Bound::Excluded(a) | Bound::Included(a),
                Bound::Excluded(b) | Bound::Included(b),
            ) = (lo, hi)
                && a > b
            {
                return Box::new(std::iter::empty());
            }
            Box::new(state.orders.range((lo, hi)).map(|(id, _)| (0, *id)))
        }
    }
}

fn crosses(lower: &Bound<Position>, upper: &Bound<Position>) -> bool {
    match (lower, upper) {
        (Bound::Excluded(a) | Bound::Included(a), Bound::Excluded(b) | Bound::Included(b)) => {
            a >= b
        }
        _ => false,
    }
}

/// Finds one page of orders matching `filter`.
pub(crate) fn page(state: &State, filter: &Filter, req: &PageRequest) -> Page {
    // In the client's direction `after` means "further along"; in ascending terms that is
    // above the cursor unless the sort is reversed.
    let (mut lower, mut upper) = (Bound::Unbounded, Bound::Unbounded);
    if let Some(a) = req.after {
        if req.reverse {
            upper = Bound::Excluded(a);
        } else {
            lower = Bound::Excluded(a);
        }
    }
    if let Some(b) = req.before {
        if req.reverse {
            lower = Bound::Excluded(b);
        } else {
            upper = Bound::Excluded(b);
        }
    }
    let matching = |pos: &Position| state.orders.get(&pos.1).is_some_and(|o| filter.matches(o));
    let window: Vec<Position> = if crosses(&lower, &upper) {
        Vec::new()
    } else {
        // Walk in the client's direction: from the front for `first`, from the back for `last`.
        let from_back = req.first.is_none() && req.last.is_some();
        let limit = req
            .first
            .or(req.last)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let iter = positions(state, req.sort, lower, upper);
        let forward: Box<dyn Iterator<Item = Position>> = if req.reverse != from_back {
            Box::new(iter.rev())
        } else {
            Box::new(iter)
        };
        forward.filter(|p| matching(p)).take(limit).collect()
    };
    let n = req.first.or(req.last).unwrap_or(window.len());
    let more = window.len() > n;
    let mut taken: Vec<Position> = window.into_iter().take(n).collect();
    let from_back = req.first.is_none() && req.last.is_some();
    if from_back {
        taken.reverse();
    }
    // Whether anything matching lies beyond the page on the side the client did not walk to.
    let beyond = |bound: Option<Position>, towards_start: bool| -> bool {
        let Some(b) = bound else { return false };
        let (lo, hi) = if towards_start != req.reverse {
            (Bound::Unbounded, Bound::Included(b))
        } else {
            (Bound::Included(b), Bound::Unbounded)
        };
        let mut iter = positions(state, req.sort, lo, hi);
        iter.any(|p| matching(&p))
    };
    let (has_next, has_previous) = if from_back {
        (beyond(req.before, false), more)
    } else {
        (more, beyond(req.after, true))
    };
    Page {
        cursors: taken.iter().map(|p| encode_cursor(*p)).collect(),
        ids: taken.iter().map(|p| p.1).collect(),
        has_next,
        has_previous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dates_comparisons_quotes_and_warns_on_the_rest() {
        let f = Filter::parse(
            "updated_at:>='2026-11-25T10:00:00Z' AND created_at:<\"2026-12-01\" status:any foo:bar",
        );
        assert_eq!(
            f.terms,
            vec![
                Term::Updated(Cmp::Ge, parse_time_ms("2026-11-25T10:00:00Z").unwrap()),
                Term::Created(Cmp::Lt, parse_time_ms("2026-12-01").unwrap()),
                Term::Status("any".into()),
            ]
        );
        assert_eq!(f.warnings.len(), 1, "{:?}", f.warnings);
        let unquoted = Filter::parse("updated_at:>2026-11-25T10:00:00Z");
        assert!(
            unquoted.terms.is_empty(),
            "an unquoted time is not understood"
        );
        assert_eq!(unquoted.warnings.len(), 1);
    }

    #[test]
    fn cursors_round_trip() {
        let c = encode_cursor((1_790_000_000, 9_007_199_254_741_001));
        assert_eq!(
            decode_cursor(&c),
            Some((1_790_000_000, 9_007_199_254_741_001))
        );
        assert_eq!(decode_cursor("not a cursor"), None);
    }
}
