// In-page screen-share lines for tests/clients/browser/screenshare.test.mjs, injected into the test
// phone page (which has already loaded the JsSIP bundle as window.JsSIP) with page.addScriptTag.
// A line is a second JsSIP user agent in the same page (not registered: calls need no registration,
// the INVITE is challenged and answered with the user's password), so the page's phone stays in the
// room while the line presents or watches the room's screen URI.
//
//   window.ScreenLine: new ScreenLine(label); await line.start({ wsUrl, uri, password });
//   line.present(target)  getDisplayMedia (the fake screen) → a video-only INVITE (sendrecv, as
//                         JsSIP offers a local track)
//   line.presentCanvas(target, { width, height, color })  the same with a painted canvas instead
//   line.view(target)     a video-only INVITE with a recvonly transceiver and no local media
//   line.waitFor(names, ms, failOn), line.stats(), line.hangup(), line.stop()

(() => {
  const PC_CONFIG = { iceServers: [] };

  class ScreenLine {
    constructor(label) {
      this.label = label;
      this.events = [];
      this.waiters = [];
      this.session = null;
    }

    log(line) {
      console.log(`[phone] ${this.label}: ${line}`);
    }

    emit(name, detail) {
      this.events.push({ name, detail });
      this.log(detail === undefined ? name : `${name} ${JSON.stringify(detail)}`);
      for (const w of [...this.waiters]) if (w.names.includes(name)) w.settle({ name, detail });
    }

    /** Resolves on the first of `names` (past events count); rejects on `failOn` or after `ms`. */
    waitFor(names, ms, failOn = []) {
      names = [].concat(names);
      const all = names.concat(failOn);
      const check = (r) => {
        if (failOn.includes(r.name)) throw new Error(`page: ${this.label}: got '${r.name}' ${JSON.stringify(r.detail)} while waiting for ${names.join('|')}`);
        return r;
      };
      const seen = this.events.find((e) => all.includes(e.name));
      if (seen) return Promise.resolve(seen).then(check);
      return new Promise((resolve, reject) => {
        const w = {
          names: all,
          settle: (v) => {
            clearTimeout(w.timer);
            this.waiters.splice(this.waiters.indexOf(w), 1);
            resolve(v);
          },
        };
        w.timer = setTimeout(() => {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          reject(new Error(`page: ${this.label}: timed out after ${ms} ms waiting for ${names.join('|')} (events: ${this.events.map((e) => e.name).join(', ') || 'none'})`));
        }, ms);
        this.waiters.push(w);
      }).then(check);
    }

    start({ wsUrl, uri, password }, ms) {
      const socket = new window.JsSIP.WebSocketInterface(wsUrl);
      this.ua = new window.JsSIP.UA({
        sockets: [socket],
        uri,
        password,
        register: false,
        session_timers: false,
        user_agent: `huddle-client-tests JsSIP/${window.JsSIP.version} screen line (${this.label})`,
      });
      this.ua.on('connected', () => this.emit('ws-connected'));
      this.ua.on('disconnected', () => this.emit('ws-disconnected'));
      this.ua.start();
      return this.waitFor('ws-connected', ms, ['ws-disconnected']);
    }

    call(target, options) {
      const session = this.ua.call(target, { pcConfig: PC_CONFIG, ...options });
      this.session = session;
      session.on('confirmed', () => this.emit('established'));
      session.on('ended', (e) => this.emit('ended', { originator: e.originator, cause: e.cause }));
      session.on('failed', (e) =>
        this.emit('failed', { originator: e.originator, cause: e.cause, status: e.message?.status_code, reason: e.message?.reason_phrase }),
      );
    }

    async present(target) {
      const stream = await navigator.mediaDevices.getDisplayMedia({ video: true });
      const track = stream.getVideoTracks()[0];
      this.shared = track.getSettings();
      this.log(`sharing ${track.label} ${this.shared.width}x${this.shared.height}`);
      this.call(target, { mediaStream: stream });
      return this.shared;
    }

    /**
     * Presents a canvas of `width`x`height` filled with `color` and a moving bar, captured at
     * 15 fps: a screen that is told apart from Chromium's fake one by its size.
     */
    presentCanvas(target, { width, height, color }) {
      const canvas = document.createElement('canvas');
      canvas.width = width;
      canvas.height = height;
      const g = canvas.getContext('2d');
      let x = 0;
      const draw = () => {
        g.fillStyle = color;
        g.fillRect(0, 0, width, height);
        g.fillStyle = '#ffffff';
        g.fillRect(x, 0, width / 10, height);
        x = (x + 8) % width;
      };
      draw();
      // Frames come only when the canvas changes; a timer keeps them coming in a hidden tab.
      this.painter = setInterval(draw, 66);
      const stream = canvas.captureStream(15);
      const track = stream.getVideoTracks()[0];
      track.contentHint = 'detail';
      this.shared = { width, height };
      this.log(`sharing a ${width}x${height} ${color} canvas`);
      this.call(target, { mediaStream: stream });
      return this.shared;
    }

    view(target) {
      this.call(target, {
        mediaConstraints: { audio: false, video: false },
        eventHandlers: {
          // Before JsSIP creates the offer: one video m-line, receive only.
          peerconnection: (e) => e.peerconnection.addTransceiver('video', { direction: 'recvonly' }),
        },
      });
    }

    /** The line's video: inbound (a viewer) and outbound (a presenter) RTP stats, and the SDP direction. */
    async stats() {
      const pc = this.session?.connection;
      if (!pc) return null;
      const report = await pc.getStats();
      const out = { inbound: null, outbound: null, ice: pc.iceConnectionState };
      report.forEach((s) => {
        if (s.kind !== 'video') return;
        if (s.type === 'inbound-rtp') {
          out.inbound = {
            packetsReceived: s.packetsReceived ?? 0,
            packetsLost: s.packetsLost ?? 0,
            framesDecoded: s.framesDecoded ?? 0,
            keyFramesDecoded: s.keyFramesDecoded ?? 0,
            frameWidth: s.frameWidth,
            frameHeight: s.frameHeight,
            pliCount: s.pliCount,
            nackCount: s.nackCount,
          };
        }
        if (s.type === 'outbound-rtp') {
          out.outbound = {
            packetsSent: s.packetsSent ?? 0,
            framesEncoded: s.framesEncoded ?? 0,
            keyFramesEncoded: s.keyFramesEncoded ?? 0,
            frameWidth: s.frameWidth,
            frameHeight: s.frameHeight,
            pliCount: s.pliCount,
            qualityLimitationReason: s.qualityLimitationReason,
          };
        }
      });
      out.directions = pc.getTransceivers().map((t) => t.currentDirection);
      return out;
    }

    hangup() {
      this.session.terminate();
    }

    stop() {
      clearInterval(this.painter);
      this.ua?.stop();
    }
  }

  window.ScreenLine = ScreenLine;
  window.screenLines = {};
})();
