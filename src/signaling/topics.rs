//! MQTT topic names (docs/protocol.md#topics) and the names inside them.
//!
//! With `B = {prefix}/{device_id}`, the device publishes presence on
//! `B/status`, listens on `B/session/+/in` and answers on
//! `B/session/{sid}/out`. The prefix may itself contain `/`, so topics are
//! recognised by exact prefix and suffix matching, never by splitting on
//! `/` and counting levels.
//!
//! Invariants:
//! - [`Topics`] only builds strings; it never validates the prefix or device
//!   id (the configuration does that, see `Config::validate`), and it never
//!   validates the sid passed to [`Topics::session_in`] /
//!   [`Topics::session_out`]; callers pass sids that [`validate_sid`]
//!   accepted, or raw sids that [`is_topic_level`] accepted.
//! - [`Topics::classify`] never panics, whatever the topic.
//!
//! A message whose sid is invalid ([`InTopic::BadSid`]) deserves a
//! `bad_request` error, but the error can only be published on
//! `B/session/{raw}/out` when `raw` is a usable single topic level:
//! non-empty and free of `/`, `+`, `#` and NUL (see [`is_topic_level`]).
//! Otherwise publishing would target several topics, a wildcard (which MQTT
//! forbids in a topic name) or somebody else's session, so such a message
//! is only logged.

/// Longest raw sid for which an error reply is still published. A sid this
/// long is already invalid; the bound only keeps a hostile viewer from
/// making the device publish on absurdly long topic names.
pub const MAX_REPLY_LEVEL_LEN: usize = 128;

/// Whether `sid` is a valid session id: `[A-Za-z0-9_-]{8,64}`.
pub fn validate_sid(sid: &str) -> bool {
    (8..=64).contains(&sid.len())
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub use crate::config::validate_device_id;

/// Whether `raw` can be used as one level of a topic name we publish on:
/// non-empty, at most [`MAX_REPLY_LEVEL_LEN`] bytes, and without `/`, `+`,
/// `#` or NUL. Errors for an invalid sid are published only when this holds.
pub fn is_topic_level(raw: &str) -> bool {
    !raw.is_empty() && raw.len() <= MAX_REPLY_LEVEL_LEN && !raw.contains(['/', '+', '#', '\0'])
}

/// What a topic the device received on is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InTopic {
    /// `B/session/{sid}/in` with a valid sid.
    Session(String),
    /// `B/session/{raw}/in` where `raw` is not a valid sid (it may be empty
    /// or contain `/`). Answer with `bad_request` only if
    /// [`is_topic_level`]`(raw)`; otherwise only log it.
    BadSid(String),
    /// Anything else (not under `B/session/`, or not ending in `/in`).
    Other,
}

/// The topic names of one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    /// `{prefix}/{device_id}`.
    base: String,
    /// `{base}/session/`, kept to classify without allocating.
    session_root: String,
}

impl Topics {
    /// Topics for `device_id` under `prefix` (both as configured; a prefix
    /// may contain `/`).
    pub fn new(prefix: &str, device_id: &str) -> Topics {
        let base = format!("{prefix}/{device_id}");
        let session_root = format!("{base}/session/");
        Topics { base, session_root }
    }

    /// `B`, i.e. `{prefix}/{device_id}`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `B/status`: retained presence, and the last will.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }

    /// `B/session/+/in`: what the device subscribes to.
    pub fn session_in_filter(&self) -> String {
        format!("{}+/in", self.session_root)
    }

    /// `B/session/{sid}/in`: where a viewer publishes.
    pub fn session_in(&self, sid: &str) -> String {
        format!("{}{sid}/in", self.session_root)
    }

    /// `B/session/{sid}/out`: where the device answers.
    pub fn session_out(&self, sid: &str) -> String {
        format!("{}{sid}/out", self.session_root)
    }

    /// Classifies a topic the device received a message on.
    pub fn classify(&self, topic: &str) -> InTopic {
        let Some(rest) = topic.strip_prefix(self.session_root.as_str()) else {
            return InTopic::Other;
        };
        let Some(raw) = rest.strip_suffix("/in") else {
            return InTopic::Other;
        };
        if validate_sid(raw) {
            InTopic::Session(raw.to_owned())
        } else {
            InTopic::BadSid(raw.to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_length_bounds() {
        assert!(!validate_sid(""));
        assert!(!validate_sid("abcdefg"));
        assert!(validate_sid("abcdefgh"));
        assert!(validate_sid(&"a".repeat(64)));
        assert!(!validate_sid(&"a".repeat(65)));
    }

    #[test]
    fn sid_alphabet() {
        assert!(validate_sid("AZaz09_-"));
        assert!(validate_sid("campeer-view-Xy12"));
        for bad in [
            "abcdefg/h",
            "abcdefg+",
            "abcdefg#",
            "abcd efgh",
            "abcdefgh.",
            "abcdéfgh",
            "abcdefg\0",
        ] {
            assert!(!validate_sid(bad), "{bad:?} must be refused");
        }
    }

    #[test]
    fn sid_multibyte_counts_bytes_not_chars() {
        // 8 chars but 16 bytes, and not in the alphabet anyway.
        assert!(!validate_sid("éééééééé"));
    }

    #[test]
    fn device_id_rules() {
        assert!(validate_device_id("cam1"));
        assert!(validate_device_id("0"));
        assert!(validate_device_id("a_b-c"));
        assert!(validate_device_id(&"a".repeat(63)));
        assert!(!validate_device_id(&"a".repeat(64)));
        assert!(!validate_device_id(""));
        assert!(!validate_device_id("-cam"));
        assert!(!validate_device_id("_cam"));
        assert!(!validate_device_id("Cam1"));
        assert!(!validate_device_id("cam.1"));
        assert!(!validate_device_id("cam/1"));
        assert!(!validate_device_id("cam+"));
    }

    #[test]
    fn topic_names() {
        let t = Topics::new("campeer", "cam1");
        assert_eq!(t.base(), "campeer/cam1");
        assert_eq!(t.status(), "campeer/cam1/status");
        assert_eq!(t.session_in_filter(), "campeer/cam1/session/+/in");
        assert_eq!(t.session_in("abcdefgh"), "campeer/cam1/session/abcdefgh/in");
        assert_eq!(
            t.session_out("abcdefgh"),
            "campeer/cam1/session/abcdefgh/out"
        );
    }

    #[test]
    fn prefix_with_slashes() {
        let t = Topics::new("site/a/cams", "cam1");
        assert_eq!(t.status(), "site/a/cams/cam1/status");
        assert_eq!(t.session_in_filter(), "site/a/cams/cam1/session/+/in");
        assert_eq!(
            t.classify("site/a/cams/cam1/session/abcdefgh/in"),
            InTopic::Session("abcdefgh".into())
        );
        // The same device id under a shorter prefix is another device.
        assert_eq!(
            t.classify("site/a/cam1/session/abcdefgh/in"),
            InTopic::Other
        );
    }

    #[test]
    fn classify_round_trips_session_in() {
        let t = Topics::new("campeer", "cam1");
        let sid = "Zz09_-abcdef";
        assert_eq!(t.classify(&t.session_in(sid)), InTopic::Session(sid.into()));
    }

    #[test]
    fn classify_others() {
        let t = Topics::new("campeer", "cam1");
        for other in [
            "",
            "campeer/cam1/status",
            "campeer/cam1/session/abcdefgh/out",
            "campeer/cam1/session/abcdefgh",
            "campeer/cam1/session/in",
            "campeer/cam2/session/abcdefgh/in",
            "campeer/cam1/session/abcdefgh/in/more",
            "xcampeer/cam1/session/abcdefgh/in",
            "Campeer/cam1/session/abcdefgh/in",
        ] {
            assert_eq!(t.classify(other), InTopic::Other, "{other:?}");
        }
    }

    #[test]
    fn classify_bad_sids() {
        let t = Topics::new("campeer", "cam1");
        assert_eq!(
            t.classify("campeer/cam1/session/short/in"),
            InTopic::BadSid("short".into())
        );
        assert_eq!(
            t.classify("campeer/cam1/session//in"),
            InTopic::BadSid(String::new())
        );
        assert_eq!(
            t.classify("campeer/cam1/session/abcd/efgh/in"),
            InTopic::BadSid("abcd/efgh".into())
        );
        assert_eq!(
            t.classify("campeer/cam1/session/abcdefg+/in"),
            InTopic::BadSid("abcdefg+".into())
        );
    }

    #[test]
    fn bad_sid_reply_only_on_single_levels() {
        assert!(is_topic_level("short"));
        assert!(is_topic_level("has space"));
        assert!(!is_topic_level(""));
        assert!(!is_topic_level("a/b"));
        assert!(!is_topic_level("a+"));
        assert!(!is_topic_level("#"));
        assert!(!is_topic_level("a\0"));
        assert!(is_topic_level(&"x".repeat(MAX_REPLY_LEVEL_LEN)));
        assert!(!is_topic_level(&"x".repeat(MAX_REPLY_LEVEL_LEN + 1)));
    }
}
