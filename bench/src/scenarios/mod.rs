//! One module per benchmark; each `run` sets up what it needs on the server, measures, and
//! returns its report.

pub mod ai;
pub mod connections;
pub mod fanout;
pub mod history;
pub mod rest;
pub mod search;

/// A scenario's result: one JSON object for machines, one line for people.
pub struct Report {
    pub json: serde_json::Value,
    pub human: String,
}
