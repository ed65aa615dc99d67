//! Sizes written as Kubernetes quantities: `10Gi`, `500Mi`, `1G`, `1.5Ki`, `4096`.

use std::fmt;

const SUFFIXES: [(&str, u128); 12] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// Parses a quantity into bytes. Fractions are allowed and round up to whole bytes, as
/// Kubernetes rounds storage requests up.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("invalid size {text:?}: {why} (examples: 10Gi, 500Mi, 1G, 4096)");
    let t = text.trim();
    let (number, multiplier) = SUFFIXES.iter().find_map(|(s, m)| t.strip_suffix(s).map(|n| (n, *m))).unwrap_or((t, 1));
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(bad("no number"));
    }
    if !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad("not a number with an optional unit suffix"));
    }
    if frac.len() > 18 {
        return Err(bad("too many decimals"));
    }
    let too_large = || bad("too large");
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| too_large())? };
    let scale = 10u128.pow(frac.len() as u32);
    let frac_value: u128 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| too_large())? };
    let scaled = whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(frac_value))
        .and_then(|v| v.checked_mul(multiplier))
        .ok_or_else(too_large)?;
    let bytes = scaled.div_ceil(scale);
    let bytes = u64::try_from(bytes).map_err(|_| too_large())?;
    if bytes == 0 {
        return Err(bad("must be more than zero"));
    }
    Ok(bytes)
}

/// Bytes written for people: the largest binary unit that keeps one decimal.
pub struct HumanBytes(pub u64);

impl fmt::Display for HumanBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_quantities() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10Gi"), Ok(10 << 30));
        assert_eq!(parse_size("500Mi"), Ok(500 << 20));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("1k"), Ok(1000));
        assert_eq!(parse_size("1.5Ki"), Ok(1536));
        assert_eq!(parse_size("0.1"), Ok(1));
    }

    #[test]
    fn rejects_bad_sizes_with_the_text() {
        for bad in ["", "0", "0Gi", "ten", "1Gb", "-1", "1.2.3", "99999999999Ei"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn prints_binary_units() {
        assert_eq!(HumanBytes(512).to_string(), "512 B");
        assert_eq!(HumanBytes(10 << 30).to_string(), "10.0 GiB");
    }
}
