//! Realistic dropshipping orders for demos, tests and benchmarks, deterministic given a seed.

use serde_json::json;

use super::model::Rng;
use super::{NewLine, NewOrder};

/// (SKU, variant titles, location index): what a dropshipping store sells and where it ships
/// from. Location 0 is the Shenzhen warehouse, 1 the Los Angeles 3PL.
const CATALOGUE: [(&str, &[&str], usize); 12] = [
    ("PHN-CASE-MAG-IP15", &["Black", "Clear", "Navy Blue"], 0),
    ("LED-STRIP-RGB-5M", &["5 m", "10 m"], 0),
    ("MASSAGE-GUN-MINI", &["Grey", "Pink"], 1),
    ("PET-HAIR-ROLLER", &["Default Title"], 0),
    ("POSTURE-CORRECTOR", &["S", "M", "L", "XL"], 0),
    ("EARBUDS-TWS-X3", &["White", "Black"], 1),
    ("KITCHEN-SCALE-5KG", &["Default Title"], 0),
    ("CAR-MOUNT-MAGSAFE", &["Vent", "Dashboard"], 0),
    ("YOGA-MAT-6MM", &["Purple", "Teal", "Black"], 1),
    ("BABY-CAM-1080P", &["Default Title"], 1),
    ("SUNSET-LAMP-16C", &["Sunset Red", "Rainbow"], 0),
    ("NECK-FAN-BLADELESS", &["White", "Green"], 0),
];

const ADDRESSES: [(&str, &str, &str, &str, &str, &str); 6] = [
    (
        "Ada Lovelace",
        "12 Analytical Engine Row",
        "London",
        "ENG",
        "N1 9GU",
        "GB",
    ),
    (
        "Grace Hopper",
        "401 Compiler Ave",
        "Arlington",
        "VA",
        "22201",
        "US",
    ),
    (
        "Alan Turing",
        "9 Bletchley Close",
        "Milton Keynes",
        "ENG",
        "MK3 6EB",
        "GB",
    ),
    (
        "Katherine Johnson",
        "77 Orbit Street",
        "Hampton",
        "VA",
        "23666",
        "US",
    ),
    (
        "Hedy Lamarr",
        "5 Frequency Blvd",
        "Los Angeles",
        "CA",
        "90028",
        "US",
    ),
    (
        "Margaret Hamilton",
        "11 Apollo Way",
        "Boston",
        "MA",
        "02110",
        "US",
    ),
];

/// `n` orders of one to four lines; about a third of them mix both locations, so they have
/// two fulfillment orders. The same seed gives the same orders.
pub fn sample_orders(n: usize, seed: u64) -> Vec<NewOrder> {
    let mut rng = Rng::new(seed, 11);
    (0..n)
        .map(|i| {
            let line_count = 1 + rng.below(4);
            let mut lines: Vec<NewLine> = Vec::with_capacity(line_count);
            while lines.len() < line_count {
                let (sku, variants, location) = CATALOGUE[rng.below(CATALOGUE.len())];
                if lines.iter().any(|l| l.sku == sku) {
                    continue;
                }
                let variant = variants[rng.below(variants.len())];
                lines.push(NewLine {
                    sku: sku.to_string(),
                    quantity: 1 + rng.below(3) as i64,
                    location,
                    variant_title: (variant != "Default Title").then(|| variant.to_string()),
                });
            }
            let (name, street, city, province, zip, country) =
                ADDRESSES[rng.below(ADDRESSES.len())];
            let first_name = name.split(' ').next().unwrap_or(name).to_lowercase();
            NewOrder {
                name: None,
                lines,
                customer_email: Some(format!("{first_name}.{i}@example.org")),
                shipping_address: Some(json!({
                    "name": name,
                    "address1": street,
                    "address2": null,
                    "city": city,
                    "provinceCode": province,
                    "zip": zip,
                    "countryCodeV2": country,
                    "phone": format!("+1555{:07}", rng.below(10_000_000)),
                })),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_deterministic_and_some_span_both_locations() {
        let a = sample_orders(50, 7);
        assert_eq!(a, sample_orders(50, 7));
        assert_ne!(a, sample_orders(50, 8));
        let split = a
            .iter()
            .filter(|o| {
                o.lines.iter().any(|l| l.location == 0) && o.lines.iter().any(|l| l.location == 1)
            })
            .count();
        assert!(split >= 5, "{split} of 50 orders span both locations");
        assert!(a.iter().all(|o| (1..=4).contains(&o.lines.len())));
    }
}
