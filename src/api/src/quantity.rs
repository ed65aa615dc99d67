//! Kubernetes quantities (`250m`, `64Mi`, `1e3`), held exactly; sizes in bytes (`10Gi`, `500Mi`,
//! `1G`, `1.5Ki`, `4096`) are quantities rounded up. The one parser of quantities in volfs.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a quantity was written; it decides its canonical form, which divisor validation compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    DecimalSi,
    BinarySi,
    DecimalExponent,
}

/// A Kubernetes quantity held exactly as a fraction.
#[derive(Clone, PartialEq, Eq)]
pub struct Quantity {
    num: i128,
    den: i128,
    format: Format,
    text: String,
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.text)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Quantity {
    /// Parses `<sign><digits>[.<digits>]<suffix>`, suffix one of n u m "" k M G T P E, Ki Mi Gi
    /// Ti Pi Ei, or e<exponent>.
    pub fn parse(text: &str) -> Result<Quantity, String> {
        let bad = |why: &str| format!("invalid quantity {text:?}: {why}");
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(bad("no number"));
        }
        if frac.contains('.') {
            return Err(bad("more than one '.'"));
        }
        let too_large = || bad("too large");
        let mut num: i128 = 0;
        for d in whole.bytes().chain(frac.bytes()) {
            num = num.checked_mul(10).and_then(|n| n.checked_add(i128::from(d - b'0'))).ok_or_else(too_large)?;
        }
        let mut den: i128 = 10i128.checked_pow(frac.len() as u32).ok_or_else(too_large)?;
        let pow10 = |e: u32| 10i128.checked_pow(e).ok_or_else(too_large);
        let (format, scale): (Format, i32) = match suffix {
            "" => (Format::DecimalSi, 0),
            "n" => (Format::DecimalSi, -9),
            "u" => (Format::DecimalSi, -6),
            "m" => (Format::DecimalSi, -3),
            "k" => (Format::DecimalSi, 3),
            "M" => (Format::DecimalSi, 6),
            "G" => (Format::DecimalSi, 9),
            "T" => (Format::DecimalSi, 12),
            "P" => (Format::DecimalSi, 15),
            "E" => (Format::DecimalSi, 18),
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
                let power = 1 + ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].iter().position(|s| *s == suffix).unwrap_or(0);
                num = num.checked_mul(1i128 << (10 * power)).ok_or_else(too_large)?;
                (Format::BinarySi, 0)
            }
            s if s.starts_with(['e', 'E']) => {
                let exp: i32 = s[1..].parse().map_err(|_| bad("bad exponent"))?;
                (Format::DecimalExponent, exp)
            }
            _ => return Err(bad("unknown suffix (use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or e<n>)")),
        };
        if scale > 0 {
            num = num.checked_mul(pow10(scale as u32)?).ok_or_else(too_large)?;
        } else if scale < 0 {
            den = den.checked_mul(pow10(scale.unsigned_abs())?).ok_or_else(too_large)?;
        }
        if negative {
            num = -num;
        }
        Ok(Quantity { num, den, format, text: text.to_string() })
    }

    pub fn from_integer(n: u64) -> Quantity {
        Quantity { num: i128::from(n), den: 1, format: Format::DecimalSi, text: n.to_string() }
    }

    pub fn is_zero(&self) -> bool {
        self.num == 0
    }

    pub fn is_negative(&self) -> bool {
        self.num < 0
    }

    /// The value rounded up to an integer (`Quantity.Value()`).
    pub fn value(&self) -> i128 {
        ceil_div(self.num, self.den)
    }

    /// The value in thousandths, rounded up (`Quantity.MilliValue()`).
    pub fn milli_value(&self) -> i128 {
        ceil_div(self.num.saturating_mul(1000), self.den)
    }

    /// Compares the values exactly (`Quantity.Cmp`): no rounding.
    pub fn cmp_value(&self, other: &Quantity) -> std::cmp::Ordering {
        match (self.num.checked_mul(other.den), other.num.checked_mul(self.den)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => (self.num as f64 / self.den as f64).total_cmp(&(other.num as f64 / other.den as f64)),
        }
    }

    /// Whether the canonical form of this quantity is one of `allowed` (all of the form `1<suffix>`).
    pub fn canonical_in(&self, allowed: &[&str]) -> bool {
        allowed.iter().filter_map(|a| Quantity::parse(a).ok()).any(|a| {
            self.num.checked_mul(a.den).is_some_and(|x| Some(x) == a.num.checked_mul(self.den))
                && (self.format == a.format || (a.num == a.den && self.den == 1))
        })
    }
}

pub fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if (a % b != 0) && ((a < 0) == (b < 0)) {
        q + 1
    } else {
        q
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// A quantity may be written as a string or, in YAML and JSON, as a bare number.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Integer(i64),
            Float(f64),
        }
        let text = match Written::deserialize(d)
            .map_err(|_| D::Error::custom("must be a quantity such as 500m, 2, 64Mi or 1G"))?
        {
            Written::Text(s) => s,
            Written::Integer(n) => n.to_string(),
            Written::Float(f) => f.to_string(),
        };
        Quantity::parse(&text).map_err(D::Error::custom)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}
/// Parses a size into bytes: a positive Kubernetes quantity, rounded up to whole bytes as
/// Kubernetes rounds storage requests up.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("invalid size {text:?}: {why} (examples: 10Gi, 500Mi, 1G, 4096)");
    let quantity = Quantity::parse(text.trim()).map_err(|e| bad(e.rsplit(": ").next().unwrap_or(&e)))?;
    if quantity.is_negative() {
        return Err(bad("must not be negative"));
    }
    match u64::try_from(quantity.value()) {
        Ok(0) => Err(bad("must be more than zero")),
        Ok(bytes) => Ok(bytes),
        Err(_) => Err(bad("too large")),
    }
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

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap()
    }

    #[test]
    fn quantities_are_exact() {
        assert_eq!(q("250m").milli_value(), 250);
        assert_eq!(q("0.5").milli_value(), 500);
        assert_eq!(q("1.5").value(), 2);
        assert_eq!(q("64Mi").value(), 64 << 20);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E").value(), 1_000_000_000_000_000_000);
        assert_eq!(q("100n").milli_value(), 1);
        assert_eq!(q(".5Ki").value(), 512);
        assert!(q("-1").is_negative());
        for bad in ["", "m", "1.2.3", "1Kb", "abc", "1e"] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantities_compare_by_value() {
        use std::cmp::Ordering::*;
        assert_eq!(q("1Gi").cmp_value(&q("1073741824")), Equal);
        assert_eq!(q("1G").cmp_value(&q("1Gi")), Less);
        assert_eq!(q("1.5Gi").cmp_value(&q("1536Mi")), Equal);
        assert_eq!(q("2Ei").cmp_value(&q("1m")), Greater);
    }

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
