//! Attack tests: one file per defect class of issue #18, each a black-box test over real HTTP
//! against a real server that failed before its fix. They prove a defect is gone and stays gone.

mod accounts;
mod appservice;
mod bodies;
mod durability;
mod media;
mod outbound;
mod pagination;
mod push_rules;
mod shared_secret;
mod support;
mod uiaa;
mod visibility;
mod wal;
mod whatsapp;
