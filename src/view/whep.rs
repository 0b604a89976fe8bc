//! `campeer view --whep URL`: the same receiver and report as the MQTT
//! viewer, signaled over WHEP instead. The offer goes out whole (its
//! candidates gathered first: no trickle), the answer comes back in the
//! `201`, and the resource is `DELETE`d at the end. Plain `http://` only.

use super::report::ViewReport;
use super::{local_sdp_gathered, receive, strip_line_end, viewer_pc};
use crate::cli::ViewArgs;
use crate::encode::pipeline::VideoCodec;
use crate::http_client::Exchange;
use anyhow::Context;
use hyper::{Method, StatusCode};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use webrtc::peer_connection::PeerConnection;

/// Longest answer read, bytes.
const MAX_ANSWER: usize = 64 * 1024;
/// How long local candidate gathering may take before the offer goes out.
const GATHER_WAIT: Duration = Duration::from_secs(3);

/// The bearer token (`campeer keys token add`), if any was given. A key's
/// secret is no WHEP credential: WHEP takes tokens of its own.
fn token(args: &ViewArgs) -> anyhow::Result<Option<String>> {
    if let Some(file) = &args.token_file {
        let bytes = std::fs::read(file)
            .with_context(|| format!("reading the token file {}", file.display()))?;
        let text = String::from_utf8_lossy(strip_line_end(&bytes))
            .trim()
            .to_owned();
        return Ok(Some(text));
    }
    if args.secret_file.is_some() {
        anyhow::bail!(
            "WHEP takes a token of its own, not a key's secret: make one with \
             `campeer keys token add NAME` and pass it with --token-file"
        );
    }
    Ok(None)
}

/// One WHEP exchange: status, headers, body.
async fn exchange(
    url: &url::Url,
    method: Method,
    token: Option<&str>,
    content_type: Option<&str>,
    body: String,
) -> anyhow::Result<(StatusCode, hyper::HeaderMap, String)> {
    let resp = Exchange {
        bearer: token,
        content_type,
        body,
        max_body: MAX_ANSWER,
        ..Exchange::new(method, url)
    }
    .send()
    .await?;
    Ok((resp.status, resp.headers, resp.body))
}

/// The whole WHEP viewer session.
pub async fn view(args: &ViewArgs, url: &str) -> anyhow::Result<ViewReport> {
    let url = url::Url::parse(url).context("--whep")?;
    let token = token(args)?;
    let mut report = ViewReport::new("");
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    // WHEP offers H.264 (the device's preferred codec).
    let mut v = viewer_pc(args, started, VideoCodec::H264, Vec::new()).await?;
    let pc = v.pc.clone();
    let kinds: &[(RtpCodecKind, bool)] = &[
        (RtpCodecKind::Video, !args.no_video),
        (RtpCodecKind::Audio, !args.no_audio),
    ];
    for (kind, wanted) in kinds {
        if *wanted {
            super::add_recvonly(&pc, *kind).await?;
        }
    }
    // A control channel only when calls are asked for: a WHEP session is
    // view-only, so this is how a test shows that it cannot drive outputs.
    let calls = super::control::parse_calls(&args.call)?;
    report.calls = calls.clone();
    if !calls.is_empty() && !args.no_data {
        super::open_control(&pc, args, &calls, &v.tx).await?;
    }
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    // Non-trickle: gather, then put the candidates into the offer.
    let offer_sdp = local_sdp_gathered(&mut v, GATHER_WAIT).await?;

    let offer_at = Instant::now();
    let (status, headers, body) = exchange(
        &url,
        Method::POST,
        token.as_deref(),
        Some("application/sdp"),
        offer_sdp,
    )
    .await?;
    report.http_status = Some(status.as_u16());
    if status != StatusCode::CREATED {
        report.error = Some(format!("POST {url}: HTTP {status}: {}", body.trim()));
        let _ = pc.close().await;
        return Ok(report);
    }
    report.answer_ms = Some(offer_at.elapsed().as_secs_f64() * 1e3);
    let location = headers
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let resource = match &location {
        Some(l) => Some(url.join(l).context("the Location header")?),
        None => {
            warn!("the 201 has no Location: the session cannot be ended with DELETE");
            None
        }
    };
    report.sid = location.unwrap_or_default();
    report.set_answer(&body);
    pc.set_remote_description(RTCSessionDescription::answer(body)?)
        .await?;
    receive(args, &mut v, &mut report, offer_at, deadline).await;
    if let Some(r) = resource {
        match exchange(&r, Method::DELETE, token.as_deref(), None, String::new()).await {
            Ok((s, _, _)) if s.is_success() => debug!("WHEP resource deleted"),
            Ok((s, _, b)) => warn!("DELETE {r}: HTTP {s}: {}", b.trim()),
            Err(e) => warn!("DELETE {r}: {e}"),
        }
    }
    close(&pc).await;
    Ok(report)
}

async fn close(pc: &Arc<dyn PeerConnection>) {
    if let Err(e) = pc.close().await {
        debug!("close: {e}");
    }
}
