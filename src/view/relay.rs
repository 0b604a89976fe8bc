//! `campeer view` watching through the device's Janus relay: the device
//! refused the offer with `busy` and a relay (docs/protocol.md, "Watching
//! through a relay"), or `--janus` named a mountpoint. Janus offers, the
//! viewer answers (candidates gathered first), a task keeps the Janus
//! session alive and turns a hang-up into the end of the run; the media
//! part is the same as every other viewer's.

use super::report::ViewReport;
use super::{local_sdp_gathered, receive, viewer_pc, Event};
use crate::cli::ViewArgs;
use crate::encode::pipeline::VideoCodec;
use crate::relay::janus::{plugin_data, Handle, Janus};
use anyhow::Context;
use rtc::peer_connection::sdp::RTCSessionDescription;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info};

/// How long local candidate gathering may take before the answer goes.
const GATHER_WAIT: Duration = Duration::from_secs(3);
/// Janus ends sessions after 60 s without a request.
const KEEPALIVE: Duration = Duration::from_secs(25);

/// Watches mountpoint `id` on `janus` with `pin`; `report` carries what the
/// device exchange already measured.
pub async fn watch(
    args: &ViewArgs,
    janus_url: &str,
    id: u64,
    pin: Option<&str>,
    mut report: ViewReport,
) -> anyhow::Result<ViewReport> {
    report.relay_mountpoint = Some(id);
    report.relay_janus = Some(janus_url.to_owned());
    info!(
        janus = janus_url,
        mountpoint = id,
        "watching through the relay"
    );
    let janus = Janus::new(janus_url).context("the relay's Janus URL")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let started = Instant::now();
    let offer_at = Instant::now();
    let (h, offer) = match ask(&janus, id, pin, deadline).await {
        Ok(got) => got,
        Err(e) => {
            // Janus gone (not noticed by the device yet), an old mountpoint
            // or PIN: the run goes back to the device.
            report.error = Some(format!("the relay refused: {e:#}"));
            report.relay_lost = true;
            return Ok(report);
        }
    };
    report.answer_ms = Some(offer_at.elapsed().as_secs_f64() * 1e3);
    let mut v = match answer(args, &janus, h, offer, started).await {
        Ok(v) => v,
        Err(e) => {
            report.error = Some(format!("the relay's offer could not be answered: {e:#}"));
            report.relay_lost = true;
            let _ = janus.destroy(h.session).await;
            return Ok(report);
        }
    };
    let keeper = tokio::spawn(keep(janus.clone(), h, v.tx.clone()));
    receive(args, &mut v, &mut report, offer_at, deadline).await;
    keeper.abort();
    // Anything but the deadline or a complete run ended the stream under us.
    report.relay_lost = tokio::time::Instant::now() < deadline && report.error.is_some();
    let _ = janus.destroy(h.session).await;
    if let Err(e) = v.pc.close().await {
        debug!("close: {e}");
    }
    Ok(report)
}

/// A peer connection that answered Janus's `offer` (candidates gathered
/// first) and told Janus to start.
async fn answer(
    args: &ViewArgs,
    janus: &Janus,
    h: Handle,
    offer: String,
    started: Instant,
) -> anyhow::Result<super::ViewerPc> {
    let mut v = viewer_pc(args, started, VideoCodec::H264, Vec::new()).await?;
    v.pc.set_remote_description(RTCSessionDescription::offer(offer)?)
        .await?;
    let answer = v.pc.create_answer(None).await?;
    v.pc.set_local_description(answer).await?;
    let sdp = local_sdp_gathered(&mut v, GATHER_WAIT).await?;
    let jsep = json!({"type": "answer", "sdp": sdp});
    if let Err(e) = janus.send(h, json!({"request": "start"}), Some(jsep)).await {
        let _ = v.pc.close().await;
        return Err(e.into());
    }
    Ok(v)
}

/// A Janus session watching mountpoint `id`, and Janus's offer.
async fn ask(
    janus: &Janus,
    id: u64,
    pin: Option<&str>,
    deadline: tokio::time::Instant,
) -> anyhow::Result<(Handle, String)> {
    let h = janus.attach("janus.plugin.streaming").await?;
    let mut body = json!({"request": "watch", "id": id});
    if let Some(p) = pin {
        body["pin"] = json!(p);
    }
    let asked = async {
        janus.send(h, body, None).await?;
        next_offer(janus, h, deadline).await
    };
    match asked.await {
        Ok(offer) => Ok((h, offer)),
        Err(e) => {
            let _ = janus.destroy(h.session).await;
            Err(e)
        }
    }
}

/// The SDP of the offer Janus sends after `watch`, or why there is none
/// (a wrong PIN, no such mountpoint, ...).
async fn next_offer(
    janus: &Janus,
    h: Handle,
    deadline: tokio::time::Instant,
) -> anyhow::Result<String> {
    loop {
        let events = tokio::time::timeout_at(deadline, janus.poll(h.session))
            .await
            .context("no offer from Janus in time")??;
        for ev in events {
            if ev["janus"] != "event" {
                debug!(event = %ev, "Janus");
                continue;
            }
            plugin_data(&ev)?;
            if let Some(sdp) = ev["jsep"]["sdp"].as_str() {
                return Ok(sdp.to_owned());
            }
        }
    }
}

/// Keeps the Janus session alive and watches its events: a hang-up or a
/// lost session ends the run.
async fn keep(janus: Janus, h: Handle, tx: mpsc::Sender<Event>) {
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = janus.keepalive(h.session).await {
                    let _ = tx.send(Event::Ended(format!("relay keepalive: {e}"))).await;
                    return;
                }
            }
            events = janus.poll(h.session) => match events {
                Ok(events) => {
                    if let Some(why) = events.iter().find_map(hang_up) {
                        let _ = tx.send(Event::Ended(why)).await;
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Event::Ended(format!("relay: {e}"))).await;
                    return;
                }
            }
        }
    }
}

fn hang_up(ev: &Value) -> Option<String> {
    match ev["janus"].as_str() {
        Some("hangup") => Some(format!(
            "the relay hung up: {}",
            ev["reason"].as_str().unwrap_or("no reason")
        )),
        Some("detached") => Some("the relay detached the viewer".into()),
        _ => None,
    }
}
