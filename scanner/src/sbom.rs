//! An inventory as a CycloneDX 1.5 JSON document (components with purls).

use crate::Inventory;

/// The SBOM of `inventory` for the image `name` (`repo:tag` or `repo@digest`).
pub fn cyclonedx(inventory: &Inventory, name: &str, digest: &str) -> serde_json::Value {
    let _ = (inventory, name, digest);
    unimplemented!("cyclonedx")
}
