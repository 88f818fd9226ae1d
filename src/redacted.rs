//! [`Redacted`]: what `Debug` prints in place of a secret.

use std::fmt;

/// A `Debug` stand-in for a secret value.
pub(crate) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
