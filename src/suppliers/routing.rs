//! Which supplier ships a line (SPEC §6): the first supplier, in config order, with a SKU pattern
//! that matches the line's SKU, then that supplier's backups in the order the owner listed them.
//!
//! Patterns are globs: `*` matches any run of characters (also none), `?` exactly one character,
//! anything else itself, compared case-insensitively because SKUs are typed by hand in Shopify
//! and in suppliers' catalogues and `mug-red` is the same product as `MUG-RED`. There is no
//! escape: SKUs do not use `*` or `?` in practice, and a syntax for them would only be one more
//! thing to get wrong in the config file.
//!
//! Matching uses no regex and never backtracks more than one step, so it takes at most
//! `len(sku) × len(pattern)` steps: a pattern such as `*a*a*a*a*b` cannot make a long SKU take
//! exponential time. Routing runs for every order line and the patterns come from a file an
//! operator edits, so a slow pattern must not be able to stall the workers.

use crate::config::{Config, SupplierConfig};

/// Whether `pattern` is a usable SKU pattern; the message says what is wrong. The config loader
/// calls this, so a loaded config holds only patterns the router accepts.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err(
            "an empty pattern matches no SKU; remove it, or write \"*\" to match every SKU"
                .to_owned(),
        );
    }
    if pattern.chars().any(char::is_control) {
        return Err(
            "the pattern contains a control character (a stray tab or line break?), \
             which no SKU has"
                .to_owned(),
        );
    }
    Ok(())
}

/// One compiled element of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `*`: any run of characters, also an empty one.
    Star,
    /// `?`: exactly one character.
    One,
    /// A character that must be present, already case-folded.
    Char(char),
}

/// A compiled SKU pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuPattern {
    tokens: Vec<Token>,
}

impl SkuPattern {
    /// Compiles a pattern; `None` when [`check_pattern`] refuses it.
    pub fn new(pattern: &str) -> Option<SkuPattern> {
        check_pattern(pattern).ok()?;
        let mut tokens: Vec<Token> = Vec::with_capacity(pattern.len());
        for c in pattern.chars() {
            let token = match c {
                '*' => Token::Star,
                '?' => Token::One,
                c => Token::Char(fold(c)),
            };
            // A run of stars means the same as one star; collapsing them keeps the matcher's
            // work proportional to what the pattern actually says.
            if !(token == Token::Star && tokens.last() == Some(&Token::Star)) {
                tokens.push(token);
            }
        }
        Some(SkuPattern { tokens })
    }

    /// Whether the pattern matches the whole of `sku`, ignoring case.
    pub fn matches(&self, sku: &str) -> bool {
        let folded: Vec<char> = sku.chars().map(fold).collect();
        self.matches_folded(&folded)
    }

    /// Matches an already folded SKU, so a router trying many patterns folds the SKU once.
    ///
    /// The classic greedy glob matcher: literals and `?` advance both sides; at a `*` it first
    /// lets the star match nothing and remembers where it was; on a mismatch it goes back to the
    /// most recent star only and lets it swallow one more character. Earlier stars never need
    /// revisiting, because whatever an earlier star could absorb the latest one can absorb too,
    /// which is what bounds the work to `len(sku) × len(pattern)`.
    fn matches_folded(&self, sku: &[char]) -> bool {
        let tokens = &self.tokens;
        let (mut p, mut s) = (0, 0);
        // After the latest star: the token following it, and where in the SKU its match ends.
        let mut star: Option<(usize, usize)> = None;
        while s < sku.len() {
            match tokens.get(p) {
                Some(Token::Star) => {
                    p += 1;
                    star = Some((p, s));
                }
                Some(Token::One) => {
                    p += 1;
                    s += 1;
                }
                Some(Token::Char(c)) if *c == sku[s] => {
                    p += 1;
                    s += 1;
                }
                _ => match star {
                    Some((after, end)) => {
                        star = Some((after, end + 1));
                        p = after;
                        s = end + 1;
                    }
                    None => return false,
                },
            }
        }
        tokens[p..].iter().all(|token| *token == Token::Star)
    }
}

/// Folds one character for case-insensitive comparison. A character whose lowercase form is
/// several characters (such as `İ`) is kept as it is, so that `?` still stands for exactly one
/// character of the SKU as it was typed.
fn fold(c: char) -> char {
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// Where a line goes: the supplier that ships it first, and who takes over if it cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The first supplier in config order with a pattern matching the SKU.
    pub supplier: String,
    /// That supplier's backups in the order they are tried; never contains `supplier`.
    pub backups: Vec<String>,
}

impl Route {
    /// The whole chain in order: the supplier, then its backups.
    pub fn chain(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.supplier.as_str()).chain(self.backups.iter().map(String::as_str))
    }
}

/// One supplier as the router sees it.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    patterns: Vec<SkuPattern>,
    backups: Vec<String>,
}

/// Routes SKUs to suppliers; built once from the config and cheap to query.
#[derive(Debug, Clone)]
pub struct Router {
    /// In config order, which is the order patterns are tried in.
    entries: Vec<Entry>,
}

impl Router {
    /// Builds the router for these suppliers, in the order given.
    ///
    /// A loaded config is already valid; for hand-built supplier lists the router still never
    /// names a supplier it does not know: invalid patterns are left out, and so are backups that
    /// are unknown, repeated or the supplier itself.
    pub fn new(suppliers: &[SupplierConfig]) -> Router {
        let known = |name: &str| suppliers.iter().any(|s| s.name == name);
        let entries = suppliers
            .iter()
            .map(|supplier| {
                let mut backups: Vec<String> = Vec::new();
                for backup in &supplier.backups {
                    if *backup != supplier.name && known(backup) && !backups.contains(backup) {
                        backups.push(backup.clone());
                    }
                }
                Entry {
                    name: supplier.name.clone(),
                    patterns: supplier
                        .skus
                        .iter()
                        .filter_map(|p| SkuPattern::new(p))
                        .collect(),
                    backups,
                }
            })
            .collect();
        Router { entries }
    }

    /// The router for a loaded config's suppliers.
    pub fn from_config(config: &Config) -> Router {
        Router::new(&config.suppliers)
    }

    /// Where a line with this SKU goes, or `None` when no supplier's pattern matches it. A line
    /// without a SKU, or with an empty or blank one, routes nowhere: a catch-all `*` would
    /// otherwise send a product nobody can identify to a supplier, when it needs an owner's
    /// decision (the unmapped-SKU exception) instead.
    pub fn route(&self, sku: Option<&str>) -> Option<Route> {
        let entry = self.entry_for(sku?)?;
        Some(Route {
            supplier: entry.name.clone(),
            backups: entry.backups.clone(),
        })
    }

    /// The next supplier of this SKU's chain (its supplier, then the backups in order) that is
    /// not in `tried`, or `None` when every one has had its try or the SKU routes nowhere.
    pub fn next_after(&self, sku: Option<&str>, tried: &[String]) -> Option<String> {
        let entry = self.entry_for(sku?)?;
        std::iter::once(&entry.name)
            .chain(&entry.backups)
            .find(|name| !tried.contains(name))
            .cloned()
    }

    fn entry_for(&self, sku: &str) -> Option<&Entry> {
        if sku.trim().is_empty() {
            return None;
        }
        let folded: Vec<char> = sku.chars().map(fold).collect();
        self.entries.iter().find(|entry| {
            entry
                .patterns
                .iter()
                .any(|pattern| pattern.matches_folded(&folded))
        })
    }
}

impl crate::workflow::Routes for Router {
    fn chain(&self, sku: Option<&str>) -> Vec<String> {
        self.route(sku)
            .map(|r| r.chain().map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn has_supplier(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }

    fn any(&self) -> bool {
        !self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdapterConfig;

    fn supplier(name: &str, skus: &[&str], backups: &[&str]) -> SupplierConfig {
        SupplierConfig {
            name: name.to_owned(),
            adapter: AdapterConfig::Manual,
            skus: skus.iter().map(|s| (*s).to_owned()).collect(),
            backups: backups.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn matches(pattern: &str, sku: &str) -> bool {
        SkuPattern::new(pattern)
            .expect("a valid pattern")
            .matches(sku)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn exact_pattern_matches_only_that_sku() {
        assert!(matches("MUG-RED", "MUG-RED"));
        assert!(!matches("MUG-RED", "MUG-RED-XL"));
        assert!(!matches("MUG-RED", "XMUG-RED"));
        assert!(!matches("MUG-RED", "MUG-RE"));
        assert!(!matches("MUG-RED", ""));
    }

    #[test]
    fn star_matches_any_run_including_none() {
        assert!(matches("MUG-*", "MUG-"));
        assert!(matches("MUG-*", "MUG-RED-350ML"));
        assert!(!matches("MUG-*", "MUG"));
        assert!(matches("*-RED", "TEE-RED"));
        assert!(matches("TEE-*-RED", "TEE-XL-RED"));
        assert!(matches("TEE-*-RED", "TEE--RED"));
        assert!(matches("TEE-*-RED", "TEE-RED-RED"));
        assert!(!matches("TEE-*-RED", "TEE-XL-BLUE"));
        assert!(matches("*", "ANYTHING"));
        assert!(matches("**", "A"));
        // Backtracking to the latest star: the first "-RED" is not the end.
        assert!(matches("*-RED", "X-RED-RED"));
        assert!(matches("A*B*C", "AXBXXBYC"));
        assert!(!matches("A*B*C", "AXBXXBY"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(matches("TEE-??-RED", "TEE-XL-RED"));
        assert!(!matches("TEE-??-RED", "TEE-S-RED"));
        assert!(!matches("TEE-??-RED", "TEE-XXL-RED"));
        assert!(matches("?", "A"));
        assert!(!matches("?", ""));
        // One character, not one byte.
        assert!(matches("TEE-??-RED", "TEE-ÄÖ-RED"));
        assert!(matches("?*", "X"));
        assert!(!matches("?*?", "X"));
    }

    #[test]
    fn matching_ignores_case() {
        assert!(matches("mug-*", "MUG-RED"));
        assert!(matches("MUG-*", "mug-red"));
        assert!(matches("Tee-??-Red", "tEE-xl-rED"));
        assert!(matches("BECHER-Ä", "becher-ä"));
    }

    #[test]
    fn pathological_pattern_finishes_and_does_not_match() {
        // A backtracking matcher tries every way of splitting the text between the stars,
        // which for this pattern and text would not finish in any reasonable time.
        let sku = "a".repeat(100_000);
        assert!(!matches("*a*a*a*a*a*b", &sku));
        assert!(!matches("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", &sku));
        assert!(matches("*a*a*a*a*a*a", &sku));
        let router = Router::new(&[supplier("acme", &["*a*a*a*a*a*b"], &[])]);
        assert_eq!(router.route(Some(&sku)), None);
    }

    #[test]
    fn invalid_patterns_are_refused() {
        assert!(check_pattern("").unwrap_err().contains("empty pattern"));
        assert!(check_pattern("MUG\t*").unwrap_err().contains("control"));
        assert!(SkuPattern::new("").is_none());
        assert!(check_pattern("*").is_ok());
        assert!(check_pattern("MUG RED").is_ok());
    }

    #[test]
    fn first_matching_supplier_in_config_order_wins() {
        let router = Router::new(&[
            supplier("acme", &["MUG-RED-*"], &[]),
            supplier("bravo", &["MUG-*", "TEE-*"], &[]),
            supplier("charlie", &["*"], &[]),
        ]);
        let to = |sku: &str| router.route(Some(sku)).map(|r| r.supplier);
        assert_eq!(to("MUG-RED-350"), Some("acme".into()));
        assert_eq!(to("MUG-BLUE-350"), Some("bravo".into()));
        assert_eq!(to("tee-xl"), Some("bravo".into()));
        assert_eq!(to("CAP-1"), Some("charlie".into()));

        // The same patterns in another order route differently: order is the rule.
        let router = Router::new(&[
            supplier("charlie", &["*"], &[]),
            supplier("acme", &["MUG-RED-*"], &[]),
        ]);
        assert_eq!(
            router.route(Some("MUG-RED-350")).unwrap().supplier,
            "charlie"
        );
    }

    #[test]
    fn route_lists_backups_in_order_without_the_primary() {
        let router = Router::new(&[
            supplier("acme", &["MUG-*"], &["charlie", "bravo"]),
            supplier("bravo", &[], &["acme"]),
            supplier("charlie", &[], &[]),
        ]);
        let route = router.route(Some("MUG-RED")).unwrap();
        assert_eq!(
            route,
            Route {
                supplier: "acme".into(),
                backups: names(&["charlie", "bravo"]),
            }
        );
        assert_eq!(
            route.chain().collect::<Vec<_>>(),
            ["acme", "charlie", "bravo"]
        );

        // A hand-built list that names the supplier itself, an unknown supplier or one backup
        // twice still yields a chain of distinct, known suppliers.
        let router = Router::new(&[
            supplier("acme", &["MUG-*"], &["acme", "bravo", "nobody", "bravo"]),
            supplier("bravo", &[], &[]),
        ]);
        assert_eq!(
            router.route(Some("MUG-RED")).unwrap().backups,
            names(&["bravo"])
        );
    }

    #[test]
    fn backups_of_backups_are_not_followed() {
        // bravo's own backup applies to the SKUs bravo is first for, not to acme's.
        let router = Router::new(&[
            supplier("acme", &["MUG-*"], &["bravo"]),
            supplier("bravo", &["TEE-*"], &["charlie"]),
            supplier("charlie", &[], &[]),
        ]);
        assert_eq!(
            router.route(Some("MUG-1")).unwrap().backups,
            names(&["bravo"])
        );
        assert_eq!(
            router.next_after(Some("MUG-1"), &names(&["acme", "bravo"])),
            None
        );
        assert_eq!(
            router.route(Some("TEE-1")).unwrap().backups,
            names(&["charlie"])
        );
    }

    #[test]
    fn next_after_skips_the_suppliers_already_tried() {
        let router = Router::new(&[
            supplier("acme", &["MUG-*"], &["bravo", "charlie"]),
            supplier("bravo", &[], &[]),
            supplier("charlie", &[], &[]),
        ]);
        let sku = Some("MUG-RED");
        assert_eq!(router.next_after(sku, &[]), Some("acme".into()));
        assert_eq!(
            router.next_after(sku, &names(&["acme"])),
            Some("bravo".into())
        );
        assert_eq!(
            router.next_after(sku, &names(&["acme", "bravo"])),
            Some("charlie".into())
        );
        // The order of `tried` does not matter, and a supplier tried by hand is skipped too.
        assert_eq!(
            router.next_after(sku, &names(&["bravo"])),
            Some("acme".into())
        );
        assert_eq!(
            router.next_after(sku, &names(&["acme", "charlie"])),
            Some("bravo".into())
        );
        assert_eq!(
            router.next_after(sku, &names(&["charlie", "bravo", "acme"])),
            None
        );
        assert_eq!(router.next_after(Some("CAP-1"), &[]), None);
        assert_eq!(router.next_after(None, &[]), None);
    }

    #[test]
    fn missing_blank_or_unmatched_skus_route_nowhere() {
        let router = Router::new(&[supplier("acme", &["*"], &[]), supplier("bravo", &[], &[])]);
        assert_eq!(router.route(None), None);
        assert_eq!(router.route(Some("")), None);
        assert_eq!(router.route(Some("   ")), None);
        assert_eq!(router.route(Some("MUG")).unwrap().supplier, "acme");

        let router = Router::new(&[supplier("acme", &["MUG-*"], &[])]);
        assert_eq!(router.route(Some("TEE-1")), None);
        assert_eq!(Router::new(&[]).route(Some("MUG-1")), None);
    }
}
