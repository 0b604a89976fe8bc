//! Video sources: the stamped test pattern and V4L2 cameras.
//!
//! TODO(helper A): implement.

pub mod frame;

pub use frame::{EncodedFrame, I420Frame};
