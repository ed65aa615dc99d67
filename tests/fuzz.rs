//! Every parser of outside input, fed arbitrary and mutated input: quantities, volume and
//! snapshot names, control-protocol requests, projected SPECs (YAML), and mountd's checks of
//! CSI fields. Each must answer Ok or a clear error, never panic. A short run here; a longer
//! one with `scripts/fuzz.sh` (FUZZ_CASES). Shrunk failures are kept in tests/fuzz.proptest-regressions.

use std::collections::HashMap;

use proptest::prelude::*;
use volfs_api::{Request, SnapshotRef, VolumeName};

const SPEC: &str = include_str!("fixtures/projected.yaml");

fn config() -> ProptestConfig {
    let cases = std::env::var("FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(4096);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

/// `text` with a few bytes replaced, inserted or removed at random places.
fn mutated(text: &'static str) -> impl Strategy<Value = String> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..8);
    edits.prop_map(move |edits| {
        let mut bytes = text.as_bytes().to_vec();
        for (at, kind, byte) in edits {
            let i = at.index(bytes.len().max(1));
            match kind {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i.min(bytes.len()), byte),
                _ if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => {}
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Text with the characters parsers care about more often than chance gives.
fn texty() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[0-9.eEKMGTPi@/a-z_-]{0,24}", "[ -~]{0,64}",]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn quantities_parse_or_refuse_naming_the_text(text in texty()) {
        match volfs_api::quantity::parse_size(&text) {
            Ok(bytes) => prop_assert!(bytes > 0),
            Err(e) => {
                let quoted = format!("{:?}", text);
                prop_assert!(e.contains(&quoted), "{} does not quote the text", e);
            }
        }
    }

    #[test]
    fn names_parse_or_refuse(text in texty()) {
        if let Ok(name) = VolumeName::parse(&text) {
            prop_assert_eq!(name.as_str(), text.as_str());
        }
        if let Ok(s) = SnapshotRef::parse(&text) {
            prop_assert_eq!(s.to_string(), text);
        }
    }

    #[test]
    fn control_requests_parse_or_refuse(text in texty(), json in mutated(r#"{"op":"mount","volume":"a","snapshot":"s","mountpoint":"/m","read_only":true,"passthrough":false,"subpath":"x/y","create":true}"#)) {
        let _ = serde_json::from_str::<Request>(&text);
        if let Ok(r) = serde_json::from_str::<Request>(&json) {
            // What parses serialises back to a request that parses the same.
            let again = serde_json::to_string(&r).unwrap();
            prop_assert_eq!(serde_json::from_str::<Request>(&again).unwrap(), r);
        }
    }

    #[test]
    fn projected_specs_build_or_refuse(text in mutated(SPEC)) {
        if let Err(e) = volfs::projected::Projection::from_yaml(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn csi_fields_are_checked_without_panics(text in texty(), key in texty(), value in texty()) {
        let _ = mountd::validate::text("name", &text, mountd::validate::MAX_STRING);
        if let Ok(p) = mountd::validate::path("target_path", &text) {
            let plain = text.trim_end_matches('/');
            prop_assert!(p.is_absolute() && !plain.is_empty() && !plain.contains("//"));
            prop_assert!(plain.split('/').skip(1).all(|c| c != "." && c != ".."));
        }
        if let Ok(sub) = mountd::validate::subpath("subPath", &text) {
            prop_assert!(!sub.starts_with('/') && sub.split('/').all(|c| !c.is_empty() && c != ".."));
        }
        let _ = mountd::validate::map("parameters", &HashMap::from([(key, value)]));
    }
}
