//! The audit log page: CloudTrail's LookupEvents over the audit trail,
//! authorized as `cloudtrail:LookupEvents`. Waits for `audit_trail`.

use super::{Ctx, PageError, PageResult};

/// `GET /console/audit`.
pub async fn show(_ctx: &Ctx) -> PageResult {
    Err(PageError::NotFound(
        "The audit log is not part of this build yet".into(),
    ))
}
