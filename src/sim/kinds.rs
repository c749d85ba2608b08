//! What each kind of virtual device is and does, as plain functions over plain data (no sockets):
//! its starting readings, how readings drift, which alerts thresholds raise, what a jam means,
//! and how it answers commands.

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Lane,
    Scale,
    Label,
    Fridge,
    Printer,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Lane,
        Kind::Scale,
        Kind::Label,
        Kind::Fridge,
        Kind::Printer,
    ];

    /// The kind string the box's registry uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Lane => "lane",
            Kind::Scale => "scale",
            Kind::Label => "label",
            Kind::Fridge => "fridge",
            Kind::Printer => "printer",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The alert a jam raises, and what it means for the device's work.
    pub fn jam_alert(self) -> (&'static str, &'static str) {
        match self {
            Kind::Lane => ("SCANNER_JAM", "Scanner jammed: items cannot be scanned"),
            Kind::Scale => ("SCALE_JAM", "Scale platter stuck: no weighing"),
            Kind::Label => ("DISPLAY_STUCK", "Display frozen: price changes not shown"),
            Kind::Fridge => ("COMPRESSOR_FAULT", "Compressor stopped: temperature rising"),
            Kind::Printer => ("PAPER_JAM", "Paper jammed: receipts cannot be printed"),
        }
    }

    /// The event type a burst of events sends.
    pub fn burst_event_type(self) -> &'static str {
        match self {
            Kind::Lane => "basket.abandoned",
            Kind::Scale => "scale.weighed",
            Kind::Label => "label.displayed",
            Kind::Fridge => "door.closed",
            Kind::Printer => "receipt.printed",
        }
    }
}

/// Readings a device of this kind starts with (sent as telemetry).
pub fn initial_readings(kind: Kind, rng: &mut impl Rng) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    match kind {
        Kind::Lane => {}
        Kind::Scale => {
            m.insert("load_g".into(), 0.0);
        }
        Kind::Label => {
            m.insert("battery".into(), round3(0.6 + rng.random::<f64>() * 0.4));
        }
        Kind::Fridge => {
            m.insert("temp_c".into(), round3(3.0 + rng.random::<f64>() * 1.5));
        }
        Kind::Printer => {
            m.insert("paper".into(), 1.0);
        }
    }
    m
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One telemetry period of drift: batteries drain, fridges wander around 4 °C (and warm up while
/// the door is open or the compressor is jammed).
pub fn drift(
    kind: Kind,
    readings: &mut BTreeMap<String, f64>,
    jammed: bool,
    door_open: bool,
    rng: &mut impl Rng,
) {
    match kind {
        Kind::Label => {
            if let Some(b) = readings.get_mut("battery") {
                *b = round3((*b - 0.001).max(0.0));
            }
        }
        Kind::Fridge => {
            if let Some(t) = readings.get_mut("temp_c") {
                let step = if jammed || door_open {
                    0.4 + rng.random::<f64>() * 0.2
                } else {
                    // Pulled back towards 4 °C with a little noise.
                    (4.0 - *t) * 0.2 + (rng.random::<f64>() - 0.5) * 0.2
                };
                *t = round3(*t + step);
            }
        }
        Kind::Lane | Kind::Scale | Kind::Printer => {}
    }
}

/// Store-wide rush hours, as a schedule every lane follows (they started together): the last
/// `rush_ms` of every `rush_every_ms` since the start are a rush. 0 turns rushes off.
pub fn in_rush(elapsed_ms: u64, rush_every_ms: u64, rush_ms: u64) -> bool {
    rush_every_ms > 0 && elapsed_ms % rush_every_ms >= rush_every_ms.saturating_sub(rush_ms)
}

/// The pause at a lane between one customer's checkout and the next customer's first scan:
/// 0.3 to 1.7 times `mean_ms`, a quarter of that in a rush (the queue is waiting).
pub fn customer_gap_ms(mean_ms: u64, rush: bool, rng: &mut impl Rng) -> u64 {
    let gap = (mean_ms as f64 * rng.random_range(0.3..1.7)) as u64;
    if rush {
        gap / 4
    } else {
        gap
    }
}

/// How many items the next customer buys: 1 to 2×`mean`−1 (so `mean` on average), and half as
/// many again in a rush (the weekly shop after work).
pub fn basket_size(mean: u32, rush: bool, rng: &mut impl Rng) -> u32 {
    let n = rng.random_range(1..=(2 * mean).saturating_sub(1).max(1));
    if rush {
        n + n / 2
    } else {
        n
    }
}

/// The time until a fridge's next incident (a door left ajar: the fridge warms past 8 °C and
/// raises `TEMP_HIGH` until someone closes it): 0.5 to 1.5 times `every_ms`, and the first one
/// early (0.1 to 0.6 times), so a demo shows one within minutes.
pub fn fridge_incident_in_ms(every_ms: u64, first: bool, rng: &mut impl Rng) -> u64 {
    let f = if first {
        rng.random_range(0.1..0.6)
    } else {
        rng.random_range(0.5..1.5)
    };
    (every_ms as f64 * f) as u64
}

/// How long a fridge incident lasts before the door is closed: long enough for the fridge to
/// pass 8 °C (about 10 telemetry periods of +0.4-0.6 °C from 4 °C), plus up to as long again.
pub fn fridge_incident_ms(telemetry_ms: u64, rng: &mut impl Rng) -> u64 {
    telemetry_ms * rng.random_range(12..=20)
}

/// An alert a reading threshold wants open (`Some`) or closed (`None`), by code.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub code: &'static str,
    pub open: Option<(&'static str, String)>,
}

/// Alerts driven by readings: `PAPER_OUT` at paper 0, `BATTERY_LOW` at battery ≤ 0.15,
/// `TEMP_HIGH` above 8 °C.
pub fn thresholds(kind: Kind, readings: &BTreeMap<String, f64>) -> Vec<Threshold> {
    let get = |k: &str| readings.get(k).copied();
    match kind {
        Kind::Printer => vec![Threshold {
            code: "PAPER_OUT",
            open: get("paper")
                .filter(|p| *p <= 0.0)
                .map(|_| ("warning", "Paper roll empty".to_string())),
        }],
        Kind::Label => vec![Threshold {
            code: "BATTERY_LOW",
            open: get("battery")
                .filter(|b| *b <= 0.15)
                .map(|b| ("warning", format!("Battery at {:.0}%", b * 100.0))),
        }],
        Kind::Fridge => vec![Threshold {
            code: "TEMP_HIGH",
            open: get("temp_c")
                .filter(|t| *t > 8.0)
                .map(|t| ("critical", format!("Temperature {t:.1} °C above 8 °C"))),
        }],
        Kind::Lane | Kind::Scale => vec![],
    }
}

/// What a device does with a command, decided from its state.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandEffect {
    /// Acknowledge with ok/message; nothing else changes.
    Ack { ok: bool, message: String },
    /// The printer prints a receipt: paper goes down, a `receipt.printed` event is sent.
    PrintReceipt,
    /// The printer's paper roll is replaced.
    ReloadPaper,
    /// Ack, then disconnect and connect again.
    Reboot,
}

pub fn command_effect(kind: Kind, name: &str, jammed: bool, paper: Option<f64>) -> CommandEffect {
    let ack = |ok: bool, m: &str| CommandEffect::Ack {
        ok,
        message: m.to_string(),
    };
    match (kind, name) {
        (_, "reboot") => CommandEffect::Reboot,
        (_, "ping") | (_, "self_test") if jammed => {
            let (code, _) = kind.jam_alert();
            ack(false, &format!("self test failed: {code}"))
        }
        (_, "ping") | (_, "self_test") => ack(true, "ok"),
        (Kind::Printer, "print_receipt" | "print_test") => {
            if jammed {
                ack(false, "paper jammed")
            } else if paper.unwrap_or(0.0) <= 0.0 {
                ack(false, "paper out")
            } else {
                CommandEffect::PrintReceipt
            }
        }
        (Kind::Printer, "reload_paper") => CommandEffect::ReloadPaper,
        (Kind::Scale, "tare") if !jammed => ack(true, "tared"),
        (Kind::Scale, "tare") => ack(false, "platter stuck"),
        (Kind::Label, "refresh") => ack(true, "refreshing"),
        _ => ack(false, &format!("unknown command {name:?}")),
    }
}

/// `round_half_up(price_per_kg × grams / 1000)` on integers (the box's rule for `kg` lines).
pub fn kg_line(price_per_kg: i64, grams: i64) -> i64 {
    let n = price_per_kg * grams;
    if n >= 0 {
        (n + 500) / 1000
    } else {
        -((-n + 500) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_open_and_close_alerts() {
        let mut r = BTreeMap::new();
        r.insert("paper".to_string(), 0.3);
        assert_eq!(thresholds(Kind::Printer, &r)[0].open, None);
        r.insert("paper".to_string(), 0.0);
        let t = thresholds(Kind::Printer, &r);
        assert_eq!(t[0].code, "PAPER_OUT");
        assert_eq!(t[0].open.as_ref().unwrap().0, "warning");
        let mut f = BTreeMap::new();
        f.insert("temp_c".to_string(), 9.5);
        assert_eq!(
            thresholds(Kind::Fridge, &f)[0].open.as_ref().unwrap().0,
            "critical"
        );
    }

    #[test]
    fn a_printer_without_paper_refuses_to_print() {
        assert_eq!(
            command_effect(Kind::Printer, "print_receipt", false, Some(0.0)),
            CommandEffect::Ack {
                ok: false,
                message: "paper out".into()
            }
        );
        assert_eq!(
            command_effect(Kind::Printer, "print_receipt", false, Some(0.5)),
            CommandEffect::PrintReceipt
        );
        assert!(matches!(
            command_effect(Kind::Lane, "launch_rocket", false, None),
            CommandEffect::Ack { ok: false, .. }
        ));
    }

    #[test]
    fn kg_lines_round_half_up() {
        assert_eq!(kg_line(1999, 250), 500); // 499.75
        assert_eq!(kg_line(1000, 1), 1);
        assert_eq!(kg_line(1, 500), 1); // 0.5 → 1
        assert_eq!(kg_line(1, 499), 0);
    }

    #[test]
    fn pace_rushes_gaps_and_baskets() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        // A rush in the last minute of every five.
        assert!(!in_rush(0, 300_000, 60_000));
        assert!(!in_rush(239_999, 300_000, 60_000));
        assert!(in_rush(240_000, 300_000, 60_000));
        assert!(in_rush(299_999, 300_000, 60_000));
        assert!(!in_rush(300_000, 300_000, 60_000));
        assert!(in_rush(540_000, 300_000, 60_000));
        assert!(!in_rush(250_000, 0, 60_000), "0 turns rushes off");
        let (mut calm, mut rush) = (0, 0);
        for _ in 0..1000 {
            let g = customer_gap_ms(20_000, false, &mut rng);
            assert!((6_000..34_000).contains(&g), "{g}");
            calm += g;
            rush += customer_gap_ms(20_000, true, &mut rng);
        }
        assert!(
            (19_000_000..21_000_000).contains(&calm),
            "mean gap near 20 s: {calm}"
        );
        assert!(rush < calm / 3, "rush gaps are shorter: {rush} vs {calm}");
        let sizes: Vec<u32> = (0..1000).map(|_| basket_size(5, false, &mut rng)).collect();
        assert!(sizes.iter().all(|n| (1..=9).contains(n)));
        let mean = sizes.iter().sum::<u32>() as f64 / 1000.0;
        assert!((4.6..5.4).contains(&mean), "{mean}");
        assert!((0..100).all(|_| basket_size(1, false, &mut rng) == 1));
        let first = fridge_incident_in_ms(600_000, true, &mut rng);
        assert!((60_000..360_000).contains(&first), "{first}");
        let d = fridge_incident_ms(10_000, &mut rng);
        assert!((120_000..=200_000).contains(&d), "{d}");
    }

    #[test]
    fn a_fridge_with_its_door_open_warms_up() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut r = BTreeMap::new();
        r.insert("temp_c".to_string(), 4.0);
        for _ in 0..20 {
            drift(Kind::Fridge, &mut r, false, true, &mut rng);
        }
        assert!(r["temp_c"] > 8.0, "{r:?}");
    }
}
