// Stand-ins for the browser's WebRTC objects: just what a Session touches
// before and as the device answers. Shared by the unit tests.

/** A receiver's track: a kind, an id, and stop(). */
function track(kind) {
  return { kind, id: `${kind}-receiver`, stop() {} };
}

export class FakePeer {
  addTransceiver(kind) {
    return { setCodecPreferences() {}, receiver: { track: track(kind) } };
  }
  createDataChannel() {
    return { addEventListener() {} };
  }
  addEventListener() {}
  async createOffer() {
    return { type: "offer", sdp: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n" };
  }
  async setLocalDescription() {}
  async setRemoteDescription() {}
  async addIceCandidate() {}
  close() {}
}

export class FakeMediaStream {
  tracks = [];
  addTrack(t) {
    this.tracks.push(t);
  }
  getTracks() {
    return this.tracks;
  }
}

/** Puts the fakes where the page's code looks for the real ones. */
export function installFakes() {
  globalThis.RTCPeerConnection ??= FakePeer;
  globalThis.MediaStream ??= FakeMediaStream;
}
