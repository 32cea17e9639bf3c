//! Cohort's server side: the Arrow Flight SQL service, the admin gRPC service, configuration,
//! and the `cohort` command-line tool.

pub mod activation;
pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod detached;
pub mod flight;
pub mod limits;
pub mod login_throttle;
pub mod memory;
pub mod output;
pub mod postgres;
pub mod query_log;
pub mod remote;
pub mod script;
pub mod serve;
pub mod shell;
pub mod sql_command;
pub mod statements;
pub mod status;
pub mod tls;
