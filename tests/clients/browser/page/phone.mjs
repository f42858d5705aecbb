// The in-page side of the browser call test: one "phone" per page, on JsSIP (window.JsSIP, from the
// bundle at /jssip.js) or SIP.js (ES modules from /sipjs/). The Node test drives it through
// `window.phone` with page.evaluate; every wait here is bounded and names what it waited for.

import * as SIP from '/sipjs/index.js';

const MEDIA = { audio: true, video: true };
const PC_CONFIG = { iceServers: [] }; // no STUN: nothing outside is reachable, and loopback needs none

const events = [];
const waiters = [];
const remoteStream = new MediaStream();
const attachedPcs = new WeakSet();
let pcSeen = null;

function log(line) {
  const el = document.getElementById('log');
  if (el) el.textContent += `${line}\n`;
  console.log(`[phone] ${line}`);
}

function emit(name, detail) {
  events.push({ name, at: performance.now(), detail });
  log(detail === undefined ? name : `${name} ${JSON.stringify(detail)}`);
  for (const w of [...waiters]) {
    if (w.names.includes(name)) w.settle({ name, detail });
  }
}

/** Resolve on the first of `names` (already happened counts), or reject after `ms`. */
function waitFor(names, ms) {
  names = [].concat(names);
  const seen = events.find((e) => names.includes(e.name));
  if (seen) return Promise.resolve({ name: seen.name, detail: seen.detail });
  return new Promise((resolve, reject) => {
    const w = {
      names,
      settle: (v) => {
        clearTimeout(w.timer);
        waiters.splice(waiters.indexOf(w), 1);
        resolve(v);
      },
    };
    w.timer = setTimeout(() => {
      waiters.splice(waiters.indexOf(w), 1);
      reject(new Error(`page: timed out after ${ms} ms waiting for ${names.join('|')} (events so far: ${events.map((e) => e.name).join(', ') || 'none'})`));
    }, ms);
    waiters.push(w);
  });
}

function attachPc(pc) {
  if (!pc || attachedPcs.has(pc)) return;
  attachedPcs.add(pc);
  pcSeen = pc;
  const add = (track) => {
    if (!remoteStream.getTracks().includes(track)) {
      remoteStream.addTrack(track);
      emit('remote-track', { kind: track.kind });
    }
    const v = document.getElementById('remote');
    if (v.srcObject !== remoteStream) {
      v.srcObject = remoteStream;
      v.play().catch(() => {});
    }
  };
  // Tracks may have arrived before we got hold of the peer connection.
  for (const r of pc.getReceivers()) if (r.track) add(r.track);
  pc.addEventListener('track', (e) => add(e.track));
  pc.addEventListener('iceconnectionstatechange', () => emit(`ice-${pc.iceConnectionState}`));
}

class JsSipPhone {
  constructor() {
    if (!window.JsSIP) throw new Error('JsSIP bundle not loaded');
    this.autoAnswer = false;
    this.session = null;
  }

  start({ wsUrl, uri, password, label }) {
    const socket = new window.JsSIP.WebSocketInterface(wsUrl);
    const ua = new window.JsSIP.UA({
      sockets: [socket],
      uri,
      password,
      register: true,
      session_timers: false,
      user_agent: `huddle-client-tests JsSIP/${window.JsSIP.version} browser (${label})`,
      connection_recovery_min_interval: 2,
      connection_recovery_max_interval: 4,
    });
    this.ua = ua;
    ua.on('connected', () => emit('ws-connected'));
    ua.on('disconnected', (e) => emit('ws-disconnected', { code: e.code, reason: e.reason }));
    ua.on('registered', () => emit('registered'));
    ua.on('unregistered', () => emit('unregistered'));
    ua.on('registrationFailed', (e) => emit('registration-failed', { cause: e.cause, status: e.response?.status_code }));
    ua.on('newRTCSession', ({ session, originator }) => {
      this.session = session;
      this.wire(session);
      if (originator === 'remote') {
        emit('incoming', { from: session.remote_identity.uri.toString() });
        if (this.autoAnswer) session.answer({ mediaConstraints: MEDIA, pcConfig: PC_CONFIG });
      }
    });
    ua.start();
  }

  wire(session) {
    if (session.connection) attachPc(session.connection);
    session.on('peerconnection', (e) => attachPc(e.peerconnection));
    session.on('confirmed', () => {
      attachPc(session.connection);
      emit('established');
    });
    session.on('ended', (e) => emit('ended', { originator: e.originator, cause: e.cause }));
    session.on('failed', (e) => emit('failed', { originator: e.originator, cause: e.cause, status: e.message?.status_code }));
  }

  call(target) {
    this.session = this.ua.call(target, { mediaConstraints: MEDIA, pcConfig: PC_CONFIG });
    if (this.session.connection) attachPc(this.session.connection);
  }

  pc() {
    return this.session?.connection ?? pcSeen;
  }

  hangup() {
    this.session.terminate();
  }

  /** Hold (re-INVITE with a=sendonly) or resume; resolves when the re-INVITE got its 2xx. */
  setHold(on) {
    return new Promise((resolve, reject) => {
      const s = this.session;
      const what = on ? 'hold' : 'unhold';
      const timer = setTimeout(() => reject(new Error(`page: JsSIP ${what}: no 2xx within 15 s`)), 15000);
      const failed = (e) => {
        clearTimeout(timer);
        reject(new Error(`page: JsSIP ${what} failed: ${e?.cause ?? e}`));
      };
      s.once('failed', failed);
      const ok = (on ? s.hold : s.unhold).call(s, {}, () => {
        clearTimeout(timer);
        s.off('failed', failed);
        resolve();
      });
      if (!ok) failed(`JsSIP refused ${what}() in its current state`);
    });
  }

  stop() {
    this.ua.stop();
  }
}

class SipJsPhone {
  constructor() {
    this.autoAnswer = false;
    this.session = null;
  }

  async start({ wsUrl, uri, user, password, label }) {
    const ua = new SIP.UserAgent({
      uri: SIP.UserAgent.makeURI(uri),
      authorizationUsername: user,
      authorizationPassword: password,
      transportOptions: { server: wsUrl, connectionTimeout: 5 },
      logLevel: 'warn',
      userAgentString: `huddle-client-tests SIP.js/${SIP.version} browser (${label})`,
      sessionDescriptionHandlerFactoryOptions: { peerConnectionConfiguration: PC_CONFIG, iceGatheringTimeout: 3000 },
      delegate: {
        onInvite: (invitation) => {
          this.session = invitation;
          this.wire(invitation);
          emit('incoming', { from: invitation.remoteIdentity.uri.toString() });
          if (this.autoAnswer) {
            invitation
              .accept({ sessionDescriptionHandlerOptions: { constraints: MEDIA } })
              .catch((e) => emit('failed', { cause: `accept: ${e.message}` }));
          }
        },
      },
    });
    this.ua = ua;
    ua.transport.onDisconnect = ((orig) => (error) => {
      emit('ws-disconnected', { error: error?.message });
      orig?.(error);
    })(ua.transport.onDisconnect);
    await ua.start();
    this.registerer = new SIP.Registerer(ua, { expires: 600 });
    this.registerer.stateChange.addListener((s) => {
      if (s === SIP.RegistererState.Registered) emit('registered');
      if (s === SIP.RegistererState.Unregistered) emit('unregistered');
    });
    await this.registerer.register({
      requestDelegate: {
        onReject: (r) => emit('registration-failed', { status: r.message.statusCode }),
      },
    });
  }

  wire(session) {
    session.delegate = {
      onSessionDescriptionHandler: (sdh) => attachPc(sdh.peerConnection),
    };
    session.stateChange.addListener((state) => {
      if (state === SIP.SessionState.Established) {
        attachPc(session.sessionDescriptionHandler?.peerConnection);
        emit('established');
      }
      if (state === SIP.SessionState.Terminated) emit('ended', { state });
    });
  }

  async call(target) {
    const inviter = new SIP.Inviter(this.ua, SIP.UserAgent.makeURI(target), {
      sessionDescriptionHandlerOptions: { constraints: MEDIA },
    });
    this.session = inviter;
    this.wire(inviter);
    await inviter.invite({
      requestDelegate: {
        onReject: (r) => emit('failed', { status: r.message.statusCode, reason: r.message.reasonPhrase }),
      },
    });
  }

  pc() {
    return this.session?.sessionDescriptionHandler?.peerConnection ?? pcSeen;
  }

  /** Hold (re-INVITE with a=sendonly) or resume; resolves when the re-INVITE got its 2xx. */
  setHold(on) {
    const s = this.session;
    s.sessionDescriptionHandlerOptionsReInvite = { hold: on };
    return new Promise((resolve, reject) => {
      s.invite({
        requestDelegate: {
          onAccept: () => resolve(),
          onReject: (r) => reject(new Error(`page: SIP.js re-INVITE (hold=${on}) rejected: ${r.message.statusCode}`)),
        },
      }).catch((e) => reject(new Error(`page: SIP.js re-INVITE (hold=${on}): ${e.message}`)));
    });
  }

  async hangup() {
    const s = this.session;
    if (s.state === SIP.SessionState.Established) await s.bye();
    else if (s instanceof SIP.Inviter) await s.cancel();
    else await s.reject();
  }

  async stop() {
    await this.ua.stop();
  }
}

let impl = null;

// With ?trace=1 (HUDDLE_TRACE_SIP=1 in the test), log every SIP frame the page sends and receives.
if (new URLSearchParams(location.search).get('trace') === '1') {
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => {
        const text = typeof e.data === 'string' ? e.data : new TextDecoder().decode(e.data);
        console.log(`[sip] <<< received (${typeof e.data === 'string' ? 'text' : 'binary'} frame)\n${text}`);
      });
    }

    send(data) {
      console.log(`[sip] >>> sent\n${data}`);
      super.send(data);
    }
  };
}

window.phone = {
  libs() {
    return { jssip: window.JsSIP?.version ?? null, sipjs: typeof SIP.UserAgent === 'function' ? SIP.UserAgent.name : null };
  },

  /** getUserMedia with the fake devices: what tracks do we get? */
  async probeMedia() {
    const stream = await navigator.mediaDevices.getUserMedia(MEDIA);
    const tracks = stream.getTracks().map((t) => ({ kind: t.kind, label: t.label, settings: t.getSettings() }));
    stream.getTracks().forEach((t) => t.stop());
    return tracks;
  },

  async start(opts, ms) {
    impl = opts.lib === 'sipjs' ? new SipJsPhone() : new JsSipPhone();
    impl.autoAnswer = !!opts.autoAnswer;
    const registered = waitFor(['registered', 'registration-failed', 'ws-disconnected'], ms);
    await impl.start(opts);
    const r = await registered;
    if (r.name !== 'registered') throw new Error(`page: registration failed: ${r.name} ${JSON.stringify(r.detail)}`);
    return r;
  },

  async call(target) {
    await impl.call(target);
  },

  /** Wait for one of `names`; with `failOn`, reject if one of those comes first. */
  async waitFor(names, ms, failOn = []) {
    const r = await waitFor([].concat(names, failOn), ms);
    if (failOn.includes(r.name)) throw new Error(`page: got '${r.name}' ${JSON.stringify(r.detail)} while waiting for ${[].concat(names).join('|')}`);
    return r;
  },

  events() {
    return events.map((e) => e.name);
  },

  async stats() {
    const pc = impl?.pc();
    if (!pc) return null;
    const report = await pc.getStats();
    const out = { audio: null, video: null, pair: null, iceConnectionState: pc.iceConnectionState };
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && (s.kind === 'audio' || s.kind === 'video')) {
        const codec = byId.get(s.codecId)?.mimeType;
        out[s.kind] = {
          packetsReceived: s.packetsReceived ?? 0,
          bytesReceived: s.bytesReceived ?? 0,
          ...(s.kind === 'video'
            ? {
                framesDecoded: s.framesDecoded ?? 0,
                frameWidth: s.frameWidth,
                frameHeight: s.frameHeight,
                framesReceived: s.framesReceived,
                framesDropped: s.framesDropped,
                keyFramesDecoded: s.keyFramesDecoded,
                nackCount: s.nackCount,
                retransmittedPacketsReceived: s.retransmittedPacketsReceived,
                pliCount: s.pliCount,
                firCount: s.firCount,
                packetsLost: s.packetsLost,
              }
            : { totalAudioEnergy: s.totalAudioEnergy, audioLevel: s.audioLevel }),
          codec,
        };
      }
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        const l = byId.get(s.localCandidateId);
        const r = byId.get(s.remoteCandidateId);
        out.pair = `${l?.address}:${l?.port}/${l?.protocol} <-> ${r?.address}:${r?.port}/${r?.protocol}`;
        // The sender's bandwidth estimate (transport-wide congestion control on the server's feedback).
        out.availableOutgoingBitrate = s.availableOutgoingBitrate;
      }
    });
    const v = document.getElementById('remote');
    out.remoteVideo = { width: v.videoWidth, height: v.videoHeight, currentTime: v.currentTime };
    return out;
  },

  async hangup() {
    await impl.hangup();
  },

  async setHold(on) {
    await impl.setHold(on);
  },

  /** The negotiated direction of each transceiver (what the last offer/answer settled). */
  directions() {
    const pc = impl?.pc();
    return pc ? pc.getTransceivers().map((t) => ({ mid: t.mid, kind: t.receiver.track?.kind, direction: t.currentDirection })) : [];
  },

  /** Drops the media without any signalling, as a browser whose network vanished would. */
  dropMedia() {
    impl?.pc()?.close();
  },

  async stop(ms) {
    if (!impl) return;
    const wasRegistered = events.some((e) => e.name === 'registered');
    await impl.stop();
    if (wasRegistered) await waitFor(['unregistered'], ms).catch(() => {});
  },
};

window.phoneReady = true;
