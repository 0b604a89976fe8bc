//! Encoders and the capture/encode pipeline.
