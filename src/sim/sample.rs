//! A realistic sample catalog for demos and trials, as HQ events in the wire shapes of docs/sync-protocol.md
//! (`catalog.upsert`, `price.set`, `promotion.upsert`), so the same lines can be fed to a store by
//! `storebox import` or authored at HQ. Deterministic for a seed and a start instant.
//!
//! Besides ≥ 2,000 items over ten departments (produce, meat and deli sold by weight), base
//! prices and a few running promotions, it schedules one price change and one promotion a few
//! minutes after `now`, so shelf labels visibly change during a demo.

use std::io::Write;
use std::path::Path;

use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::catalog::HqEvent;

#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub seed: u64,
    pub items: usize,
    pub now: Timestamp,
    /// When the price change and the flash promotion start, counted from `now`.
    pub change_after: SignedDuration,
}

impl SampleOptions {
    pub fn new(now: Timestamp) -> Self {
        SampleOptions {
            seed: 42,
            items: 2400,
            now,
            change_after: SignedDuration::from_mins(2),
        }
    }
}

/// The generated events and what a demo or a test needs to know about them.
#[derive(Debug, Clone)]
pub struct Sample {
    pub events: Vec<HqEvent>,
    pub items: usize,
    pub departments: Vec<&'static str>,
    pub kg_skus: Vec<String>,
    /// The sku whose price changes at `change_at`, with its price before and after.
    pub changing_sku: String,
    pub price_before: i64,
    pub price_after: i64,
    /// The flash promotion starting at `change_at`, and its skus.
    pub flash_promotion: String,
    pub flash_skus: Vec<String>,
    pub change_at: Timestamp,
}

impl Sample {
    /// Skus worth putting on shelf labels: the changing one first, then the flash ones.
    pub fn label_skus(&self) -> Vec<String> {
        let mut v = vec![self.changing_sku.clone()];
        v.extend(self.flash_skus.iter().cloned());
        v
    }

    /// Writes the events as JSON lines (the `storebox import` format).
    pub fn write_jsonl(&self, path: &Path) -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for e in &self.events {
            serde_json::to_writer(&mut f, e)?;
            f.write_all(b"\n")?;
        }
        f.flush()
    }
}

struct Dept {
    name: &'static str,
    kg: bool,
    price: (i64, i64),
    nouns: &'static [&'static str],
    variants: &'static [&'static str],
    sizes: &'static [&'static str],
}

const DEPTS: &[Dept] = &[
    Dept {
        name: "produce",
        kg: true,
        price: (99, 699),
        nouns: &[
            "apples",
            "bananas",
            "tomatoes",
            "potatoes",
            "carrots",
            "onions",
            "pears",
            "oranges",
            "lemons",
            "courgettes",
            "peppers",
            "grapes",
            "plums",
            "mushrooms",
            "aubergines",
            "kiwis",
        ],
        variants: &[
            "organic", "local", "red", "yellow", "green", "heirloom", "seasonal", "loose", "mini",
        ],
        sizes: &[""],
    },
    Dept {
        name: "meat",
        kg: true,
        price: (699, 2999),
        nouns: &[
            "chicken breast",
            "beef mince",
            "pork chops",
            "lamb leg",
            "turkey fillet",
            "veal escalope",
            "sausages",
            "ribs",
        ],
        variants: &[
            "free-range",
            "organic",
            "lean",
            "marinated",
            "farm",
            "grass-fed",
        ],
        sizes: &[""],
    },
    Dept {
        name: "deli",
        kg: true,
        price: (999, 3999),
        nouns: &[
            "prosciutto",
            "salami",
            "mortadella",
            "pecorino",
            "parmesan",
            "olives",
            "provolone",
            "speck",
            "gorgonzola",
        ],
        variants: &["aged", "smoked", "spicy", "mild", "DOP", "artisan"],
        sizes: &[""],
    },
    Dept {
        name: "dairy",
        kg: false,
        price: (59, 599),
        nouns: &[
            "whole milk",
            "skimmed milk",
            "yoghurt",
            "butter",
            "mozzarella",
            "ricotta",
            "cream",
            "kefir",
            "mascarpone",
        ],
        variants: &[
            "organic",
            "lactose-free",
            "greek",
            "fresh",
            "high-protein",
            "alpine",
        ],
        sizes: &["125 g", "250 g", "500 g", "1 L", "500 ml", "4 x 125 g"],
    },
    Dept {
        name: "bakery",
        kg: false,
        price: (89, 499),
        nouns: &[
            "sourdough",
            "baguette",
            "ciabatta",
            "croissants",
            "focaccia",
            "rye bread",
            "muffins",
            "grissini",
        ],
        variants: &[
            "wholegrain",
            "rustic",
            "seeded",
            "butter",
            "rosemary",
            "mini",
        ],
        sizes: &["1 pc", "4 pcs", "400 g", "250 g"],
    },
    Dept {
        name: "frozen",
        kg: false,
        price: (149, 899),
        nouns: &[
            "peas",
            "pizza margherita",
            "spinach",
            "fish fingers",
            "ice cream",
            "berries",
            "gnocchi",
            "vegetable mix",
        ],
        variants: &[
            "classic",
            "family",
            "premium",
            "garden",
            "vanilla",
            "stone-baked",
        ],
        sizes: &["450 g", "1 kg", "750 g", "500 ml"],
    },
    Dept {
        name: "pantry",
        kg: false,
        price: (49, 699),
        nouns: &[
            "spaghetti",
            "penne",
            "rice",
            "olive oil",
            "tomato passata",
            "chickpeas",
            "tuna",
            "coffee",
            "flour",
            "honey",
            "jam",
            "cereal",
        ],
        variants: &[
            "classic",
            "wholewheat",
            "extra virgin",
            "organic",
            "arborio",
            "dark roast",
            "acacia",
        ],
        sizes: &["500 g", "1 kg", "250 g", "700 g", "1 L", "3 x 80 g"],
    },
    Dept {
        name: "beverages",
        kg: false,
        price: (39, 1299),
        nouns: &[
            "mineral water",
            "orange juice",
            "cola",
            "lemonade",
            "iced tea",
            "red wine",
            "white wine",
            "lager",
            "espresso beans",
        ],
        variants: &[
            "sparkling",
            "still",
            "zero",
            "classic",
            "reserve",
            "craft",
            "peach",
        ],
        sizes: &["500 ml", "1.5 L", "6 x 330 ml", "750 ml", "1 L"],
    },
    Dept {
        name: "household",
        kg: false,
        price: (99, 1499),
        nouns: &[
            "dish soap",
            "laundry detergent",
            "paper towels",
            "bin bags",
            "sponges",
            "toilet paper",
            "glass cleaner",
        ],
        variants: &[
            "lemon",
            "eco",
            "ultra",
            "sensitive",
            "fresh",
            "extra strong",
        ],
        sizes: &["1 pc", "4 rolls", "750 ml", "2 L", "20 pcs"],
    },
    Dept {
        name: "personal_care",
        kg: false,
        price: (99, 1299),
        nouns: &[
            "shampoo",
            "toothpaste",
            "shower gel",
            "deodorant",
            "hand cream",
            "soap bar",
            "razors",
        ],
        variants: &["mint", "sensitive", "argan", "men", "kids", "aloe"],
        sizes: &["250 ml", "75 ml", "100 g", "400 ml", "5 pcs"],
    },
];

const BRANDS: &[&str] = &[
    "Casa Verde",
    "Alpina",
    "Sole Mio",
    "Nordkap",
    "Bontà",
    "Fattoria",
    "Blu Mare",
    "Granaio",
    "Vetta",
    "Dolce Vita",
    "Prato",
    "Orto Vivo",
];

/// An EAN-13 for `n` with a correct check digit (prefix 20-29: in-store numbers).
fn ean13(n: usize) -> String {
    let body = format!("2{:011}", n % 100_000_000_000);
    let sum: u32 = body
        .bytes()
        .enumerate()
        .map(|(i, b)| (b - b'0') as u32 * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

fn event(id: String, event_type: &str, payload: Value) -> HqEvent {
    HqEvent {
        id: Some(id),
        event_type: event_type.to_string(),
        payload,
    }
}

/// Generates the sample; same options, same events.
pub fn generate(opts: &SampleOptions) -> Sample {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let now = Timestamp::from_second(opts.now.as_second()).unwrap_or(opts.now);
    let long_ago = now - SignedDuration::from_hours(24 * 30);
    let change_at = now + opts.change_after;
    let mut events = Vec::with_capacity(opts.items * 2 + 16);
    let mut kg_skus = Vec::new();
    let mut by_dept: Vec<Vec<(String, i64)>> = vec![Vec::new(); DEPTS.len()];
    let items = opts.items.max(DEPTS.len());
    for i in 0..items {
        let d = i % DEPTS.len();
        let dept = &DEPTS[d];
        let sku = format!("{}", 100_000 + i);
        let brand = BRANDS[rng.random_range(0..BRANDS.len())];
        let noun = dept.nouns[rng.random_range(0..dept.nouns.len())];
        let variant = dept.variants[rng.random_range(0..dept.variants.len())];
        let size = dept.sizes[rng.random_range(0..dept.sizes.len())];
        let name = format!("{brand} {variant} {noun} {size}")
            .trim()
            .to_string();
        let unit = if dept.kg { "kg" } else { "each" };
        if dept.kg {
            kg_skus.push(sku.clone());
        }
        events.push(event(
            format!("sample-item-{sku}"),
            "catalog.upsert",
            json!({"sku": sku, "name": name, "barcodes": [ean13(i + 1)], "department": dept.name, "unit": unit}),
        ));
        // Prices end in 9.
        let price = rng.random_range(dept.price.0 / 10..=dept.price.1 / 10) * 10 + 9;
        events.push(event(
            format!("sample-price-{sku}"),
            "price.set",
            json!({"id": format!("pr-{sku}-base"), "sku": sku, "price": price,
                   "starts_at": long_ago.to_string(), "ends_at": null}),
        ));
        by_dept[d].push((sku, price));
    }
    let dept_idx = |name: &str| DEPTS.iter().position(|d| d.name == name).unwrap_or(0);
    let skus_of = |name: &str, skip: usize, n: usize| -> Vec<(String, i64)> {
        by_dept[dept_idx(name)]
            .iter()
            .skip(skip)
            .take(n)
            .cloned()
            .collect()
    };
    let running_from = (now - SignedDuration::from_hours(24)).to_string();
    let running_to = (now + SignedDuration::from_hours(24 * 30)).to_string();
    let promo = |id: &str,
                 name: &str,
                 kind: &str,
                 params: Value,
                 skus: Vec<String>,
                 dept: Option<&str>,
                 from: &str,
                 to: &str| {
        event(
            format!("sample-{id}"),
            "promotion.upsert",
            json!({"id": id, "name": name, "kind": kind, "params": params, "skus": skus,
                   "department": dept, "starts_at": from, "ends_at": to}),
        )
    };
    events.push(promo(
        "promo-dairy-10",
        "Dairy week: 10% off",
        "percent_off",
        json!({"percent": 10}),
        vec![],
        Some("dairy"),
        &running_from,
        &running_to,
    ));
    let drinks = skus_of("beverages", 0, 6);
    for (sku, price) in &drinks {
        events.push(promo(
            &format!("promo-3for2-{sku}"),
            "3 for the price of 2",
            "multi_buy",
            json!({"quantity": 3, "price": price * 2}),
            vec![sku.clone()],
            None,
            &running_from,
            &running_to,
        ));
    }
    events.push(promo(
        "promo-pantry-2plus1",
        "Buy 2, get 1 free",
        "buy_x_get_y",
        json!({"buy": 2, "get": 1}),
        skus_of("pantry", 0, 8).into_iter().map(|s| s.0).collect(),
        None,
        &running_from,
        &running_to,
    ));
    events.push(promo(
        "promo-bakery-50",
        "Bakery: 0.50 off",
        "amount_off",
        json!({"amount": 50}),
        skus_of("bakery", 0, 6).into_iter().map(|s| s.0).collect(),
        None,
        &running_from,
        &running_to,
    ));

    // The scheduled changes: a bakery item gets cheaper, and a flash sale starts on three
    // frozen items, both at `change_at`.
    let (changing_sku, price_before) = skus_of("bakery", 10, 1)
        .pop()
        .unwrap_or_else(|| by_dept[0][0].clone());
    let price_after = (price_before * 8 / 10 / 10) * 10 + 9;
    events.push(event(
        format!("sample-price-{changing_sku}-change"),
        "price.set",
        json!({"id": format!("pr-{changing_sku}-change"), "sku": changing_sku, "price": price_after,
               "starts_at": change_at.to_string(), "ends_at": null}),
    ));
    let flash_skus: Vec<String> = skus_of("frozen", 0, 3).into_iter().map(|s| s.0).collect();
    let flash_promotion = "promo-flash-frozen".to_string();
    events.push(promo(
        &flash_promotion,
        "Flash sale: 25% off frozen favourites",
        "percent_off",
        json!({"percent": 25}),
        flash_skus.clone(),
        None,
        &change_at.to_string(),
        &(change_at + SignedDuration::from_hours(2)).to_string(),
    ));
    Sample {
        events,
        items,
        departments: DEPTS.iter().map(|d| d.name).collect(),
        kg_skus,
        changing_sku,
        price_before,
        price_after,
        flash_promotion,
        flash_skus,
        change_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_big_varied_deterministic_and_importable() {
        let now: Timestamp = "2026-11-25T10:00:00Z".parse().unwrap();
        let s = generate(&SampleOptions::new(now));
        assert!(s.items >= 2000);
        assert!(s.departments.len() >= 5);
        assert!(s.kg_skus.len() > 100);
        assert!(s.price_after < s.price_before);
        assert_eq!(s.change_at, now + SignedDuration::from_mins(2));
        let again = generate(&SampleOptions::new(now));
        assert_eq!(
            serde_json::to_string(&s.events).unwrap(),
            serde_json::to_string(&again.events).unwrap()
        );
        assert_eq!(ean13(1).len(), 13);

        // Imported through the same path as `storebox import`: every event applies.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sample.jsonl");
        s.write_jsonl(&path).unwrap();
        let db = crate::db::Db::open(&dir.path().join("s.db")).unwrap();
        let report = db
            .write_blocking(|c| {
                Ok(crate::catalog::import::import_file(
                    c,
                    &path,
                    jiff::tz::TimeZone::UTC,
                    now.as_millisecond(),
                ))
            })
            .unwrap()
            .unwrap();
        assert_eq!(report.events as usize, s.events.len());
        let (item, records, promos) = db
            .read_blocking(|c| crate::catalog::load(c, &s.changing_sku))
            .unwrap()
            .unwrap();
        let before = crate::pricing::quote(&item, &records, &promos, now).unwrap();
        let after = crate::pricing::quote(&item, &records, &promos, s.change_at).unwrap();
        assert_eq!((before.price, after.price), (s.price_before, s.price_after));
    }
}
