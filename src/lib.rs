//! mrm-chat: a real-time multi-person chat server.

pub mod admin;
pub mod ai;
pub mod auth;
pub mod cli;
pub mod client_addr;
pub mod config;
pub mod connections;
pub mod domain;
pub mod error;
pub mod http;
pub mod import;
pub mod limits;
pub mod metrics;
pub mod os;
pub mod realtime;
pub mod service;
pub mod startup;
pub mod state;
pub mod storage;
pub mod store;
pub mod telemetry;
pub mod thumbnails;
pub mod wire;
