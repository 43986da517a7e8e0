//! The stack engine against a real metadata store (SQLite) and a
//! provisioner that keeps repositories in a map and fails where told: the
//! order of calls, rollback, leases and concurrent operations.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::*;
use crate::metadata::testing::{Engine, Fixture};

/// Repositories by name, with their settings; every call recorded.
#[derive(Default)]
struct FakeEcr {
    repos: Mutex<BTreeMap<String, Value>>,
    calls: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Provisioner for FakeEcr {
    async fn call(&self, op: &str, input: Value) -> std::result::Result<Value, ApiFault> {
        self.calls.lock().unwrap().push(op.to_string());
        let fault = |code: &str, message: &str| ApiFault {
            service: "Ecr",
            code: code.into(),
            message: message.into(),
            status: 400,
        };
        let name = input["repositoryName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut repos = self.repos.lock().unwrap();
        match op {
            "CreateRepository" => {
                if repos.contains_key(&name) {
                    return Err(fault("RepositoryAlreadyExistsException", "exists"));
                }
                repos.insert(
                    name.clone(),
                    json!({"mutability": input["imageTagMutability"]}),
                );
                Ok(json!({"repository": {
                    "repositoryArn": format!("arn:aws:ecr:us-east-1:123456789012:repository/{name}"),
                    "repositoryUri": format!("host/{name}"),
                }}))
            }
            "PutLifecyclePolicy" if input["lifecyclePolicyText"] == "bad" => {
                Err(fault("InvalidParameterException", "bad policy"))
            }
            "PutImageTagMutability" => {
                repos.get_mut(&name).expect("repo")["mutability"] =
                    input["imageTagMutability"].clone();
                Ok(json!({}))
            }
            "DeleteRepository" => match repos.remove(&name) {
                Some(_) => Ok(json!({})),
                None => Err(fault("RepositoryNotFoundException", "gone")),
            },
            _ => Ok(json!({})),
        }
    }

    fn account(&self) -> &str {
        "123456789012"
    }

    fn parameter(&self, _name: &str) -> std::result::Result<Option<String>, String> {
        Ok(None)
    }
}

async fn service() -> (Arc<Stacks>, Fixture) {
    let fx = Fixture::new(Engine::Sqlite).await;
    let meta = fx.open().await;
    let stacks = Stacks::new(meta, "us-east-1".into());
    (stacks, fx)
}

fn input(name: &str, body: &str) -> StackInput {
    StackInput {
        stack_name: name.into(),
        template_body: Some(body.into()),
        ..StackInput::default()
    }
}

const TWO: &str = "Parameters:\n  Policy: {Type: String, Default: ok}\n  Mut: {Type: String, Default: MUTABLE}\nResources:\n  A:\n    Type: AWS::ECR::Repository\n    Properties: {RepositoryName: a, ImageTagMutability: !Ref Mut}\n  B:\n    Type: AWS::ECR::Repository\n    DependsOn: A\n    Properties:\n      RepositoryName: b\n      LifecyclePolicy: {LifecyclePolicyText: !Ref Policy}\n";

async fn status(s: &Stacks, name: &str) -> String {
    s.stack("123456789012", name).await.unwrap().row.status
}

#[tokio::test]
async fn a_failed_create_rolls_back_what_it_made() {
    let (s, _fx) = service().await;
    let ecr = Arc::new(FakeEcr::default());
    let mut i = input("st", TWO);
    i.parameters = vec![GivenParameter {
        key: "Policy".into(),
        value: Some("bad".into()),
        use_previous: false,
    }];
    s.create_stack(ecr.clone(), i).await.unwrap();
    assert_eq!(status(&s, "st").await, "ROLLBACK_COMPLETE");
    assert!(ecr.repos.lock().unwrap().is_empty());
    assert_eq!(
        *ecr.calls.lock().unwrap(),
        [
            "CreateRepository",
            "CreateRepository",
            "PutLifecyclePolicy",
            "DeleteRepository",
            "DeleteRepository"
        ]
    );
    let events = s
        .events(
            &s.stack("123456789012", "st").await.unwrap().row.stack_id,
            i64::MAX,
            100,
        )
        .await
        .unwrap();
    assert!(events.iter().any(|e| {
        e.logical_id == "B"
            && e.status == "CREATE_FAILED"
            && e.reason
                .as_deref()
                .is_some_and(|r| r.contains("bad policy"))
    }));
    // A stack in ROLLBACK_COMPLETE can only be deleted.
    let err = s
        .update_stack(ecr.clone(), input("st", TWO))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("ROLLBACK_COMPLETE state and can not be updated")
    );
}

#[tokio::test]
async fn a_failed_update_puts_every_change_back() {
    let (s, _fx) = service().await;
    let ecr = Arc::new(FakeEcr::default());
    s.create_stack(ecr.clone(), input("st", TWO)).await.unwrap();
    assert_eq!(status(&s, "st").await, "CREATE_COMPLETE");
    let mut i = input("st", TWO);
    i.parameters = vec![
        GivenParameter {
            key: "Mut".into(),
            value: Some("IMMUTABLE".into()),
            use_previous: false,
        },
        GivenParameter {
            key: "Policy".into(),
            value: Some("bad".into()),
            use_previous: false,
        },
    ];
    s.update_stack(ecr.clone(), i).await.unwrap();
    assert_eq!(status(&s, "st").await, "UPDATE_ROLLBACK_COMPLETE");
    assert_eq!(
        ecr.repos.lock().unwrap()["a"]["mutability"],
        json!("MUTABLE")
    );
    let view = s.stack("123456789012", "st").await.unwrap();
    assert_eq!(
        view.doc
            .parameters
            .iter()
            .find(|p| p.key == "Mut")
            .unwrap()
            .value,
        "MUTABLE"
    );
    // The same template and parameters again: nothing to do.
    let err = s
        .update_stack(ecr.clone(), input("st", TWO))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "No updates are to be performed.");
}

#[tokio::test]
async fn an_operation_whose_node_stopped_shows_as_failed_once_its_lease_ends() {
    let (s, _fx) = service().await;
    let (mut row, events) = new_stack_row(
        "123456789012",
        "st",
        "arn:aws:cloudformation:us-east-1:123456789012:stack/st/1",
        "CREATE_IN_PROGRESS",
        StackDoc::default(),
    );
    row.lease_until = Some(now_millis() + 60_000);
    assert!(s.meta.stack_create(&row, &events).await.unwrap());
    // Held: still in progress, and a second operation is refused.
    assert_eq!(status(&s, "st").await, "CREATE_IN_PROGRESS");
    let ecr = Arc::new(FakeEcr::default());
    assert!(s.update_stack(ecr.clone(), input("st", TWO)).await.is_err());
    // The lease runs out.
    row.lease_until = Some(now_millis() - 1);
    assert!(s.meta.stack_write(&row, &[], &[]).await.unwrap());
    let view = s.stack("123456789012", "st").await.unwrap();
    assert_eq!(view.row.status, "CREATE_FAILED");
    assert!(view.row.status_reason.unwrap().contains("interrupted"));
    // And it can be deleted.
    s.delete_stack(ecr, "st", Vec::new()).await.unwrap();
    assert!(s.stack("123456789012", "st").await.is_err());
}

#[tokio::test]
async fn two_operations_on_one_stack_do_not_both_start() {
    let (s, _fx) = service().await;
    let ecr = Arc::new(FakeEcr::default());
    s.create_stack(ecr.clone(), input("st", TWO)).await.unwrap();
    let view = s.stack("123456789012", "st").await.unwrap();
    let mut a = view.row.clone();
    a.status = "UPDATE_IN_PROGRESS".into();
    let first = engine::Run::claim(s.clone(), ecr.clone(), a.clone(), "CREATE_COMPLETE")
        .await
        .unwrap();
    let second = engine::Run::claim(s.clone(), ecr.clone(), a, "CREATE_COMPLETE")
        .await
        .unwrap();
    assert!(first.is_some());
    assert!(second.is_none());
}

#[tokio::test]
async fn deletion_keeps_retained_resources_and_frees_the_name() {
    let (s, _fx) = service().await;
    let ecr = Arc::new(FakeEcr::default());
    let body = "Resources:\n  A: {Type: AWS::ECR::Repository, DeletionPolicy: Retain, Properties: {RepositoryName: kept}}\n  B: {Type: AWS::ECR::Repository, Properties: {RepositoryName: gone}}\n";
    let first = s
        .create_stack(ecr.clone(), input("st", body))
        .await
        .unwrap();
    s.delete_stack(ecr.clone(), "st", Vec::new()).await.unwrap();
    assert_eq!(
        ecr.repos.lock().unwrap().keys().collect::<Vec<_>>(),
        ["kept"]
    );
    assert_eq!(
        s.stack("123456789012", &first).await.unwrap().row.status,
        "DELETE_COMPLETE"
    );
    // The name is free again (a new stack, a new id).
    ecr.repos.lock().unwrap().clear();
    let second = s
        .create_stack(ecr.clone(), input("st", body))
        .await
        .unwrap();
    assert_ne!(first, second);
    assert_eq!(status(&s, "st").await, "CREATE_COMPLETE");
}
