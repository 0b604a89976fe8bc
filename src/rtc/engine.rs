//! Builds peer connections: codecs, interceptors, ICE and DTLS settings,
//! and the one DTLS certificate the device uses for every session.

use crate::config::WebRtcConfig;
use crate::encode::pipeline::VideoCodec;
use crate::rtc::keyframe::{self, KeyframeRequestForwarder};
use crate::rtc::playout_delay::{self, PlayoutDelayZero};
use crate::signaling::ice_servers::IceServerSource;
use crate::signaling::messages::IceServerEntry;
use rtc::interceptor::Slot;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use std::sync::Arc;
use std::time::Duration;
use webrtc::peer_connection::{
    register_default_interceptors, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceServer, Registry,
    SettingEngineBuilder,
};

/// Errors setting up WebRTC.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot generate the DTLS certificate: {0}")]
    Certificate(String),
    #[error("cannot build a peer connection: {0}")]
    Build(String),
}

/// H.264 constrained baseline, as docs/protocol.md requires.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// The same profile under the prefix some offers use (docs/design.md, pitfall 4).
pub const H264_FMTP_ALT: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f";

/// The video codec the device sends.
pub fn h264_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.to_owned(),
        rtcp_feedback: video_feedback(),
    }
}

/// H.264 with a given profile-level-id: for a passthrough source, whose
/// stream is what it is (`encode::passthrough`).
pub fn h264_codec_with_profile(profile_level_id: &str) -> RTCRtpCodec {
    RTCRtpCodec {
        sdp_fmtp_line: format!(
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile_level_id}"
        ),
        ..h264_codec()
    }
}

/// The video codec the device sends to browsers without H.264.
pub fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: video_feedback(),
    }
}

/// Payload type the device registers VP8 under (the answer follows the
/// offer's own numbering).
pub const VP8_PAYLOAD_TYPE: u8 = 96;

/// The audio codec the device sends.
pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn video_feedback() -> Vec<RTCPFeedback> {
    [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback {
            typ: typ.to_owned(),
            parameter: parameter.to_owned(),
        })
        .collect()
}

/// Registers the codecs the device can send (or, for the viewer client,
/// receive); `only` limits video to one codec (the viewer's `--codec vp8`).
pub fn media_engine(only: Option<VideoCodec>) -> Result<MediaEngine, EngineError> {
    media_engine_with(only, None)
}

/// Like [`media_engine`]; `passthrough`, if given, is the only video codec
/// registered: a passthrough source's H.264 profile, which can be neither
/// re-encoded as another profile nor as VP8.
pub fn media_engine_with(
    only: Option<VideoCodec>,
    passthrough: Option<RTCRtpCodec>,
) -> Result<MediaEngine, EngineError> {
    let mut me = MediaEngine::default();
    let mut alt = h264_codec();
    alt.sdp_fmtp_line = H264_FMTP_ALT.to_owned();
    // H.264 first: preferred whenever an offer has both.
    let video = match passthrough {
        Some(v) => vec![(VideoCodec::H264, 102u8, v)],
        None => vec![
            (VideoCodec::H264, 102u8, h264_codec()),
            (VideoCodec::H264, 104u8, alt),
            (VideoCodec::Vp8, VP8_PAYLOAD_TYPE, vp8_codec()),
        ],
    };
    for (_, pt, codec) in video
        .into_iter()
        .filter(|(c, _, _)| only.is_none_or(|o| o == *c))
    {
        me.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec,
                payload_type: pt,
            },
            RtpCodecKind::Video,
        )
        .map_err(|e| EngineError::Build(e.to_string()))?;
    }
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus_codec(),
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )
    .map_err(|e| EngineError::Build(e.to_string()))?;
    Ok(me)
}

/// Registers the playout-delay extension for video: an answer carries it
/// only when the offer has it (`rtc::playout_delay`).
pub fn register_playout_delay(me: &mut MediaEngine) -> Result<(), EngineError> {
    me.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: playout_delay::URI.to_owned(),
        },
        RtpCodecKind::Video,
        None,
    )
    .map_err(|e| EngineError::Build(e.to_string()))
}

/// How long a controlling agent waits before nominating a relay pair that
/// works (webrtc-rs's default: 2 s, all of it added to time to first frame
/// through TURN).
pub const RELAY_ACCEPTANCE_WAIT: Duration = Duration::from_millis(100);

/// Which side of the negotiation this engine builds connections for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The device: answers offers, is the DTLS server.
    Answerer,
    /// The viewer client: offers.
    Offerer,
}

/// The configured `webrtc.ice_servers`, as handed to browsers.
pub fn static_servers(cfg: &WebRtcConfig) -> Vec<IceServerEntry> {
    cfg.ice_servers
        .iter()
        .map(|s| IceServerEntry {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
        })
        .collect()
}

/// Shared, start-up-time WebRTC state.
pub struct RtcEngine {
    cfg: WebRtcConfig,
    /// The ICE servers of every connection: the configured ones, and TURN
    /// credentials minted per connection when `webrtc.turn_rest` is set.
    ice: IceServerSource,
    certificate: RTCCertificate,
    role: Role,
    only_video: Option<VideoCodec>,
}

impl RtcEngine {
    /// Generates the certificate (once) and keeps the settings.
    pub fn new(cfg: &WebRtcConfig, role: Role) -> Result<RtcEngine, EngineError> {
        let provider =
            rtc::crypto::default_provider().map_err(|e| EngineError::Certificate(e.to_string()))?;
        let params = CertificateParams::new(vec!["campeer".to_owned()])
            .map_err(|e| EngineError::Certificate(e.to_string()))?;
        let certificate = RTCCertificate::generate(
            provider.crypto(),
            rtc::crypto::SignatureScheme::EcdsaP256Sha256,
            params,
        )
        .map_err(|e| EngineError::Certificate(e.to_string()))?;
        Ok(RtcEngine {
            ice: IceServerSource::new(static_servers(cfg), None),
            cfg: cfg.clone(),
            certificate,
            role,
            only_video: None,
        })
    }

    /// ICE servers from `source` (static ones and minted TURN credentials)
    /// instead of the configured static ones alone.
    pub fn with_ice_source(mut self, source: IceServerSource) -> Self {
        self.ice = source;
        self
    }

    /// Offers or accepts only `codec` for video (the viewer's `--codec`).
    pub fn with_only_video_codec(mut self, codec: Option<VideoCodec>) -> Self {
        self.only_video = codec;
        self
    }

    /// Whether a TURN server is configured (relay candidates possible).
    fn has_turn(&self) -> bool {
        self.cfg
            .ice_servers
            .iter()
            .flat_map(|s| &s.urls)
            .any(|u| u.starts_with("turn:") || u.starts_with("turns:"))
    }

    /// Builds one peer connection that reports its events to `handler`.
    pub async fn build(
        &self,
        handler: Arc<dyn PeerConnectionEventHandler>,
    ) -> Result<Arc<dyn PeerConnection>, EngineError> {
        self.build_with(handler, None).await
    }

    /// Like `build`, with `video` as the only video codec (see
    /// [`media_engine_with`]).
    pub async fn build_with(
        &self,
        handler: Arc<dyn PeerConnectionEventHandler>,
        video: Option<RTCRtpCodec>,
    ) -> Result<Arc<dyn PeerConnection>, EngineError> {
        let build_err = |e: webrtc::error::Error| EngineError::Build(e.to_string());
        let mut me = media_engine_with(self.only_video, video)?;
        let mut registry = register_default_interceptors(Registry::new(), &mut me)
            .map_err(build_err)?
            .with(
                Slot::from(keyframe::SLOT),
                KeyframeRequestForwarder::default(),
            );
        if self.role == Role::Answerer {
            // Render on arrival where the viewer offers it (Chromium does).
            register_playout_delay(&mut me)?;
            registry = registry.with(Slot::from(playout_delay::SLOT), PlayoutDelayZero::default());
        }

        // Minted now, so a connection made at any time has fresh TURN
        // credentials that outlive it (webrtc.turn_rest.lifetime_secs).
        let (servers, _) = self.ice.mint("device", crate::clock::unix_secs());
        let ice_servers = servers
            .into_iter()
            .map(|s| RTCIceServer {
                urls: s.urls,
                username: s.username.unwrap_or_default(),
                credential: s.credential.unwrap_or_default(),
            })
            .collect();
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(ice_servers)
            .with_certificates(vec![self.certificate.clone()])
            .build();

        let disconnected = Duration::from_secs(self.cfg.disconnected_timeout_secs.max(1));
        let mut settings = SettingEngineBuilder::new()
            // mDNS would bind UDP 5353 per connection (docs/design.md, pitfall 7).
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_include_loopback_candidate(self.cfg.include_loopback)
            .with_ice_timeouts(
                Some(disconnected),
                Some(disconnected * 2),
                Some(Duration::from_secs(2)),
            )
            .with_ice_connection_attempts(Some(Duration::from_millis(20)), Some(70))
            // A peer's check that arrives before its trickled candidate makes
            // the pair peer-reflexive, and the controlling side would wait 1 s
            // before nominating it: the first-frame tail (pitfall 13).
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            // The controlling side (the viewer client) would wait 2 s before
            // nominating a working relay pair, hoping for a better one; a
            // direct pair to a reachable peer succeeds within this anyway.
            .with_relay_acceptance_min_wait(Some(RELAY_ACCEPTANCE_WAIT));
        if self.role == Role::Answerer {
            // The device as DTLS server: browsers send their ClientHello at once (pitfall 2).
            settings = settings.with_answering_dtls_role(RTCDtlsRole::Server);
        }

        // Browsers' first (nominating) check answered at once (pitfall 16);
        // a repeated DTLS flight answered with ours (`rtc::dtls_resend`);
        // relayed packets sent when written (`rtc::relay_flush`).
        let runtime =
            super::nomination::DeviceRuntime::new(self.role == Role::Answerer, self.has_turn());
        let builder = PeerConnectionBuilder::new().with_runtime(Arc::new(runtime));
        let pc = builder
            .with_configuration(config)
            .with_media_engine(me)
            .with_setting_engine(settings.build())
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_udp_addrs(self.cfg.udp_bind.clone())
            .build()
            .await
            .map_err(build_err)?;
        Ok(Arc::new(pc))
    }
}

/// The selected candidate pair's types, `local/remote` (`host`, `srflx`,
/// `prflx`, `relay`), or `None` before ICE has selected one: what a log
/// line or a report says about the path a session took.
pub async fn selected_pair(pc: &Arc<dyn PeerConnection>) -> Option<String> {
    use rtc::statistics::report::RTCStatsReportEntry as Entry;
    let stats = pc
        .get_stats(
            std::time::Instant::now(),
            rtc::statistics::StatsSelector::None,
        )
        .await;
    let pair_id = &stats.transport()?.selected_candidate_pair_id;
    let Some(Entry::IceCandidatePair(pair)) = stats.get(pair_id) else {
        return None;
    };
    // The pair names its candidates by their bare ids; the report keys them
    // with a prefix. A peer-reflexive remote candidate has no entry ("?").
    let kind = |prefix: &str, id: &str| match stats
        .get(id)
        .or_else(|| stats.get(&format!("{prefix}{id}")))
    {
        Some(Entry::LocalCandidate(c) | Entry::RemoteCandidate(c)) => c.candidate_type.to_string(),
        _ => "?".to_owned(),
    };
    Some(format!(
        "{}/{}",
        kind("RTCLocalIceCandidate_", &pair.local_candidate_id),
        kind("RTCRemoteIceCandidate_", &pair.remote_candidate_id)
    ))
}
