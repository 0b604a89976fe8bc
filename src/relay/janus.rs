//! The Janus HTTP API, as much of it as campeer needs: sessions, plugin
//! handles, synchronous plugin requests (the device creating and checking
//! its Streaming mountpoint) and asynchronous ones with long-poll events
//! (`campeer view` watching through the relay). Every reply is checked for
//! Janus's own `error` and the plugin's `error_code`.

use crate::http_client::Exchange;
use hyper::Method;
use rand::Rng;
use serde_json::{json, Value};
use std::time::Duration;

/// Janus core: no such session (it timed out, or Janus restarted).
pub const SESSION_NOT_FOUND: i64 = 458;
/// Janus core: no such handle.
pub const HANDLE_NOT_FOUND: i64 = 459;
/// Streaming plugin: no such mountpoint.
pub const NO_SUCH_MOUNTPOINT: i64 = 455;
/// Longest reply read (an offer with candidates is a few KiB).
const MAX_REPLY: usize = 256 * 1024;
/// How long a long poll may take (Janus answers after 30 s at most).
const POLL_TIMEOUT: Duration = Duration::from_secs(40);

/// Why a Janus request failed.
#[derive(thiserror::Error, Debug)]
pub enum JanusError {
    /// Janus could not be reached, or answered with something else.
    #[error("{0:#}")]
    Transport(anyhow::Error),
    /// Janus itself refused (`"janus":"error"`).
    #[error("Janus error {code}: {reason}")]
    Core { code: i64, reason: String },
    /// The plugin refused (`error_code` in its data).
    #[error("plugin error {code}: {reason}")]
    Plugin { code: i64, reason: String },
}

impl JanusError {
    /// The session or the mountpoint is gone (Janus restarted, or someone
    /// destroyed it): start over rather than retry the same request.
    pub fn is_gone(&self) -> bool {
        matches!(self, JanusError::Core { code, .. } if *code == SESSION_NOT_FOUND || *code == HANDLE_NOT_FOUND)
            || matches!(self, JanusError::Plugin { code, .. } if *code == NO_SUCH_MOUNTPOINT)
    }
}

type Result<T> = std::result::Result<T, JanusError>;

/// A Janus HTTP API endpoint, e.g. `http://127.0.0.1:8088/janus`.
#[derive(Clone, Debug)]
pub struct Janus {
    base: url::Url,
}

/// A Janus session with one plugin handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle {
    pub session: u64,
    pub handle: u64,
}

fn transaction() -> String {
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

/// Janus's own error, if the reply is one.
fn core_error(reply: &Value) -> Option<JanusError> {
    if reply["janus"] != "error" {
        return None;
    }
    Some(JanusError::Core {
        code: reply["error"]["code"].as_i64().unwrap_or(0),
        reason: reply["error"]["reason"]
            .as_str()
            .unwrap_or("(no reason)")
            .to_owned(),
    })
}

/// The plugin's data in a reply or event, or its error.
pub fn plugin_data(reply: &Value) -> Result<Value> {
    let data = &reply["plugindata"]["data"];
    if let Some(code) = data["error_code"].as_i64() {
        return Err(JanusError::Plugin {
            code,
            reason: data["error"].as_str().unwrap_or("(no reason)").to_owned(),
        });
    }
    if data.is_null() {
        return Err(JanusError::Transport(anyhow::anyhow!(
            "Janus replied without plugin data: {reply}"
        )));
    }
    Ok(data.clone())
}

impl Janus {
    pub fn new(base: &str) -> anyhow::Result<Janus> {
        let mut base = url::Url::parse(base)?;
        // `join` keeps the last segment only when the path ends with `/`.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Janus { base })
    }

    fn url(&self, path: &str) -> Result<url::Url> {
        if path.is_empty() {
            let mut u = self.base.clone();
            u.set_path(self.base.path().trim_end_matches('/'));
            return Ok(u);
        }
        self.base
            .join(path)
            .map_err(|e| JanusError::Transport(anyhow::anyhow!("Janus URL: {e}")))
    }

    async fn exchange(&self, method: Method, url: url::Url, body: Option<Value>) -> Result<Value> {
        let timeout = if method == Method::GET {
            POLL_TIMEOUT
        } else {
            Duration::from_secs(10)
        };
        let resp = Exchange {
            content_type: body.is_some().then_some("application/json"),
            body: body.map(|b| b.to_string()).unwrap_or_default(),
            max_body: MAX_REPLY,
            timeout,
            ..Exchange::new(method, &url)
        }
        .send()
        .await
        .map_err(JanusError::Transport)?;
        if !resp.status.is_success() {
            return Err(JanusError::Transport(anyhow::anyhow!(
                "{url}: HTTP {}",
                resp.status
            )));
        }
        let reply: Value = serde_json::from_str(&resp.body)
            .map_err(|e| JanusError::Transport(anyhow::anyhow!("{url}: not JSON: {e}")))?;
        match core_error(&reply) {
            Some(e) => Err(e),
            None => Ok(reply),
        }
    }

    async fn post(&self, path: &str, mut body: Value) -> Result<Value> {
        body["transaction"] = json!(transaction());
        self.exchange(Method::POST, self.url(path)?, Some(body))
            .await
    }

    /// A new session with `plugin` attached.
    pub async fn attach(&self, plugin: &str) -> Result<Handle> {
        let created = self.post("", json!({"janus": "create"})).await?;
        let session = id_of(&created)?;
        let attached = self
            .post(
                &session.to_string(),
                json!({"janus": "attach", "plugin": plugin}),
            )
            .await?;
        Ok(Handle {
            session,
            handle: id_of(&attached)?,
        })
    }

    /// A synchronous plugin request (e.g. the Streaming plugin's `create`,
    /// `info`, `edit`, `destroy`): the plugin's data.
    pub async fn request(&self, h: Handle, body: Value) -> Result<Value> {
        let reply = self
            .post(
                &format!("{}/{}", h.session, h.handle),
                json!({"janus": "message", "body": body}),
            )
            .await?;
        plugin_data(&reply)
    }

    /// An asynchronous plugin request (`watch`, `start`), with an optional
    /// JSEP; its result comes as an event ([`Janus::poll`]).
    pub async fn send(&self, h: Handle, body: Value, jsep: Option<Value>) -> Result<()> {
        let mut msg = json!({"janus": "message", "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        self.post(&format!("{}/{}", h.session, h.handle), msg)
            .await
            .map(drop)
    }

    /// Waits (long poll, up to 30 s) for the session's next events.
    pub async fn poll(&self, session: u64) -> Result<Vec<Value>> {
        let mut url = self.url(&session.to_string())?;
        url.query_pairs_mut()
            .append_pair("maxev", "10")
            .append_pair("rid", &transaction());
        match self.exchange(Method::GET, url, None).await? {
            Value::Array(events) => Ok(events),
            v if v["janus"] == "keepalive" => Ok(vec![]),
            v => Ok(vec![v]),
        }
    }

    /// Keeps a session from timing out (Janus's default is 60 s).
    pub async fn keepalive(&self, session: u64) -> Result<()> {
        self.post(&session.to_string(), json!({"janus": "keepalive"}))
            .await
            .map(drop)
    }

    /// Ends a session (best effort at the caller's choice).
    pub async fn destroy(&self, session: u64) -> Result<()> {
        self.post(&session.to_string(), json!({"janus": "destroy"}))
            .await
            .map(drop)
    }
}

fn id_of(reply: &Value) -> Result<u64> {
    reply["data"]["id"].as_u64().ok_or_else(|| {
        JanusError::Transport(anyhow::anyhow!("Janus reply without data.id: {reply}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_told_apart() {
        let core = json!({"janus":"error","error":{"code":458,"reason":"No such session 1"}});
        let e = core_error(&core).unwrap();
        assert!(e.is_gone(), "{e}");
        assert!(core_error(&json!({"janus":"success"})).is_none());
        let plugin = json!({"janus":"success","plugindata":{"plugin":"janus.plugin.streaming",
            "data":{"streaming":"event","error_code":455,"error":"No such mountpoint/stream 7"}}});
        let e = plugin_data(&plugin).unwrap_err();
        assert!(e.is_gone());
        assert_eq!(
            e.to_string(),
            "plugin error 455: No such mountpoint/stream 7"
        );
        let pin =
            json!({"plugindata":{"data":{"error_code":457,"error":"Unauthorized (wrong pin)"}}});
        assert!(!plugin_data(&pin).unwrap_err().is_gone());
        assert!(plugin_data(&json!({"janus":"ack"})).is_err());
        let ok = json!({"plugindata":{"data":{"streaming":"info","info":{"viewers":3}}}});
        assert_eq!(plugin_data(&ok).unwrap()["info"]["viewers"], 3);
    }

    #[test]
    fn urls_keep_the_base_path() {
        let j = Janus::new("http://127.0.0.1:8088/janus").unwrap();
        assert_eq!(
            j.url("12/34").unwrap().as_str(),
            "http://127.0.0.1:8088/janus/12/34"
        );
        assert_eq!(j.url("").unwrap().as_str(), "http://127.0.0.1:8088/janus");
    }
}
