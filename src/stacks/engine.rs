//! Running a stack operation: create, update and delete, with the
//! statuses and events CloudFormation shows, in dependency order, and the
//! rollback that undoes a failed create or update. Every step is saved
//! (status, resources, events) before the next one starts, and renews the
//! operation's lease on the stack.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::eval::Known;
use super::plan::{evaluate_properties, included};
use super::{
    LEASE_MS, OutputRecord, Prepared, Provisioner, ResourceRecord, Result, STACK_TYPE, StackDoc,
    Stacks, is_in_progress, parse_doc, providers,
};
use crate::metadata::{StackEventRow, StackRow, now_millis};

/// One step of an update, as a rollback must undo it.
enum Done {
    Created(String),
    Updated(String, ResourceRecord),
    Replaced(String, ResourceRecord),
}

/// An operation in progress on one stack (the holder of its lease).
pub struct Run {
    stacks: Arc<Stacks>,
    prov: Arc<dyn Provisioner>,
    row: StackRow,
    pub(crate) doc: StackDoc,
    events: Vec<StackEventRow>,
    /// The status last saved: the next save expects to find it.
    saved: String,
    /// Set once a save failed: the operation stops where it is.
    lost: bool,
}

impl Run {
    /// The operation on a stack just stored in its first in-progress status.
    pub(crate) fn new(stacks: Arc<Stacks>, prov: Arc<dyn Provisioner>, row: StackRow) -> Run {
        let doc = parse_doc(&row.doc);
        let saved = row.status.clone();
        Run {
            stacks,
            prov,
            row,
            doc,
            events: Vec::new(),
            saved,
            lost: false,
        }
    }

    /// Start an operation: move the stack from `before` to `row.status`
    /// ("User Initiated"). `None` when another operation got there first.
    pub(crate) async fn claim(
        stacks: Arc<Stacks>,
        prov: Arc<dyn Provisioner>,
        mut row: StackRow,
        before: &str,
    ) -> Result<Option<Run>> {
        row.updated_at = Some(now_millis());
        let status = row.status.clone();
        let mut run = Run::new(stacks, prov, row);
        run.saved = before.to_string();
        run.stack_event(&status, Some("User Initiated".into()));
        run.row.doc = serde_json::to_string(&run.doc).unwrap_or_default();
        let ok = run
            .stacks
            .meta
            .stack_write(&run.row, &[before], &run.events)
            .await?;
        if !ok {
            return Ok(None);
        }
        run.events.clear();
        run.saved = status;
        Ok(Some(run))
    }

    fn event(
        &mut self,
        logical: &str,
        physical: Option<&str>,
        ty: &str,
        status: &str,
        reason: Option<String>,
    ) {
        self.events.push(StackEventRow {
            seq: self.doc.next_event,
            event_id: uuid::Uuid::new_v4().to_string(),
            logical_id: logical.to_string(),
            physical_id: physical.map(str::to_string),
            resource_type: ty.to_string(),
            status: status.to_string(),
            reason,
            timestamp: now_millis(),
            properties: None,
        });
        self.doc.next_event += 1;
    }

    fn stack_event(&mut self, status: &str, reason: Option<String>) {
        let name = self.row.name.clone();
        let id = self.row.stack_id.clone();
        self.event(&name, Some(&id), STACK_TYPE, status, reason);
    }

    /// Save the stack (status, document, new events), renewing the lease.
    async fn save(&mut self) {
        if self.lost {
            return;
        }
        self.row.lease_until = is_in_progress(&self.row.status).then(|| now_millis() + LEASE_MS);
        self.row.doc = serde_json::to_string(&self.doc).unwrap_or_default();
        let expect = [self.saved.as_str()];
        match self
            .stacks
            .meta
            .stack_write(&self.row, &expect, &self.events)
            .await
        {
            Ok(true) => {
                self.events.clear();
                self.saved = self.row.status.clone();
            }
            Ok(false) => {
                tracing::warn!(stack = %self.row.stack_id, "the stack changed under its operation; stopping");
                self.lost = true;
            }
            Err(e) => {
                tracing::error!(stack = %self.row.stack_id, error = %e, "could not save the stack; its operation stops and its lease will expire");
                self.lost = true;
            }
        }
    }

    async fn status(&mut self, status: &str, reason: Option<String>) {
        self.row.status = status.to_string();
        self.row.status_reason = reason.clone();
        self.stack_event(status, reason);
        self.save().await;
    }

    /// What `Ref` / `Fn::GetAtt` know of the stack's resources.
    fn known(&self) -> BTreeMap<String, Known> {
        super::plan::known(&self.doc.resources)
    }

    fn record(
        prepared: &Prepared,
        logical: &str,
        status: &str,
        physical_id: Option<String>,
        properties: Value,
        attributes: BTreeMap<String, Value>,
        reason: Option<String>,
    ) -> ResourceRecord {
        let decl = &prepared.template.resources()[logical];
        let policy = |k: &str| decl.get(k).and_then(Value::as_str).map(str::to_string);
        ResourceRecord {
            resource_type: decl["Type"].as_str().unwrap_or_default().to_string(),
            physical_id,
            status: status.to_string(),
            reason,
            updated_at: now_millis(),
            properties,
            attributes,
            deletion_policy: policy("DeletionPolicy"),
            update_replace_policy: policy("UpdateReplacePolicy"),
        }
    }

    /// Create the physical resource of `logical` (for a new resource,
    /// `verb` CREATE; for a replacement, UPDATE), with its events. False
    /// when it failed; what a failed create left behind stays recorded, for
    /// the rollback to delete.
    async fn create_physical(
        &mut self,
        prepared: &Prepared,
        logical: &str,
        ty: &str,
        props: Value,
        verb: &str,
    ) -> bool {
        let stack_name = self.row.name.clone();
        let result = providers::create(self.prov.as_ref(), ty, logical, &stack_name, &props).await;
        let rec = match result {
            Ok(a) => {
                let id = Some(a.physical_id.as_str());
                let initiated = Some("Resource creation Initiated".to_string());
                self.event(logical, id, ty, &format!("{verb}_IN_PROGRESS"), initiated);
                self.event(logical, id, ty, &format!("{verb}_COMPLETE"), None);
                let status = format!("{verb}_COMPLETE");
                Self::record(
                    prepared,
                    logical,
                    &status,
                    Some(a.physical_id),
                    props,
                    a.attributes,
                    None,
                )
            }
            Err(f) => {
                let status = format!("{verb}_FAILED");
                self.event(
                    logical,
                    f.physical_id.as_deref(),
                    ty,
                    &status,
                    Some(f.reason.clone()),
                );
                Self::record(
                    prepared,
                    logical,
                    &status,
                    f.physical_id,
                    props,
                    BTreeMap::new(),
                    Some(f.reason),
                )
            }
        };
        let ok = rec.status.ends_with("_COMPLETE");
        self.doc.resources.insert(logical.to_string(), rec);
        self.save().await;
        ok
    }

    /// Apply the template's resources in dependency order, recording what
    /// was done in `done`. The error names the resource that failed.
    async fn apply(
        &mut self,
        prepared: &Prepared,
        done: &mut Vec<Done>,
    ) -> std::result::Result<(), String> {
        let order = prepared.template.creation_order().map_err(|e| e.0)?;
        for logical in order {
            if self.lost {
                return Err(logical);
            }
            if !included(prepared, &logical) {
                continue;
            }
            let ty = prepared.template.resources()[&logical]["Type"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let old = self.doc.resources.get(&logical).cloned();
            let creating = old.is_none();
            let known = self.known();
            let props = match evaluate_properties(prepared, &logical, &known, false) {
                Ok(p) => p,
                Err(reason) => {
                    let failed = if creating {
                        "CREATE_FAILED"
                    } else {
                        "UPDATE_FAILED"
                    };
                    self.event(&logical, None, &ty, failed, Some(reason));
                    if creating {
                        let rec = Self::record(
                            prepared,
                            &logical,
                            failed,
                            None,
                            Value::Null,
                            BTreeMap::new(),
                            None,
                        );
                        self.doc.resources.insert(logical.clone(), rec);
                    }
                    self.save().await;
                    return Err(logical);
                }
            };
            let Some(old) = old else {
                self.event(&logical, None, &ty, "CREATE_IN_PROGRESS", None);
                self.save().await;
                done.push(Done::Created(logical.clone()));
                if !self
                    .create_physical(prepared, &logical, &ty, props, "CREATE")
                    .await
                {
                    return Err(logical);
                }
                continue;
            };
            if old.resource_type == ty && old.properties == props {
                // Unchanged; its policies follow the template.
                let rec = Self::record(
                    prepared,
                    &logical,
                    &old.status,
                    old.physical_id.clone(),
                    props,
                    old.attributes.clone(),
                    None,
                );
                self.doc.resources.insert(
                    logical.clone(),
                    ResourceRecord {
                        updated_at: old.updated_at,
                        ..rec
                    },
                );
                continue;
            }
            let physical = old.physical_id.clone().unwrap_or_default();
            let replace = old.resource_type != ty
                || providers::requires_replacement(&ty, &old.properties, &props);
            if replace {
                let name = providers::custom_name(&ty, &props);
                if name.is_some()
                    && name == providers::custom_name(&old.resource_type, &old.properties)
                {
                    let reason = format!(
                        "CloudFormation cannot update a stack when a custom-named resource requires replacing. Rename {} and update the stack again.",
                        name.unwrap_or_default()
                    );
                    self.event(
                        &logical,
                        Some(&physical),
                        &ty,
                        "UPDATE_FAILED",
                        Some(reason),
                    );
                    self.save().await;
                    return Err(logical);
                }
                self.event(&logical, Some(&physical), &ty, "UPDATE_IN_PROGRESS", Some("Requested update requires the creation of a new physical resource; hence creating one.".into()));
                self.save().await;
                done.push(Done::Replaced(logical.clone(), old.clone()));
                if !self
                    .create_physical(prepared, &logical, &ty, props, "UPDATE")
                    .await
                {
                    return Err(logical);
                }
                continue;
            }
            self.event(&logical, Some(&physical), &ty, "UPDATE_IN_PROGRESS", None);
            self.save().await;
            done.push(Done::Updated(logical.clone(), old.clone()));
            let result = providers::update(
                self.prov.as_ref(),
                &ty,
                &physical,
                &old.attributes,
                &old.properties,
                &props,
            )
            .await;
            match result {
                Ok(a) => {
                    self.event(&logical, Some(&physical), &ty, "UPDATE_COMPLETE", None);
                    let rec = Self::record(
                        prepared,
                        &logical,
                        "UPDATE_COMPLETE",
                        Some(a.physical_id),
                        props,
                        a.attributes,
                        None,
                    );
                    self.doc.resources.insert(logical.clone(), rec);
                    self.save().await;
                }
                Err(f) => {
                    self.event(
                        &logical,
                        Some(&physical),
                        &ty,
                        "UPDATE_FAILED",
                        Some(f.reason.clone()),
                    );
                    // Part of the change may have been made: the rollback
                    // brings every property back.
                    let rec = Self::record(
                        prepared,
                        &logical,
                        "UPDATE_FAILED",
                        Some(physical.clone()),
                        props,
                        old.attributes.clone(),
                        Some(f.reason),
                    );
                    self.doc.resources.insert(logical.clone(), rec);
                    self.save().await;
                    return Err(logical);
                }
            }
        }
        Ok(())
    }

    /// The template's outputs, evaluated once its resources exist.
    fn outputs(&self, prepared: &Prepared) -> std::result::Result<Vec<OutputRecord>, String> {
        let known = self.known();
        let scope = prepared.scope(&known, false);
        let mut out = Vec::new();
        for (key, o) in prepared.template.section("Outputs").into_iter().flatten() {
            if let Some(c) = o.get("Condition").and_then(Value::as_str)
                && !prepared.conditions.get(c).copied().unwrap_or(false)
            {
                continue;
            }
            let text = |v: Option<Value>| match v {
                Some(Value::String(s)) => Ok(s),
                Some(Value::Array(a)) => Ok(a
                    .iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(",")),
                Some(Value::Null) | None => Ok(String::new()),
                Some(other) => Ok::<String, String>(other.to_string()),
            };
            let value = text(scope.eval(&o["Value"]).map_err(|e| e.0)?)?;
            let export_name = match o.get("Export").and_then(|e| e.get("Name")) {
                Some(n) => Some(text(scope.eval(n).map_err(|e| e.0)?)?),
                None => None,
            };
            if let Some(n) = &export_name
                && let Some((_, by)) = prepared.exports.get(n)
            {
                return Err(format!(
                    "Export with name {n} is already exported by stack {by}. Rename the export and try again."
                ));
            }
            out.push(OutputRecord {
                key: key.clone(),
                value,
                description: o
                    .get("Description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                export_name,
            });
        }
        Ok(out)
    }

    /// Delete the physical resource of `rec` (unless `keep`: DELETE_SKIPPED),
    /// with its events; the error is why it could not be deleted.
    async fn delete_physical(
        &mut self,
        logical: &str,
        rec: &ResourceRecord,
        keep: bool,
    ) -> std::result::Result<(), String> {
        let ty = rec.resource_type.clone();
        let Some(physical) = rec.physical_id.clone() else {
            return Ok(());
        };
        if keep {
            self.event(logical, Some(&physical), &ty, "DELETE_SKIPPED", None);
            self.save().await;
            return Ok(());
        }
        self.event(logical, Some(&physical), &ty, "DELETE_IN_PROGRESS", None);
        self.save().await;
        let result = providers::delete(self.prov.as_ref(), &ty, &physical, &rec.properties).await;
        match &result {
            Ok(()) => self.event(logical, Some(&physical), &ty, "DELETE_COMPLETE", None),
            Err(reason) => self.event(
                logical,
                Some(&physical),
                &ty,
                "DELETE_FAILED",
                Some(reason.clone()),
            ),
        }
        self.save().await;
        result
    }

    /// Delete one resource of the stack (unless `keep`). False when the
    /// deletion failed (the resource stays, DELETE_FAILED).
    async fn delete_resource(&mut self, logical: &str, rec: &ResourceRecord, keep: bool) -> bool {
        match self.delete_physical(logical, rec, keep).await {
            Ok(()) => {
                self.doc.resources.remove(logical);
                true
            }
            Err(reason) => {
                if let Some(r) = self.doc.resources.get_mut(logical) {
                    r.status = "DELETE_FAILED".into();
                    r.reason = Some(reason);
                }
                self.save().await;
                false
            }
        }
    }

    /// The stack's resources in the order they are deleted: the reverse of
    /// their template's creation order, then any the template no longer has.
    fn deletion_order(&self, body: &str) -> Vec<String> {
        let mut order: Vec<String> = super::template::Template::parse(body, providers::supported)
            .ok()
            .and_then(|t| t.creation_order().ok())
            .unwrap_or_default();
        order.retain(|l| self.doc.resources.contains_key(l));
        for k in self.doc.resources.keys() {
            if !order.contains(k) {
                order.insert(0, k.clone());
            }
        }
        order.reverse();
        order
    }

    /// Create a stack's resources; on failure, roll back (delete what was
    /// made) unless rollback is disabled, and with `delete_on_failure`
    /// delete the stack then.
    pub(crate) async fn create(mut self, prepared: Prepared, delete_on_failure: bool) {
        self.doc.template = prepared.body.clone();
        self.doc.parameters = prepared.records.clone();
        self.doc.description = prepared.template.description().map(str::to_string);
        self.doc.imports = prepared.imports.clone();
        let mut done = Vec::new();
        let failed = match self.apply(&prepared, &mut done).await {
            Ok(()) => match self.outputs(&prepared) {
                Ok(outputs) => {
                    self.doc.outputs = outputs;
                    self.status("CREATE_COMPLETE", None).await;
                    return;
                }
                Err(reason) => reason,
            },
            Err(logical) => format!("The following resource(s) failed to create: [{logical}]. "),
        };
        if self.lost {
            return;
        }
        if self.doc.disable_rollback && !delete_on_failure {
            self.status("CREATE_FAILED", Some(failed)).await;
            return;
        }
        self.status(
            "ROLLBACK_IN_PROGRESS",
            Some(format!("{failed}Rollback requested by user.")),
        )
        .await;
        let mut ok = true;
        for logical in self.deletion_order(&prepared.body) {
            let Some(rec) = self.doc.resources.get(&logical).cloned() else {
                continue;
            };
            let keep = rec.deletion_policy.as_deref() == Some("Retain");
            ok &= self.delete_resource(&logical, &rec, keep).await;
        }
        if !ok {
            self.status(
                "ROLLBACK_FAILED",
                Some("The following resource(s) failed to delete during rollback.".into()),
            )
            .await;
            return;
        }
        self.status("ROLLBACK_COMPLETE", None).await;
        if delete_on_failure {
            self.row.deleted_at = Some(now_millis());
            self.status("DELETE_COMPLETE", None).await;
        }
    }

    /// Update a stack to a new template and parameters; on failure, roll
    /// back to what it was unless rollback is disabled.
    pub(crate) async fn update(
        mut self,
        prepared: Prepared,
        tags: Vec<(String, String)>,
        capabilities: Vec<String>,
        disable_rollback: bool,
    ) {
        let previous = self.doc.clone();
        let old_body = previous.template.clone();
        self.doc.template = prepared.body.clone();
        self.doc.parameters = prepared.records.clone();
        self.doc.description = prepared.template.description().map(str::to_string);
        self.doc.tags = tags;
        self.doc.capabilities = capabilities;
        self.doc.imports = prepared.imports.clone();
        let mut done = Vec::new();
        let failed = match self.apply(&prepared, &mut done).await {
            Ok(()) => match self.outputs(&prepared) {
                Ok(outputs) => {
                    self.doc.outputs = outputs;
                    self.finish_update(&prepared, &previous, &old_body, &done)
                        .await;
                    return;
                }
                Err(reason) => reason,
            },
            Err(logical) => format!("The following resource(s) failed to update: [{logical}]. "),
        };
        if self.lost {
            return;
        }
        if disable_rollback {
            self.status("UPDATE_FAILED", Some(failed)).await;
            return;
        }
        self.status("UPDATE_ROLLBACK_IN_PROGRESS", Some(failed))
            .await;
        let mut ok = true;
        let mut replaced_new = Vec::new();
        for step in done.into_iter().rev() {
            match step {
                Done::Created(logical) => {
                    if let Some(rec) = self.doc.resources.get(&logical).cloned() {
                        ok &= self.delete_resource(&logical, &rec, false).await;
                    }
                }
                Done::Updated(logical, old) => {
                    let Some(cur) = self.doc.resources.get(&logical).cloned() else {
                        continue;
                    };
                    let physical = old.physical_id.clone().unwrap_or_default();
                    self.event(
                        &logical,
                        Some(&physical),
                        &old.resource_type,
                        "UPDATE_IN_PROGRESS",
                        None,
                    );
                    self.save().await;
                    match providers::update(
                        self.prov.as_ref(),
                        &old.resource_type,
                        &physical,
                        &old.attributes,
                        &cur.properties,
                        &old.properties,
                    )
                    .await
                    {
                        Ok(_) => {
                            self.event(
                                &logical,
                                Some(&physical),
                                &old.resource_type,
                                "UPDATE_COMPLETE",
                                None,
                            );
                            self.doc.resources.insert(
                                logical,
                                ResourceRecord {
                                    status: "UPDATE_COMPLETE".into(),
                                    updated_at: now_millis(),
                                    ..old
                                },
                            );
                        }
                        Err(f) => {
                            ok = false;
                            self.event(
                                &logical,
                                Some(&physical),
                                &old.resource_type,
                                "UPDATE_FAILED",
                                Some(f.reason),
                            );
                        }
                    }
                    self.save().await;
                }
                Done::Replaced(logical, old) => {
                    if let Some(new) = self.doc.resources.get(&logical).cloned() {
                        replaced_new.push((logical.clone(), new));
                    }
                    self.doc.resources.insert(logical, old);
                }
            }
        }
        if !ok {
            self.status(
                "UPDATE_ROLLBACK_FAILED",
                Some("The following resource(s) failed to roll back.".into()),
            )
            .await;
            return;
        }
        self.doc.template = previous.template.clone();
        self.doc.parameters = previous.parameters.clone();
        self.doc.description = previous.description.clone();
        self.doc.outputs = previous.outputs.clone();
        self.doc.tags = previous.tags.clone();
        self.doc.capabilities = previous.capabilities.clone();
        self.doc.imports = previous.imports.clone();
        self.status("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", None)
            .await;
        for (logical, new) in replaced_new {
            // The new physical resource of a replacement; the old one stays.
            let _ = self.delete_physical(&logical, &new, false).await;
        }
        self.status("UPDATE_ROLLBACK_COMPLETE", None).await;
    }

    /// After a successful update: delete the resources the template no
    /// longer has and the old physical resources of replacements.
    async fn finish_update(
        &mut self,
        prepared: &Prepared,
        previous: &StackDoc,
        old_body: &str,
        done: &[Done],
    ) {
        self.status("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", None)
            .await;
        for step in done {
            let Done::Replaced(logical, old) = step else {
                continue;
            };
            // A failed deletion leaves the old resource outside the stack.
            let keep = old.update_replace_policy.as_deref() == Some("Retain");
            let _ = self.delete_physical(logical, old, keep).await;
        }
        let kept: Vec<String> = prepared
            .template
            .resources()
            .keys()
            .filter(|l| included(prepared, l))
            .cloned()
            .collect();
        let mut removed_order = {
            let mut order: Vec<String> =
                super::template::Template::parse(old_body, providers::supported)
                    .ok()
                    .and_then(|t| t.creation_order().ok())
                    .unwrap_or_else(|| previous.resources.keys().cloned().collect());
            order.reverse();
            order
        };
        removed_order.retain(|l| !kept.contains(l) && self.doc.resources.contains_key(l));
        for logical in removed_order {
            let Some(rec) = self.doc.resources.get(&logical).cloned() else {
                continue;
            };
            let keep = matches!(
                rec.deletion_policy.as_deref(),
                Some("Retain" | "RetainExceptOnCreate")
            );
            if !self.delete_resource(&logical, &rec, keep).await {
                // A resource that could not be deleted is no longer the stack's.
                self.doc.resources.remove(&logical);
            }
        }
        self.status("UPDATE_COMPLETE", None).await;
    }

    /// Delete a stack's resources, then the stack.
    pub(crate) async fn delete(mut self, retain: Vec<String>) {
        let body = self.doc.template.clone();
        let mut failed = Vec::new();
        for logical in self.deletion_order(&body) {
            let Some(rec) = self.doc.resources.get(&logical).cloned() else {
                continue;
            };
            let keep = retain.contains(&logical)
                || matches!(
                    rec.deletion_policy.as_deref(),
                    Some("Retain" | "RetainExceptOnCreate")
                );
            if !self.delete_resource(&logical, &rec, keep).await {
                failed.push(logical);
            }
            if self.lost {
                return;
            }
        }
        if failed.is_empty() {
            self.row.deleted_at = Some(now_millis());
            self.status("DELETE_COMPLETE", None).await;
        } else {
            self.status(
                "DELETE_FAILED",
                Some(format!(
                    "The following resource(s) failed to delete: [{}]. ",
                    failed.join(", ")
                )),
            )
            .await;
        }
    }
}
