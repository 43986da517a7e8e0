//! An image's layer scans merged bottom-up with OCI's rules: a layer's
//! whiteouts delete paths of the layers below it (never its own), an opaque
//! directory hides everything below it, a later file at the same path
//! replaces an earlier one. The result is the image's [`Inventory`].

use crate::Inventory;
use crate::layer::LayerScan;

/// Merges layer scans, lowest first; `layer_ids[i]` names layer `i` (its
/// digest) and is recorded on the packages it introduced.
pub fn merge(layers: &[(&str, &LayerScan)]) -> Inventory {
    let _ = layers;
    unimplemented!("image::merge")
}
