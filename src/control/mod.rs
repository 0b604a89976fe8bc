//! Control over the `control` data channel (docs/protocol.md#the-control-data-channel): JSON-RPC
//! methods, the named GPIO controls they act on, and their configuration.
//!
//! - `config`: `[[gpio]]` and `[access]` (keys and roles), with validation.
//! - `gpio`: the controls behind embedded-hal traits, pulses, debounced
//!   inputs, change notifications and the safe state on shutdown.
//! - `safety`: the fail-safe rules of outputs (`max_on_ms`, `revert_on_end`,
//!   pulse timing), pure and driven by `gpio`.
//! - `cdev`: the production back end, Linux GPIO character devices, and
//!   `campeer gpio-safe` (every output to its safe value, for a stop step).
//! - `rpc`: one JSON-RPC session per viewer: roles, limits, audit log.
//!
//! Offer authorization itself (which role a session gets) lives in
//! `signaling::auth`, because it runs before any peer connection exists.

pub mod cdev;
pub mod config;
pub mod gpio;
pub mod rpc;
pub mod safety;
