//! Placeholder: not implemented yet, every comparison is `None`.

use std::cmp::Ordering;

pub(crate) fn compare(_a: &str, _b: &str) -> Option<Ordering> {
    None
}
