//! Sends the device's last DTLS handshake flight again when the viewer
//! repeats its own (RFC 6347 4.2.4), which webrtc-rs 0.21's DTLS server
//! does not do (docs/benchmarks.md, "Through two symmetric NATs and TURN").
//!
//! The device is the DTLS server (docs/design.md, pitfall 2). When a
//! datagram of its flight 4 (ServerHello ... ServerHelloDone) is lost, the
//! viewer retransmits its ClientHello. rtc-dtls's server takes that
//! duplicate as "handshake packets received": it cancels its own
//! retransmission timer and, the duplicate being no new flight, keeps
//! waiting without a timer. Only the viewer's next new flight would move it
//! on, and that needs the lost flight: the handshake stalls until the
//! viewer gives up. With `campeer view` (1 s retransmissions, like the
//! server's) the duplicate always arrived just before the server's own
//! timer: under 5 % loss per router one connection in four failed so.
//!
//! The client has the same gap: waiting for the server's flight 6, a
//! repeated flight 4 (the server's timer, its flight 5 lost) cancels its
//! timer and its flight 5 is never sent again. So both the device and
//! `campeer view` run this (browsers' DTLS stacks repeat by themselves).
//!
//! [`FlightResend`] (pure) remembers, per peer, the handshake message the
//! peer sent last and the device's handshake datagrams sent after it; a
//! repeat of that message gets those datagrams again. It looks at plain
//! DTLS records and at DTLS inside TURN ChannelData (a relayed path), and
//! only at epoch-0 handshake records: nothing after the handshake.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Peers remembered at once (one per viewer being connected).
const MAX_PEERS: usize = 8;
/// Datagrams and bytes of one flight kept (a flight 4 is a few datagrams,
/// ~1-2 KiB with the device's ECDSA certificate).
const MAX_DATAGRAMS: usize = 16;
const MAX_BYTES: usize = 16 * 1024;
/// Times one flight is sent again (rtc-dtls's own budget is 7).
const MAX_RESENDS: u8 = 7;
/// A handshake older than this is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(30);

/// Where DTLS sits in a datagram: the peer (address and, through a TURN
/// server, the channel) and the DTLS bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    addr: SocketAddr,
    channel: Option<u16>,
}

/// The first handshake message of a datagram: type and message_seq.
type MessageId = (u8, u16);

/// The DTLS payload of `datagram` (plain, or inside ChannelData) and its
/// channel number.
fn dtls_payload(datagram: &[u8]) -> Option<(Option<u16>, &[u8])> {
    match *datagram.first()? {
        20..=63 => Some((None, datagram)),
        // RFC 7983: 64-79 is TURN ChannelData (channels 0x4000-0x4FFF).
        64..=79 if datagram.len() >= 4 => {
            let channel = u16::from_be_bytes([datagram[0], datagram[1]]);
            let len = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
            let payload = datagram.get(4..4 + len)?;
            Some((Some(channel), payload))
        }
        _ => None,
    }
}

/// The first record's handshake message, when the datagram starts with
/// an epoch-0 handshake record (content type 22, DTLS 1.x, epoch 0).
fn handshake_message(dtls: &[u8]) -> Option<MessageId> {
    // Record header: type(1) version(2) epoch(2) seq(6) length(2); then the
    // handshake header: msg_type(1) length(3) message_seq(2) ...
    if dtls.len() < 13 + 6 || dtls[0] != 22 || dtls[1] != 0xfe || dtls[3..5] != [0, 0] {
        return None;
    }
    Some((dtls[13], u16::from_be_bytes([dtls[17], dtls[18]])))
}

/// Whether a datagram may carry a DTLS handshake record (cheap: the first
/// bytes only), so media skips the rest.
pub fn may_be_handshake(datagram: &[u8]) -> bool {
    match datagram.first() {
        Some(20 | 22) => true,
        Some(64..=79) => matches!(datagram.get(4), Some(20 | 22)),
        _ => false,
    }
}

fn classify(from: SocketAddr, datagram: &[u8]) -> Option<(Key, MessageId)> {
    let (channel, dtls) = dtls_payload(datagram)?;
    let id = handshake_message(dtls)?;
    Some((
        Key {
            addr: from,
            channel,
        },
        id,
    ))
}

struct Peer {
    key: Key,
    /// The peer's last handshake message.
    last_in: MessageId,
    /// The device's handshake datagrams sent since, as sent.
    out: Vec<Vec<u8>>,
    out_bytes: usize,
    resends: u8,
    at: Instant,
}

/// The device's last handshake flight per peer (see the module's text).
#[derive(Default)]
pub struct FlightResend {
    peers: VecDeque<Peer>,
}

impl FlightResend {
    /// A datagram arrived from `from`. Returns the datagrams to send back
    /// to `from` when it repeats the handshake message it sent last.
    pub fn inbound(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Vec<Vec<u8>> {
        self.peers
            .retain(|p| now.saturating_duration_since(p.at) < FORGET_AFTER);
        let Some((key, id)) = classify(from, datagram) else {
            return Vec::new();
        };
        if let Some(p) = self.peers.iter_mut().find(|p| p.key == key) {
            if p.last_in == id {
                if p.out.is_empty() || p.resends >= MAX_RESENDS {
                    return Vec::new();
                }
                p.resends += 1;
                return p.out.clone();
            }
            // A new flight: what the device sends next answers it.
            p.last_in = id;
            p.out.clear();
            p.out_bytes = 0;
            p.resends = 0;
            p.at = now;
            return Vec::new();
        }
        if self.peers.len() == MAX_PEERS {
            self.peers.pop_front();
        }
        self.peers.push_back(Peer {
            key,
            last_in: id,
            out: Vec::new(),
            out_bytes: 0,
            resends: 0,
            at: now,
        });
        Vec::new()
    }

    /// A datagram is going to `to`: a handshake datagram is kept as part
    /// of the answer to the peer's last flight.
    pub fn outbound(&mut self, to: SocketAddr, datagram: &[u8]) {
        // Any handshake record counts, and a ChangeCipherSpec: the server's
        // last flight (6) is a ChangeCipherSpec and an encrypted Finished.
        let Some((channel, dtls)) = dtls_payload(datagram) else {
            return;
        };
        if dtls.len() < 13 || !matches!(dtls[0], 20 | 22) || dtls[1] != 0xfe {
            return;
        }
        let key = Key { addr: to, channel };
        let Some(p) = self.peers.iter_mut().find(|p| p.key == key) else {
            return;
        };
        if p.out.len() < MAX_DATAGRAMS && p.out_bytes + datagram.len() <= MAX_BYTES {
            p.out_bytes += datagram.len();
            p.out.push(datagram.to_vec());
        }
    }

    /// How many peers are remembered (for tests).
    pub fn peers(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An epoch-0 handshake record of `msg_type` with `message_seq`,
    /// record sequence number `rec_seq`.
    fn record(msg_type: u8, message_seq: u16, rec_seq: u8) -> Vec<u8> {
        let mut r = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, rec_seq, 0, 12];
        r.extend([msg_type, 0, 0, 0]);
        r.extend(message_seq.to_be_bytes());
        r.extend([0, 0, 0, 0, 0, 0]);
        r
    }

    fn channel(number: u16, payload: &[u8]) -> Vec<u8> {
        let mut d = number.to_be_bytes().to_vec();
        d.extend((payload.len() as u16).to_be_bytes());
        d.extend(payload);
        d
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, 1], port))
    }

    const CLIENT_HELLO: u8 = 1;
    const SERVER_HELLO: u8 = 2;
    const CERTIFICATE: u8 = 11;

    #[test]
    fn a_repeated_client_hello_gets_the_last_flight_again() {
        let t0 = Instant::now();
        let mut f = FlightResend::default();
        let peer = addr(5000);
        assert!(f.inbound(t0, peer, &record(CLIENT_HELLO, 1, 1)).is_empty());
        let flight = [record(SERVER_HELLO, 1, 1), record(CERTIFICATE, 2, 2)];
        for d in &flight {
            f.outbound(peer, d);
        }
        // The same ClientHello again (a new record sequence number).
        let again = f.inbound(
            t0 + Duration::from_secs(1),
            peer,
            &record(CLIENT_HELLO, 1, 2),
        );
        assert_eq!(again, flight.to_vec());
        // The next flight (the client's Certificate, message_seq 2) is new.
        assert!(f.inbound(t0, peer, &record(CERTIFICATE, 2, 3)).is_empty());
        assert!(f.inbound(t0, peer, &record(CERTIFICATE, 2, 4)).is_empty());
    }

    #[test]
    fn the_servers_last_flight_is_repeated_too() {
        let t0 = Instant::now();
        let mut f = FlightResend::default();
        let peer = addr(5000);
        // The client's flight 5 starts with its Certificate (epoch 0).
        f.inbound(t0, peer, &record(CERTIFICATE, 2, 3));
        // Flight 6: ChangeCipherSpec, then an encrypted Finished (epoch 1).
        let mut flight6 = vec![20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 1];
        let mut finished = record(20, 6, 0);
        finished[4] = 1;
        flight6.extend(finished);
        f.outbound(peer, &flight6);
        // Application data afterwards is not part of it.
        f.outbound(peer, &[23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(
            f.inbound(t0, peer, &record(CERTIFICATE, 2, 9)),
            vec![flight6]
        );
    }

    #[test]
    fn relayed_flights_are_matched_by_channel() {
        let t0 = Instant::now();
        let mut f = FlightResend::default();
        let turn = addr(3478);
        f.inbound(t0, turn, &channel(0x4001, &record(CLIENT_HELLO, 1, 1)));
        f.inbound(t0, turn, &channel(0x4002, &record(CLIENT_HELLO, 1, 1)));
        let to_one = channel(0x4001, &record(SERVER_HELLO, 1, 1));
        f.outbound(turn, &to_one);
        assert_eq!(
            f.inbound(t0, turn, &channel(0x4001, &record(CLIENT_HELLO, 1, 2))),
            vec![to_one]
        );
        // The other viewer behind the same TURN server got nothing yet.
        assert!(f
            .inbound(t0, turn, &channel(0x4002, &record(CLIENT_HELLO, 1, 2)))
            .is_empty());
    }

    #[test]
    fn media_and_later_epochs_are_ignored() {
        let t0 = Instant::now();
        let mut f = FlightResend::default();
        let peer = addr(5000);
        let mut epoch1 = record(CLIENT_HELLO, 1, 1);
        epoch1[4] = 1;
        assert!(f.inbound(t0, peer, &epoch1).is_empty());
        assert!(f.inbound(t0, peer, &[0x80, 96, 0, 1]).is_empty()); // RTP
        assert!(f.inbound(t0, peer, &[23, 0xfe, 0xfd]).is_empty()); // short
        assert_eq!(f.peers(), 0);
        assert!(!may_be_handshake(&[0x80, 96]));
        assert!(may_be_handshake(&record(CLIENT_HELLO, 1, 1)));
        assert!(may_be_handshake(&channel(0x4000, &record(1, 1, 1))));
    }

    #[test]
    fn resends_and_memory_are_bounded() {
        let t0 = Instant::now();
        let mut f = FlightResend::default();
        let peer = addr(5000);
        f.inbound(t0, peer, &record(CLIENT_HELLO, 1, 1));
        for i in 0..40 {
            f.outbound(peer, &record(SERVER_HELLO, 1, i));
        }
        let again = f.inbound(t0, peer, &record(CLIENT_HELLO, 1, 2));
        assert_eq!(again.len(), MAX_DATAGRAMS);
        for _ in 1..MAX_RESENDS {
            assert!(!f.inbound(t0, peer, &record(CLIENT_HELLO, 1, 2)).is_empty());
        }
        assert!(f.inbound(t0, peer, &record(CLIENT_HELLO, 1, 2)).is_empty());
        for port in 0..20 {
            f.inbound(t0, addr(6000 + port), &record(CLIENT_HELLO, 1, 1));
        }
        assert_eq!(f.peers(), MAX_PEERS);
        // Forgotten after a while.
        f.inbound(t0 + FORGET_AFTER, peer, &[0x80]);
        assert_eq!(f.peers(), 0);
    }
}
