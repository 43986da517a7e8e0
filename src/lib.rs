//! Berth: a self-hosted container registry that speaks the OCI Distribution
//! API and Amazon ECR's API, over one store (SQLite and a directory, or
//! PostgreSQL and S3 shared by many nodes).
//!
//! Layers, top to bottom (`docs/architecture.md` has the map; `tests/layering.rs`
//! checks that no module uses one above it):
//! - commands: [`admin`], [`maintenance`], [`server`] (process wiring, router);
//! - faces over a face: [`cloudformation_api`] (CloudFormation's Query API,
//!   whose resource providers call the ECR face in process as the caller) and
//!   [`console`] (the web console, whose pages are ECR calls as the signed-in
//!   caller);
//! - faces: [`distribution`] (`/v2/`), [`ecr_api`] (ECR's JSON API), [`kms_api`]
//!   (KMS's JSON API), [`ssm_api`] (SSM's GetParameter(s), for the CDK's bootstrap
//!   version), [`sts_api`] (STS's Query API: GetCallerIdentity);
//! - [`app`] (what handlers extract) and [`jobs::worker`] (runs background jobs);
//! - services: [`lifecycle`], [`gc`], [`scanning`], [`stacks`] (CloudFormation stacks),
//!   [`replication`] (delivering pushes to other registries and regions),
//!   [`pull_through`] (the pull-through cache: rules, upstream fetches),
//!   [`registry`] (the registry's rules), [`auth`];
//! - [`jobs`]: the job vocabulary any service enqueues; [`parameters`]: the SSM
//!   parameters Berth answers;
//! - state: [`metadata`] (SQL) and [`storage`] (blob bytes);
//! - values and plumbing: [`iam`], [`http`], [`aws_query`] (the Query protocol's
//!   wire shapes), [`reference`], [`sigv4`], [`digest`], [`config`], [`metrics`].

pub mod admin;
pub mod app;
pub mod audit;
pub mod audit_trail;
pub mod auth;
pub mod aws_query;
pub mod cloudformation_api;
pub mod cloudtrail_api;
pub mod config;
pub mod console;
pub mod digest;
pub mod distribution;
pub mod ecr_api;
#[doc(hidden)]
pub mod fuzzing;
pub mod gc;
pub mod http;
pub mod iam;
pub mod jobs;
pub mod kms;
pub mod kms_api;
pub mod lifecycle;
pub mod maintenance;
pub mod metadata;
pub mod metrics;
pub mod parameters;
pub mod pull_through;
pub mod reference;
pub mod registry;
pub mod replication;
pub mod scanning;
pub mod secrets;
pub mod server;
pub mod sigv4;
pub mod ssm_api;
pub mod stacks;
pub mod storage;
pub mod sts_api;
