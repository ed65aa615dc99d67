//! At most one operation at a time per volume, snapshot or name: a second one gets ABORTED,
//! which the CSI spec allows and its clients retry with backoff.

use dashmap::DashSet;

use crate::error::{Error, Result};

#[derive(Default)]
pub struct InFlight {
    keys: DashSet<String>,
}

/// Held while an operation runs; dropping it lets the next one in.
pub struct Guard<'a> {
    keys: &'a DashSet<String>,
    key: String,
}

impl InFlight {
    /// Takes `key` (named `what` in the error) for the life of the guard.
    pub fn begin(&self, key: &str, what: &str) -> Result<Guard<'_>> {
        if !self.keys.insert(key.to_string()) {
            return Err(Error::Aborted(format!("an operation on {what} is in progress; try again")));
        }
        Ok(Guard { keys: &self.keys, key: key.to_string() })
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.keys.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_operation_is_aborted_until_the_first_ends() {
        let inflight = InFlight::default();
        let first = inflight.begin("v", "volume v").unwrap();
        let err = inflight.begin("v", "volume v").err().unwrap();
        assert!(matches!(&err, Error::Aborted(m) if m.contains("volume v")), "{err}");
        assert!(inflight.begin("w", "volume w").is_ok());
        drop(first);
        assert!(inflight.begin("v", "volume v").is_ok());
    }
}
