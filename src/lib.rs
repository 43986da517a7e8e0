//! Berth: a self-hosted container registry that speaks the OCI Distribution
//! API and (soon) Amazon ECR's API, over one store.
//!
//! Layers, top to bottom (see `docs/architecture.md`):
//! - [`server`]: process wiring, router, background jobs;
//! - [`distribution`]: the `/v2/` HTTP controllers;
//! - [`registry`]: the registry's rules, shared by every protocol face;
//! - [`metadata`] (SQL) and [`storage`] (blob bytes): where state lives;
//! - [`digest`], [`reference`]: value types; [`config`], [`metrics`]: plumbing.

pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod digest;
pub mod distribution;
pub mod ecr_api;
#[doc(hidden)]
pub mod fuzzing;
pub mod gc;
pub mod http;
pub mod iam;
pub mod jobs;
pub mod lifecycle;
pub mod maintenance;
pub mod metadata;
pub mod metrics;
pub mod reference;
pub mod registry;
pub mod server;
pub mod storage;
