//! Volume names: Kubernetes object-name rules.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A volume name: a DNS-1123 subdomain, as Kubernetes requires of PV and PVC names — at most 253
/// characters of lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeName(String);

impl VolumeName {
    pub fn parse(name: &str) -> Result<Self, String> {
        let why = if name.is_empty() {
            Some("must not be empty".to_string())
        } else if name.len() > 253 {
            Some(format!("is {} characters long, at most 253 are allowed", name.len()))
        } else if let Some(c) =
            name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
        {
            Some(format!("contains {c:?}; only lowercase letters, digits, '-' and '.' are allowed"))
        } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            Some("must start and end with a lowercase letter or digit".to_string())
        } else {
            None
        };
        match why {
            Some(why) => Err(format!("invalid volume name {name:?}: {why}")),
            None => Ok(VolumeName(name.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for VolumeName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        VolumeName::parse(&s)
    }
}

impl From<VolumeName> for String {
    fn from(n: VolumeName) -> String {
        n.0
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_follow_kubernetes_rules() {
        for ok in ["a", "data-1", "pvc-1234.ns", "0abc"] {
            assert!(VolumeName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a_b", "a/b", "a@b", ".a", &"a".repeat(254)] {
            let err = VolumeName::parse(bad).unwrap_err();
            assert!(err.contains("invalid volume name"), "{bad}: {err}");
        }
    }
}
