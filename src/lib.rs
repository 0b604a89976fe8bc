//! campeer: a WebRTC camera daemon for Raspberry Pi boards.
//!
//! The daemon captures a camera (`media`), encodes it once (`encode`), and
//! answers WebRTC offers that arrive over MQTT (`signaling`, `rtc`). Every
//! viewer gets the same encoded frames.

pub mod access;
pub mod app;
pub mod backoff;
pub mod board;
pub mod broker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod encode;
pub mod homeassistant;
pub mod http_client;
pub mod keys_cli;
pub mod keystore;
pub mod logtext;
pub mod media;
pub mod private_file;
pub mod ratelimit;
pub mod relay;
pub mod rtc;
pub mod signaling;
pub mod snapshot;
pub mod supervisor;
pub mod view;
pub mod web;
