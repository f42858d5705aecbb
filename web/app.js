// Huddle's demo client, and the example of using Huddle from a web page with JsSIP:
//
//   sign in      REGISTER over Huddle's WebSocket listener (JsSIP.UA)
//   contacts     GET /api/contacts, then SUBSCRIBE Event: presence to each (presence plugin)
//   chat         SIP MESSAGE (messaging plugin: stored when the peer is offline); the history
//                comes from GET /api/history/<peer>
//   call         INVITE sip:<contact>@<domain> with camera and microphone
//   room         INVITE sip:<room>@<domain> (conference plugin: one mixed audio, one composite video)
//   share screen a video-only INVITE with getDisplayMedia's stream to the room's screen URI,
//                sip:<screen_user with {room}>@<domain> (screenshare plugin; the template comes
//                from /config.json); the page says what the server answered
//   watch screen while in a room the page asks GET /api/presentation/<room> every few seconds;
//                when someone else presents, it calls the screen URI receive-only and shows the
//                relayed screen in its own video element until the presentation ends (BYE)
//
// The HTTP calls are authenticated with HTTP Digest using the SIP password you signed in
// with (the same HA1 the registrar checks), so the page never needs an admin token.
'use strict';

const $ = (id) => document.getElementById(id);

let server = null; // /config.json: { domain, ws_port, room, screen_user }
let ua = null; // JsSIP.UA while signed in
let me = null; // { user, password }
const contacts = new Map(); // name -> { item, subscriber }
let chatPeer = null;
let call = null; // the one-to-one call's RTCSession
let room = null; // { name, session, camera }
let screen = null; // { session, stream, outcome }
let watching = null; // { session, uri, presenter }: a running viewer call
let presentationPoll = null; // the interval asking whether a presentation runs
const seenPresentations = new Set(); // "<screen_uri> <started> <presenter>" being watched or refused
const PRESENTATION_POLL_MS = 2000;

function say(id, text, isError = false) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle('error', isError);
}
const status = (text, isError) => say('status', text, isError);
const uri = (name) => `sip:${name}@${server.domain}`;
const screenUri = (roomName) => uri(server.screen_user.replace('{room}', roomName));
const reasonOf = (e) =>
  e.message && e.message.status_code ? `${e.message.status_code} ${e.message.reason_phrase}` : e.cause;

// ---------------------------------------------------------------------------------------------
// Start: the server's settings, then the sign-in form.

async function boot() {
  if (typeof JsSIP === 'undefined') {
    status('JsSIP did not load from /jssip.js: run scripts/install-deps.sh (it installs JsSIP from npm).', true);
    return;
  }
  server = await (await fetch('/config.json')).json();
  if (!server.ws_port) {
    status('This Huddle has no ws: listener in [sip] listen, so a browser cannot reach it.', true);
    return;
  }
  $('room-name').value = server.room;
  $('sign-in').hidden = false;
  status(`Sign in to ${server.domain}.`);
}

$('sign-in').addEventListener('submit', (e) => {
  e.preventDefault();
  signIn($('user').value.trim(), $('password').value);
});
$('sign-out').addEventListener('click', () => signOut());

function signIn(user, password) {
  me = { user, password };
  const socket = new JsSIP.WebSocketInterface(`ws://${location.hostname}:${server.ws_port}`);
  ua = new JsSIP.UA({ sockets: [socket], uri: uri(user), password, register: true, session_timers: false });
  ua.on('registered', onSignedIn);
  ua.on('registrationFailed', (e) => {
    status(`Sign-in refused: ${reasonOf(e)}`, true);
    ua.stop();
    ua = null;
  });
  ua.on('disconnected', () => ua && status('Lost the connection to Huddle; JsSIP is reconnecting…', true));
  ua.on('newMessage', onMessage);
  ua.on('newRTCSession', onSession);
  status('Signing in…');
  ua.start();
}

async function onSignedIn() {
  if (!$('app').hidden) {
    status(`Signed in as ${me.user}.`); // a re-REGISTER after a reconnection
    return;
  }
  $('sign-in').hidden = true;
  $('app').hidden = false;
  $('sign-out').hidden = false;
  $('me').textContent = uri(me.user);
  status(`Signed in as ${me.user}.`);
  try {
    const list = await api('/api/contacts');
    for (const name of list.contacts) addContact(name);
  } catch (e) {
    status(`Could not list contacts: ${e.message}`, true);
  }
}

function signOut() {
  leaveRoom();
  if (call) call.terminate();
  ua.stop(); // unsubscribes, unregisters, closes the WebSocket
  ua = null;
  location.reload();
}

// ---------------------------------------------------------------------------------------------
// The user-scoped HTTP API: HTTP Digest with the SIP password. The first call is challenged (401);
// later ones reuse the nonce with a rising nonce count until the server asks again.

let auth = null; // { realm, nonce, nc } from the last challenge

async function api(path) {
  const get = () =>
    fetch(path, { credentials: 'omit', headers: auth ? { Authorization: digest('GET', path) } : {} });
  let response = await get();
  if (response.status === 401) {
    const challenge = response.headers.get('WWW-Authenticate') || '';
    const param = (name) => (challenge.match(new RegExp(`${name}="?([^",]*)"?`)) || [])[1];
    const algorithm = param('algorithm') || 'MD5';
    if (algorithm.toUpperCase() !== 'MD5') throw new Error(`the server asks for ${algorithm}; this page computes MD5`);
    auth = { realm: param('realm'), nonce: param('nonce'), nc: 0 };
    response = await get();
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function digest(method, path) {
  const md5 = JsSIP.Utils.calculateMD5;
  auth.nc += 1;
  const nc = auth.nc.toString(16).padStart(8, '0');
  const cnonce = crypto.getRandomValues(new Uint32Array(2)).join('');
  const ha1 = md5(`${me.user}:${auth.realm}:${me.password}`);
  const response = md5(`${ha1}:${auth.nonce}:${nc}:${cnonce}:auth:${md5(`${method}:${path}`)}`);
  return (
    `Digest username="${me.user}", realm="${auth.realm}", nonce="${auth.nonce}", uri="${path}", ` +
    `algorithm=MD5, qop=auth, nc=${nc}, cnonce="${cnonce}", response="${response}"`
  );
}

// ---------------------------------------------------------------------------------------------
// Contacts and their presence (SUBSCRIBE / NOTIFY with PIDF bodies).

function addContact(name) {
  const item = document.createElement('li');
  item.dataset.name = name;
  item.className = 'offline';
  item.innerHTML = '<span class="dot"></span><span class="name"></span> <button class="call">Call</button>';
  item.querySelector('.name').textContent = name;
  item.addEventListener('click', (e) => (e.target.classList.contains('call') ? startCall(name) : openChat(name)));
  $('contacts').append(item);

  const subscriber = ua.subscribe(uri(name), 'presence', 'application/pidf+xml', { expires: 600 });
  subscriber.on('notify', (isFinal, request, body) => setOnline(name, !isFinal && pidfSaysOpen(body)));
  subscriber.on('terminated', () => setOnline(name, false));
  subscriber.subscribe();
  contacts.set(name, { item, subscriber });
}

function pidfSaysOpen(body) {
  if (!body) return false;
  const doc = new DOMParser().parseFromString(body, 'application/xml');
  return [...doc.getElementsByTagNameNS('*', 'basic')].some((b) => b.textContent.trim() === 'open');
}

function setOnline(name, online) {
  const item = contacts.get(name)?.item;
  if (!item) return;
  item.classList.toggle('online', online);
  item.classList.toggle('offline', !online);
  item.title = online ? 'online' : 'offline';
  item.dataset.presence = online ? 'open' : 'closed'; // set once the server has told us
}

// ---------------------------------------------------------------------------------------------
// Chat: MESSAGE out, MESSAGE in, history from the server.

async function openChat(name) {
  chatPeer = name;
  for (const { item } of contacts.values()) item.classList.toggle('selected', item.dataset.name === name);
  contacts.get(name)?.item.classList.remove('unread');
  $('chat-peer').textContent = `with ${name}`;
  $('chat-text').disabled = $('chat-send').disabled = false;
  $('messages').replaceChildren();
  try {
    const history = await api(`/api/history/${encodeURIComponent(name)}`);
    if (chatPeer !== name) return;
    const mine = `${me.user}@${server.domain}`;
    const rendered = history.messages.map((m) =>
      messageItem(m.from.includes(mine) ? 'out' : 'in', m.text ?? `(${m.content_type})`, 'history', m.ts_ms),
    );
    $('messages').prepend(...rendered);
  } catch (e) {
    status(`Could not load the history: ${e.message}`, true);
  }
}

function messageItem(direction, text, state, tsMs = Date.now()) {
  const item = document.createElement('li');
  item.className = direction;
  item.dataset.state = state;
  const time = new Date(tsMs).toLocaleTimeString();
  item.textContent = `${time}  ${text}`;
  return item;
}

$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('chat-text').value;
  if (!text || !chatPeer) return;
  $('chat-text').value = '';
  const item = messageItem('out', text, 'sending');
  $('messages').append(item);
  ua.sendMessage(uri(chatPeer), text, {
    eventHandlers: {
      // 200: delivered to a device; 202: stored until the peer signs in.
      succeeded: (ev) => (item.dataset.state = ev.response.status_code === 202 ? 'stored' : 'sent'),
      failed: (ev) => {
        item.dataset.state = 'failed';
        item.title = `not sent: ${reasonOf(ev)}`;
      },
    },
  });
});

function onMessage(e) {
  if (e.originator !== 'remote') return;
  const from = e.request.from.uri.user;
  if (from === chatPeer) {
    $('messages').append(messageItem('in', e.request.body, 'received'));
  } else {
    contacts.get(from)?.item.classList.add('unread');
  }
}

// ---------------------------------------------------------------------------------------------
// Media helpers.

/** Shows what arrives on a session's peer connection in `video`. */
function showRemote(session, video) {
  const stream = new MediaStream();
  video.srcObject = stream;
  const hook = (pc) => pc.addEventListener('track', (ev) => stream.addTrack(ev.track));
  if (session.connection) hook(session.connection);
  else session.on('peerconnection', (ev) => hook(ev.peerconnection));
}

const stopTracks = (stream) => stream?.getTracks().forEach((t) => t.stop());

/** Inbound audio and video counters of a session (RTCPeerConnection.getStats). */
async function inboundStats(session) {
  const out = { audio: null, video: null };
  if (!session?.connection) return out;
  (await session.connection.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && (s.kind === 'audio' || s.kind === 'video')) out[s.kind] = s;
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// One-to-one calls.

async function startCall(name) {
  if (call || room) return say('call-state', 'Hang up or leave the room first.', true);
  const camera = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  const session = ua.call(uri(name), { mediaStream: camera });
  wireCall(session, name, camera);
  say('call-state', `Calling ${name}…`);
}

function onSession(e) {
  if (e.originator !== 'remote') return; // ours are wired where they are made
  const session = e.session;
  const from = session.remote_identity.uri.user;
  if (call || room) return session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
  wireCall(session, from, null);
  say('call-state', `${from} is calling.`);
  $('incoming').hidden = false;
  $('answer').onclick = async () => {
    const camera = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    call.camera = camera;
    session.answer({ mediaStream: camera });
  };
  $('decline').onclick = () => session.terminate({ status_code: 603, reason_phrase: 'Decline' });
}

function wireCall(session, name, camera) {
  call = session;
  call.camera = camera;
  showRemote(session, $('call-video'));
  $('hang-up').hidden = $('call-video').hidden = false;
  $('hang-up').onclick = () => session.terminate();
  session.on('confirmed', () => {
    $('incoming').hidden = true;
    say('call-state', `In a call with ${name}.`);
  });
  const done = (text, isError) => {
    stopTracks(call?.camera);
    call = null;
    $('incoming').hidden = $('hang-up').hidden = $('call-video').hidden = true;
    $('call-video').srcObject = null;
    say('call-state', text, isError);
  };
  session.on('ended', () => done(`Call with ${name} ended.`));
  session.on('failed', (ev) => done(`Call with ${name} failed: ${reasonOf(ev)}`, ev.originator !== 'local'));
}

// ---------------------------------------------------------------------------------------------
// Rooms: the conference plugin answers sip:<room>@<domain> and sends back one mixed audio and
// one composite video of everyone else.

$('room-form').addEventListener('submit', (e) => {
  e.preventDefault();
  joinRoom($('room-name').value.trim());
});
$('leave-room').addEventListener('click', () => leaveRoom());
$('share-screen').addEventListener('click', () => shareScreen());

async function joinRoom(name) {
  if (room || call || !name) return;
  let camera;
  try {
    camera = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  } catch (e) {
    return say('room-state', `No camera or microphone: ${e.name}`, true);
  }
  $('self-video').srcObject = camera;
  const session = ua.call(uri(name), { mediaStream: camera });
  room = { name, session, camera };
  showRemote(session, $('room-video'));
  $('join-room').disabled = true;
  $('leave-room').hidden = false;
  say('room-state', `Joining ${name}…`);
  session.on('confirmed', () => {
    say('room-state', `In room ${name}.`);
    $('share-screen').hidden = !server.screen_user;
    if (server.screen_user) startWatchingPresentations(name);
  });
  const done = (text, isError) => {
    if (room?.session !== session) return;
    stopScreen();
    stopWatching();
    stopTracks(camera);
    room = null;
    $('room-video').srcObject = $('self-video').srcObject = null;
    $('join-room').disabled = false;
    $('leave-room').hidden = $('share-screen').hidden = true;
    say('room-state', text, isError);
  };
  session.on('ended', () => done(`Left room ${name}.`));
  session.on('failed', (ev) => done(`Room ${name} refused: ${reasonOf(ev)}`, ev.originator !== 'local'));
}

function leaveRoom() {
  if (room && !room.session.isEnded()) room.session.terminate();
}

async function shareScreen() {
  if (screen) return stopScreen(); // the button says "Stop sharing" while sharing
  if (!room || !server.screen_user) return;
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  } catch (e) {
    return say('share-state', `The browser shared no screen: ${e.name}`, true);
  }
  // A video-only call to the room's screen URI, sending the screen (SIPml5's call-screenshare);
  // the relay forwards it to everyone in the room who watches.
  const target = screenUri(room.name);
  const session = ua.call(target, {
    mediaStream: stream,
    rtcOfferConstraints: { offerToReceiveAudio: false, offerToReceiveVideo: false },
  });
  screen = { session, stream, outcome: null };
  $('share-screen').textContent = 'Stop sharing';
  say('share-state', `Asking ${target} to take your screen…`);
  stream.getVideoTracks()[0].addEventListener('ended', () => stopScreen());
  session.on('confirmed', () => {
    screen.outcome = 200;
    say('share-state', `Sharing your screen with ${room.name}.`);
  });
  const done = (text, isError, status) => {
    stopTracks(stream);
    if (screen?.session === session) screen = null;
    $('share-screen').textContent = 'Share screen';
    window.demo.lastScreenOutcome = status;
    say('share-state', text, isError);
  };
  session.on('ended', () => done('Screen sharing stopped.', false, 200));
  session.on('failed', (ev) => {
    const code = ev.message?.status_code ?? null;
    done(`The server refused the screen share: ${reasonOf(ev)}`, true, code);
  });
}

function stopScreen() {
  if (screen && !screen.session.isEnded()) screen.session.terminate();
}

// ---------------------------------------------------------------------------------------------
// Watching someone else's screen: the screenshare plugin records the running presentation of a
// room (GET /api/presentation/<room>: presenter, screen_uri, started); a receive-only call to
// its screen_uri gets the presenter's stream relayed as sent. The relay ends the call (BYE)
// when the presentation ends; a new presentation is watched anew.

function startWatchingPresentations(roomName) {
  clearInterval(presentationPoll);
  const check = () => checkPresentation(roomName).catch((e) => say('screen-state', `Could not ask for presentations: ${e.message}`, true));
  presentationPoll = setInterval(check, PRESENTATION_POLL_MS);
  check();
}

async function checkPresentation(roomName) {
  if (room?.name !== roomName || watching) return;
  let record;
  try {
    record = await api(`/api/presentation/${encodeURIComponent(roomName)}`);
  } catch (e) {
    if (/HTTP 404/.test(e.message)) return; // nobody presents
    throw e;
  }
  const key = `${record.screen_uri} ${record.started} ${record.presenter}`;
  if (record.presenter === me.user || seenPresentations.has(key) || room?.name !== roomName || watching) return;
  seenPresentations.add(key);
  watchScreen(record, key);
}

function watchScreen(record, key) {
  const session = ua.call(record.screen_uri, {
    mediaConstraints: { audio: false, video: false },
    eventHandlers: {
      // Before JsSIP makes the offer: one video m-line, receive only.
      peerconnection: (e) => e.peerconnection.addTransceiver('video', { direction: 'recvonly' }),
    },
  });
  watching = { session, uri: record.screen_uri, presenter: record.presenter };
  showRemote(session, $('screen-video'));
  $('screen-video').hidden = false;
  say('screen-state', `Connecting to ${record.display || record.presenter}'s screen…`);
  session.on('confirmed', () => say('screen-state', `Watching ${record.display || record.presenter}'s screen.`));
  const done = (text, isError) => {
    if (watching?.session !== session) return;
    watching = null;
    $('screen-video').srcObject = null;
    $('screen-video').hidden = true;
    say('screen-state', text, isError);
  };
  session.on('ended', () => {
    seenPresentations.delete(key); // watched to its end: a new one may look the same
    done(`${record.display || record.presenter}'s screen share ended.`);
  });
  session.on('failed', (ev) => done(`Could not watch the screen: ${reasonOf(ev)}`, ev.originator !== 'local'));
}

function stopWatching() {
  clearInterval(presentationPoll);
  presentationPoll = null;
  if (watching && !watching.session.isEnded()) watching.session.terminate();
}

// For the browser test and for poking around in the console.
window.demo = {
  roomStats: () => inboundStats(room?.session),
  callStats: () => inboundStats(call),
  screenOutcome: () => screen?.outcome ?? window.demo.lastScreenOutcome ?? null,
  history: (peer) => api(`/api/history/${encodeURIComponent(peer)}`),
  screenStats: () => inboundStats(watching?.session),
  screenSent: async () => {
    let out = null;
    (await screen?.session?.connection?.getStats())?.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') out = { frameWidth: s.frameWidth, frameHeight: s.frameHeight, framesEncoded: s.framesEncoded };
    });
    return out;
  },
  lastScreenOutcome: undefined,
};

boot().catch((e) => status(`Could not start: ${e.message}`, true));
