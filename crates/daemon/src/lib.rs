//! cursusd: the Cursus mail transfer agent.
//!
//! SMTP and LMTP listeners (`server`) drive the pure session state machine of cursus-proto;
//! accepted messages go into the durable queue; routers decide where each recipient goes;
//! local deliveries go through cursus-lda (or, in single-user mode, the same code in-process
//! as the one user). Trusts its configuration file and the LDA; nothing a client sends.

#![forbid(unsafe_code)]

pub mod bounce;
pub mod config;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod hints;
pub mod lda_connections;
pub mod local;
pub mod log;
pub mod parameters;
pub mod reception;
pub mod remote;
pub mod retry;
pub mod router_adapter;
pub mod routing;
pub mod server;
pub mod tls;
