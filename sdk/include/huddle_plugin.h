/*
 * huddle_plugin.h: the Huddle plugin ABI, version 1.
 *
 * GENERATED from sdk/src/abi.rs by cbindgen (sdk/generate-header.sh). Do not edit by hand.
 * The rules (versioning, ownership of every pointer, threads, claims, transactions, the store)
 * are in the module documentation of sdk/src/abi.rs, summarised in sdk/README.md.
 *
 * A plugin exports exactly one function:
 *     const HuddlePluginDescriptor *huddle_plugin_entry_v1(void);
 */
#ifndef HUDDLE_PLUGIN_H
#define HUDDLE_PLUGIN_H



#include <stddef.h>
#include <stdint.h>

// The ABI major version. Part of the entry symbol's name.
#define HUDDLE_PLUGIN_ABI_MAJOR 1

// The ABI minor version this SDK was built with.
#define HUDDLE_PLUGIN_ABI_MINOR 12

// Success.
#define HUDDLE_OK 0

// The callee failed for a reason of its own (a store I/O error, a host-side bug). Logged.
#define HUDDLE_ERR_INTERNAL (-1)

// A null pointer where one is required, text that is not UTF-8, bytes that are not a SIP
// message of the expected kind, an invalid claim.
#define HUDDLE_ERR_INVALID_ARGUMENT (-2)

// No such key, timer, watch or media session.
#define HUDDLE_ERR_NOT_FOUND (-3)

// `store_cas` found a value other than the expected one.
#define HUDDLE_ERR_CONFLICT (-4)

// `respond` for a transaction that does not exist or has its final response already.
#define HUDDLE_ERR_UNKNOWN_TRANSACTION (-5)

// The function or callback is absent: its capability is not provided.
#define HUDDLE_ERR_NOT_SUPPORTED (-6)

// A namespace the plugin may not read, or a claim the host reserves.
#define HUDDLE_ERR_PERMISSION_DENIED (-7)

// A key, value or message larger than the host accepts.
#define HUDDLE_ERR_TOO_LARGE (-8)

// Overloaded: try again later. From a plugin callback: the host answers 503 with Retry-After.
#define HUDDLE_ERR_BUSY (-9)

// Called at the wrong time (`claim` outside `init`, any call after `destroy`).
#define HUDDLE_ERR_BAD_STATE (-10)

// A plugin callback panicked; the panic was caught at the boundary.
#define HUDDLE_ERR_PANIC (-11)

// The other side's table has another major version, is too small, or lacks a mandatory entry.
#define HUDDLE_ERR_INCOMPATIBLE (-12)

// `init` refused its configuration (the plugin logged why).
#define HUDDLE_ERR_INVALID_CONFIG (-13)

// A plugin-specific failure (the plugin logged why).
#define HUDDLE_ERR_PLUGIN (-14)

// (ABI 1.1) `media_answer`: the offer is not SDP that can be parsed. Answer the INVITE
// `400`; `*out_answer` holds the reason phrase to use (see `media_answer`).
#define HUDDLE_ERR_SDP_MALFORMED (-15)

// (ABI 1.1) `media_answer`: the offer is SDP the host cannot answer (plain RTP/AVP from a
// SIP phone, no DTLS fingerprint or ICE, no codec in common). Answer the INVITE `488`;
// `*out_answer` holds the reason phrase, optionally followed by a line feed and the text of
// a `Warning: 399` header to add.
#define HUDDLE_ERR_SDP_NOT_ACCEPTABLE (-16)

// Capability: the key-value store (`store_get`, `store_put`, `store_delete`, `store_cas`,
// `store_scan`).
#define HUDDLE_CAP_STORE 1

// Capability: prefix watches (`store_watch`, `store_unwatch`, and the `on_store_change`
// callback).
#define HUDDLE_CAP_STORE_WATCH 2

// Capability: read access to the `location` namespace (who is registered, with which flows).
#define HUDDLE_CAP_LOCATION 4

// Capability: registration events (the `on_registration` callback). The host calls
// `on_registration` only for plugins that require this capability.
#define HUDDLE_CAP_REGISTRATION_EVENTS 8

// Capability: sending requests (`send_request`, and the `handle_response` callback).
#define HUDDLE_CAP_SEND_REQUEST 16

// Capability: timers (`set_timer`, `cancel_timer`, and the `on_timer` callback).
#define HUDDLE_CAP_TIMERS 32

// Capability: the media engine (`media_*` host functions and media callbacks).
#define HUDDLE_CAP_MEDIA 64

// Every capability bit defined in ABI 1.0.
#define HUDDLE_CAP_ALL_V1_0 127

// (ABI 1.2) Capability: raising events for the host's webhooks (`emit_event`). A plugin that
// can do without events checks `host_capabilities` rather than requiring it.
#define HUDDLE_CAP_EVENTS 128

// (ABI 1.11) Capability: the host lends its allocator (`mem_alloc`, `mem_alloc_zeroed`,
// `mem_dealloc`, `mem_realloc`; module docs, "The host's allocator"). Never required: a plugin
// that can use it checks `host_capabilities`.
#define HUDDLE_CAP_HOST_ALLOCATOR 256

// Log level: an error.
#define HUDDLE_LOG_ERROR 1

// Log level: a warning.
#define HUDDLE_LOG_WARN 2

// Log level: information.
#define HUDDLE_LOG_INFO 3

// Log level: debugging detail.
#define HUDDLE_LOG_DEBUG 4

// Log level: tracing detail.
#define HUDDLE_LOG_TRACE 5

// The request came from the host itself, or the transport is unknown.
#define HUDDLE_TRANSPORT_OTHER 0

// SIP over UDP.
#define HUDDLE_TRANSPORT_UDP 1

// SIP over TCP.
#define HUDDLE_TRANSPORT_TCP 2

// SIP over TLS.
#define HUDDLE_TRANSPORT_TLS 3

// SIP over WebSocket (RFC 7118).
#define HUDDLE_TRANSPORT_WS 4

// SIP over secure WebSocket.
#define HUDDLE_TRANSPORT_WSS 5

// `on_store_change`: the key was written; the value is its new value.
#define HUDDLE_STORE_PUT 1

// `on_store_change`: the key was deleted; no value.
#define HUDDLE_STORE_DELETE 2

// `on_store_change`: changes were dropped; no key or value. Rescan the watched prefix.
#define HUDDLE_STORE_LAGGED 3

// `store_cas` flag: the key must be absent (`expected` is ignored).
#define HUDDLE_CAS_EXPECT_ABSENT 1

// `store_cas` flag: on a match, delete the key (`new_value` is ignored).
#define HUDDLE_CAS_DELETE 2

// (ABI 1.3) [`HuddleStoreOp::op`]: set `key` to `value`.
#define HUDDLE_STORE_OP_PUT 1

// (ABI 1.3) [`HuddleStoreOp::op`]: delete `key` (absent already is not an error); `value` is
// ignored.
#define HUDDLE_STORE_OP_DELETE 2

// Registration event: an address-of-record went from no bindings to at least one.
#define HUDDLE_REG_ONLINE 1

// Registration event: an address-of-record lost its last binding (expiry, unregister, or the
// connection of a WebSocket flow closed).
#define HUDDLE_REG_OFFLINE 2

// Registration event: the bindings of an address-of-record changed while it stayed online.
#define HUDDLE_REG_UPDATED 3

// Media hang-up reason: the remote side or a SIP BYE ended the session.
#define HUDDLE_HANGUP_NORMAL 0

// Media hang-up reason: ICE or DTLS failed or timed out.
#define HUDDLE_HANGUP_TRANSPORT 1

// Media hang-up reason: the host is shutting down.
#define HUDDLE_HANGUP_SHUTDOWN 2

// (ABI 1.2) `HuddleClaim::flags`: out-of-dialog requests this claim matches reach the plugin
// without the digest challenge (407) the host sends callers who name a local user in From,
// unless they carry credentials; the plugin sees no `auth_user` and decides what a guest may
// do (a public conference room).
#define HUDDLE_CLAIM_GUESTS 1

// (ABI 1.9) `HuddleRequestInfo::source_family`: the source address is unknown.
#define HUDDLE_ADDR_NONE 0

// (ABI 1.9) `HuddleRequestInfo::source_family`: IPv4, the first 4 bytes of `source_addr`.
#define HUDDLE_ADDR_IPV4 4

// (ABI 1.9) `HuddleRequestInfo::source_family`: IPv6, all 16 bytes of `source_addr`.
#define HUDDLE_ADDR_IPV6 6

// (ABI 1.12) The most header fields `respond_status` takes in one response.
#define HUDDLE_STATUS_RESPONSE_MAX_FIELDS 32

// A byte buffer allocated by the host and lent to the plugin.
//
// Ownership: the host owns `ptr[0..len]`. The plugin may read it until it passes the buffer
// back, exactly once, to `HuddleHostApi::free_buf` of the table it came from. `token` is the
// host's bookkeeping; the plugin leaves it untouched. A buffer whose `ptr` is null holds no
// value (an absent key); passing it to `free_buf` is allowed and does nothing. A present but
// empty value has a non-null `ptr` and `len == 0`.
typedef struct {
  // Start of the bytes, or null for "no value".
  const uint8_t *ptr;
  // Number of bytes at `ptr`.
  size_t len;
  // Host bookkeeping (for example the allocation's capacity); opaque to the plugin.
  void *token;
} HuddleHostBuf;

// One routing claim, passed to `HuddleHostApi::claim` during `init`. See the module docs,
// "Routing: claims". Every text field is borrowed for the call (the host copies it), UTF-8,
// not NUL-terminated; a zero length means "any".
typedef struct {
  // `sizeof(HuddleClaim)` as the plugin knows it.
  size_t struct_size;
  // SIP method, exact and case-sensitive (`MESSAGE`).
  const uint8_t *method;
  // Length of `method` in bytes.
  size_t method_len;
  // Event package, case-insensitive (`presence`).
  const uint8_t *event;
  // Length of `event` in bytes.
  size_t event_len;
  // Request-URI user pattern, case-sensitive, `*` matches any run of characters
  // (`room-*`).
  const uint8_t *user;
  // Length of `user` in bytes.
  size_t user_len;
  // (ABI 1.2, optional by `struct_size`) `HUDDLE_CLAIM_*` bits; bits the host does not know
  // are ignored.
  uint32_t flags;
} HuddleClaim;

// (ABI 1.3) One write of `HuddleHostApi::store_batch`. The key and value are borrowed for the
// call, relative to the plugin's own namespace; a zero length allows a null pointer.
typedef struct {
  // `HUDDLE_STORE_OP_*`.
  uint32_t op;
  // The key.
  const uint8_t *key;
  // Length of `key` in bytes.
  size_t key_len;
  // The new value (`HUDDLE_STORE_OP_PUT`; ignored otherwise).
  const uint8_t *value;
  // Length of `value` in bytes.
  size_t value_len;
} HuddleStoreOp;

// (ABI 1.7) One packet of `HuddleHostApi::media_send_rtp_batch`: what `media_send_rtp` takes,
// as a struct. Borrowed for the call.
typedef struct {
  // The media session.
  uint64_t session;
  // The stream, UTF-8, not NUL-terminated.
  const uint8_t *mid;
  // Length of `mid` in bytes.
  size_t mid_len;
  // One plain RTP packet (header and payload, unencrypted).
  const uint8_t *packet;
  // Length of `packet` in bytes.
  size_t len;
} HuddleRtpOut;

// (ABI 1.10) One header field of [`HuddleRequestParts`]: written `name: value`. Borrowed for
// the call.
typedef struct {
  // The field name, a token (`Subject`, `f`), UTF-8, not NUL-terminated.
  const uint8_t *name;
  // Length of `name` in bytes.
  size_t name_len;
  // The value, UTF-8 without CR, LF or NUL, not NUL-terminated.
  const uint8_t *value;
  // Length of `value` in bytes.
  size_t value_len;
} HuddleHeader;

// (ABI 1.10) A request for `HuddleHostApi::send_request_parts`, given as its parts (module
// docs, "Requests in parts"). Borrowed for the call, like everything it points to.
typedef struct {
  // `sizeof(HuddleRequestParts)` as the plugin knows it.
  size_t struct_size;
  // The method, a token (`MESSAGE`).
  const uint8_t *method;
  // Length of `method` in bytes.
  size_t method_len;
  // The Request-URI (`sip:alice@example.com`).
  const uint8_t *uri;
  // Length of `uri` in bytes.
  size_t uri_len;
  // The header fields, in the order they are written; neither Via nor Content-Length.
  const HuddleHeader *headers;
  // Number of entries in `headers`.
  size_t headers_len;
  // The body (may be null when `body_len` is 0).
  const uint8_t *body;
  // Length of `body` in bytes.
  size_t body_len;
} HuddleRequestParts;

// (ABI 1.12) A final response for `HuddleHostApi::respond_status`, given as its status, reason
// phrase and extra header fields; the host writes the rest from the request (module docs,
// "Final responses by status"). Borrowed for the call, like everything it points to.
typedef struct {
  // `sizeof(HuddleStatusResponse)` as the plugin knows it.
  size_t struct_size;
  // The status code, 200..=699.
  uint32_t status;
  // The reason phrase (`Accepted`), UTF-8 without control characters but HTAB, not
  // NUL-terminated; may be empty.
  const uint8_t *reason;
  // Length of `reason` in bytes.
  size_t reason_len;
  // Extra header fields, written in order after the ones copied from the request; none of
  // the fields the host writes itself.
  const HuddleHeader *headers;
  // Number of entries in `headers`.
  size_t headers_len;
} HuddleStatusResponse;

// The host's table (host → plugin), passed to `init`. Owned by the host; valid, like `ctx`,
// until `destroy` returns. Every function takes `ctx` as its first argument. Out-parameters are
// written only on success. See the module docs for which entries may be null.
typedef struct {
  // The host's ABI major version; a plugin refuses any other.
  uint32_t abi_major;
  // The host's ABI minor version.
  uint32_t abi_minor;
  // `sizeof(HuddleHostApi)` as the host was built. Entries beyond it are absent.
  size_t struct_size;
  // `HUDDLE_CAP_*` bits the host provides to this plugin instance.
  uint64_t host_capabilities;
  // The host's context for this instance; opaque to the plugin, passed back to every
  // function.
  void *ctx;
  // Returns a buffer the host lent (see [`HuddleHostBuf`]). Never null.
  void (*free_buf)(void *ctx, HuddleHostBuf buf);
  // Logs `msg[0..len]` (UTF-8) at `level` (`HUDDLE_LOG_*`) in the host's log, tagged with
  // the plugin's name. Never null.
  void (*log)(void *ctx, uint32_t level, const uint8_t *msg, size_t len);
  // Claims requests for this instance; only during `init` (module docs, "Routing: claims").
  // `HUDDLE_ERR_INVALID_ARGUMENT` for a malformed claim, `HUDDLE_ERR_PERMISSION_DENIED` for a
  // reserved method. Never null.
  int32_t (*claim)(void *ctx, const HuddleClaim *claim);
  // Sends a response (complete bytes) on server transaction `txn`. Provisional responses any
  // number of times, then one final response. Never null.
  int32_t (*respond)(void *ctx, uint64_t txn, const uint8_t *msg, size_t len);
  // Sends a request (complete bytes without Via). On success writes the id its responses will
  // carry to `*out_request_id` (never 0).
  int32_t (*send_request)(void *ctx, const uint8_t *msg, size_t len, uint64_t *out_request_id);
  // Reads `key` in namespace `ns` (empty: the plugin's own). On success writes the value to
  // `*out` (a host buffer to free with `free_buf`); `HUDDLE_ERR_NOT_FOUND` when absent.
  int32_t (*store_get)(void *ctx, const uint8_t *ns, size_t ns_len, const uint8_t *key, size_t key_len, HuddleHostBuf *out);
  // Sets `key` to `value` in the plugin's own namespace.
  int32_t (*store_put)(void *ctx, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len);
  // Deletes `key` in the plugin's own namespace; `HUDDLE_ERR_NOT_FOUND` if it was absent.
  int32_t (*store_delete)(void *ctx, const uint8_t *key, size_t key_len);
  // Compare-and-swap in the plugin's own namespace: if `key` currently holds `expected`
  // (or is absent, with `HUDDLE_CAS_EXPECT_ABSENT`), sets it to `new_value` (or deletes it,
  // with `HUDDLE_CAS_DELETE`) and returns `HUDDLE_OK`. Otherwise returns
  // `HUDDLE_ERR_CONFLICT` and, if `out_current` is not null, writes the current value there
  // (a null `ptr` when the key is absent), to be freed with `free_buf`.
  int32_t (*store_cas)(void *ctx, const uint8_t *key, size_t key_len, const uint8_t *expected, size_t expected_len, const uint8_t *new_value, size_t new_value_len, uint32_t flags, HuddleHostBuf *out_current);
  // Visits up to `limit` entries (the host may cap it lower; 0 means the host's maximum page)
  // of namespace `ns` whose keys start with `prefix`, in key order, starting after
  // `start_after` (empty: from the start of the prefix). Writes 1 to `*out_more` when entries
  // remain after the last one visited (continue with its key as `start_after`), else 0.
  int32_t (*store_scan)(void *ctx, const uint8_t *ns, size_t ns_len, const uint8_t *prefix, size_t prefix_len, const uint8_t *start_after, size_t start_after_len, uint32_t limit, int32_t (*visit)(void *user, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len), void *visit_user, uint8_t *out_more);
  // Watches `prefix` in namespace `ns`; changes arrive through `on_store_change` with the id
  // written to `*out_watch_id` (never 0).
  int32_t (*store_watch)(void *ctx, const uint8_t *ns, size_t ns_len, const uint8_t *prefix, size_t prefix_len, uint64_t *out_watch_id);
  // Ends a watch. Changes already queued may still be delivered.
  int32_t (*store_unwatch)(void *ctx, uint64_t watch_id);
  // Arms a one-shot timer: `on_timer(timer_id, token)` after `delay_ms` milliseconds. Writes
  // the id to `*out_timer_id` (never 0).
  int32_t (*set_timer)(void *ctx, uint64_t delay_ms, uint64_t token, uint64_t *out_timer_id);
  // Cancels a timer that has not fired; `HUDDLE_ERR_NOT_FOUND` if it fired or never existed.
  int32_t (*cancel_timer)(void *ctx, uint64_t timer_id);
  // Answers an SDP offer with the host's media engine. `session` 0 creates a media session
  // (its id is written to `*out_session`); an existing id renegotiates it. The SDP answer, to
  // put in the plugin's SIP response, is written to `*out_answer` (free with `free_buf`).
  //
  // The plugin picks codecs and directions by the offer it passes (drop the payload types
  // it does not want, change a direction attribute); the host answers each m-line with the
  // offered codecs it supports, mirroring the direction, and adds the transport: ICE-lite
  // credentials and candidate, DTLS fingerprint and setup, rtcp-mux, BUNDLE.
  //
  // (ABI 1.1) On `HUDDLE_ERR_SDP_MALFORMED` or `HUDDLE_ERR_SDP_NOT_ACCEPTABLE` the host
  // writes the reason to `*out_answer` too (an exception to the out-parameter rule), so the
  // plugin can answer `400`/`488` saying what was wrong. `HUDDLE_ERR_BUSY`: too many media
  // sessions (answer `503`).
  int32_t (*media_answer)(void *ctx, uint64_t session, const uint8_t *offer, size_t offer_len, uint64_t *out_session, HuddleHostBuf *out_answer);
  // Sends one RTP packet (header and payload, unencrypted) on stream `mid` of `session`.
  int32_t (*media_send_rtp)(void *ctx, uint64_t session, const uint8_t *mid, size_t mid_len, const uint8_t *packet, size_t len);
  // Sends one RTCP packet (possibly compound, unencrypted) on `session`.
  int32_t (*media_send_rtcp)(void *ctx, uint64_t session, const uint8_t *packet, size_t len);
  // Asks the sender of stream `mid` of `session` for a key frame (PLI/FIR).
  int32_t (*media_request_keyframe)(void *ctx, uint64_t session, const uint8_t *mid, size_t mid_len);
  // Forwards stream `src_mid` of `src_session` to stream `dst_mid` of `dst_session` inside
  // the host (SSRC rewrite, key-frame requests passed back), without the packets passing
  // through the plugin. An empty `src_mid` stops what is forwarded to `dst_mid`.
  int32_t (*media_forward)(void *ctx, uint64_t src_session, const uint8_t *src_mid, size_t src_mid_len, uint64_t dst_session, const uint8_t *dst_mid, size_t dst_mid_len);
  // Closes a media session; `media_hangup` follows with `HUDDLE_HANGUP_NORMAL`.
  int32_t (*media_close)(void *ctx, uint64_t session);
  // (ABI 1.2, with `HUDDLE_CAP_EVENTS`) Raises event `kind` (`[a-z0-9._-]{1,64}`) with the
  // JSON object `json` as its details, for the host's webhooks. Never blocks (module docs,
  // "Admin requests and events"). Absent when `struct_size` does not cover it.
  int32_t (*emit_event)(void *ctx, const uint8_t *kind, size_t kind_len, const uint8_t *json, size_t json_len);
  // (ABI 1.3, with `HUDDLE_CAP_MEDIA`) Taps (`on` 1) or untaps (`on` 0) the incoming stream
  // `mid` of `session`, which may be any plugin's media session: each packet of it is then
  // also delivered to this plugin's `incoming_rtp`, with `session` (not one of this plugin's
  // own) as its session, and this plugin may call `media_request_keyframe` on it. A tap ends
  // when the tapped session ends (no `media_hangup` is sent for it: the tapper learns that
  // from the owner's shared state). `HUDDLE_ERR_NOT_FOUND`: no such session or stream (it is
  // gone), or, to untap, no such tap. Absent when `struct_size` does not cover it.
  int32_t (*media_tap)(void *ctx, uint64_t session, const uint8_t *mid, size_t mid_len, uint32_t on);
  // (ABI 1.3, with `HUDDLE_CAP_STORE`) Applies `ops[0..count]` in the plugin's own
  // namespace, in order, in one durable commit: all or none, `HUDDLE_OK` only once durable.
  // `HUDDLE_ERR_TOO_LARGE` over the host's limits (split the batch), and
  // `HUDDLE_ERR_INVALID_ARGUMENT` for an unknown op. Module docs, "The store". Absent when
  // `struct_size` does not cover it.
  int32_t (*store_batch)(void *ctx, const HuddleStoreOp *ops, size_t count);
  // (ABI 1.4) Gives up server transaction `txn` (out of dialog, no final response yet) and
  // has the host route its request again as if its Request-URI were `uri[0..uri_len]`
  // (UTF-8, a `sip:`/`sips:` URI naming this server). Module docs, "Retargeting". Never
  // null when `struct_size` covers it; absent otherwise.
  int32_t (*retarget)(void *ctx, uint64_t txn, const uint8_t *uri, size_t uri_len);
  // (ABI 1.5, with `HUDDLE_CAP_LOCATION`) Whether the host has an account named
  // `user[0..user_len]` (UTF-8, a Request-URI user part): `HUDDLE_OK` when it has,
  // `HUDDLE_ERR_NOT_FOUND` when it has not. Read at the moment of the call; nothing about
  // bindings. Module docs, "Users". Absent when `struct_size` does not cover it.
  int32_t (*user_exists)(void *ctx, const uint8_t *user, size_t user_len);
  // (ABI 1.7, with `HUDDLE_CAP_MEDIA`) Registers `sink` (with `user`) as the instance's
  // receiver of incoming RTP, called on the host's media thread instead of queueing
  // `incoming_rtp`; a null `sink` goes back to `incoming_rtp`. When this returns, the
  // previous sink is not running and will not be called again. `HUDDLE_ERR_BAD_STATE` from
  // inside a sink. Module docs, "Incoming RTP on the media thread". Absent when
  // `struct_size` does not cover it.
  int32_t (*media_rtp_sink)(void *ctx, int32_t (*sink)(void *user, uint64_t session, const uint8_t *mid, size_t mid_len, const uint8_t *packet, size_t len), void *user);
  // (ABI 1.7, with `HUDDLE_CAP_MEDIA`) Sends `packets[0..count]`, each as `media_send_rtp`
  // would, in one crossing into the media engine. Entries that fail their check are skipped
  // and the first failure is returned; `HUDDLE_ERR_BUSY`: none was sent. Module docs,
  // "Sending one packet to many legs". Absent when `struct_size` does not cover it.
  int32_t (*media_send_rtp_batch)(void *ctx, const HuddleRtpOut *packets, size_t count);
  // (ABI 1.8, with `HUDDLE_CAP_EVENTS`) Whether an event `kind[0..kind_len]` raised now with
  // `emit_event` would go anywhere: `HUDDLE_OK` when it would, `HUDDLE_ERR_NOT_FOUND` when
  // the host would drop it (no webhooks, or none that takes this kind). Module docs, "Events
  // nobody takes (ABI 1.8)". Absent when `struct_size` does not cover it.
  int32_t (*event_wanted)(void *ctx, const uint8_t *kind, size_t kind_len);
  // (ABI 1.10, with `HUDDLE_CAP_SEND_REQUEST`) Sends the request `*parts` (method,
  // Request-URI, header fields without Via or Content-Length, body), which the host writes
  // with its Via; otherwise as `send_request`, whose id it writes to `*out_request_id`.
  // Module docs, "Requests in parts". Absent when `struct_size` does not cover it.
  int32_t (*send_request_parts)(void *ctx, const HuddleRequestParts *parts, uint64_t *out_request_id);
  // (ABI 1.11, with `HUDDLE_CAP_HOST_ALLOCATOR`) A block of `size` bytes aligned to `align`
  // from the host's allocator, or null. The process's, not an instance's: no `ctx`. Module
  // docs, "The host's allocator". Absent when `struct_size` does not cover it.
  uint8_t *(*mem_alloc)(size_t size, size_t align);
  // (ABI 1.11, with `HUDDLE_CAP_HOST_ALLOCATOR`) As `mem_alloc`, the block zeroed.
  uint8_t *(*mem_alloc_zeroed)(size_t size, size_t align);
  // (ABI 1.11, with `HUDDLE_CAP_HOST_ALLOCATOR`) Releases a block `mem_alloc`,
  // `mem_alloc_zeroed` or `mem_realloc` made with this `size` and `align`.
  void (*mem_dealloc)(uint8_t *ptr, size_t size, size_t align);
  // (ABI 1.11, with `HUDDLE_CAP_HOST_ALLOCATOR`) Resizes a block made with `size` and
  // `align` to `new_size` bytes, keeping its contents up to the smaller size: the block's
  // new address, or null (then the old block is untouched).
  uint8_t *(*mem_realloc)(uint8_t *ptr, size_t size, size_t align, size_t new_size);
  // (ABI 1.12) Answers server transaction `txn` finally with `*response` (status, reason,
  // extra fields), the host writing the response from the request it holds.
  // `HUDDLE_ERR_NOT_SUPPORTED` from a host that cannot (write the bytes and call
  // `respond`). Module docs, "Final responses by status". Never null when `struct_size`
  // covers it; absent otherwise.
  int32_t (*respond_status)(void *ctx, uint64_t txn, const HuddleStatusResponse *response);
} HuddleHostApi;

// (ABI 1.9) One header field of a request as the host's parse found it: byte offsets into the
// request, ends exclusive.
typedef struct {
  // Where the field's first line starts (its name).
  uint32_t line_start;
  // Just after the field's last line terminator (continuation lines included).
  uint32_t line_end;
  // Where the value starts, white space after the colon skipped.
  uint32_t value_start;
  // Just after the value's last character, trailing white space and the terminator left out.
  uint32_t value_end;
} HuddleField;

// What the host knows about a request beyond its bytes. Borrowed for the duration of
// `handle_request`, like everything it points to.
typedef struct {
  // `sizeof(HuddleRequestInfo)` as the host knows it. Fields beyond it are absent.
  size_t struct_size;
  // `HUDDLE_TRANSPORT_*` the request arrived on.
  uint32_t transport;
  // Source port of the request (0 when unknown).
  uint32_t source_port;
  // Source IP address as text (`192.0.2.1`, `2001:db8::1`), UTF-8, not NUL-terminated;
  // empty when unknown. Used for the top Via's `received`/`rport` in responses.
  const uint8_t *source_ip;
  // Length of `source_ip` in bytes.
  size_t source_ip_len;
  // The user the host authenticated (digest username), UTF-8; empty when the request was
  // not authenticated.
  const uint8_t *auth_user;
  // Length of `auth_user` in bytes.
  size_t auth_user_len;
  // For a CANCEL: the `txn` of the INVITE it cancels. Otherwise 0.
  uint64_t related_txn;
  // (ABI 1.9) `HUDDLE_ADDR_*`: how to read `source_addr`. Module docs, "The request's index
  // and binary source".
  uint32_t source_family;
  // (ABI 1.9) The source IP, network byte order: 4 bytes for `HUDDLE_ADDR_IPV4`, 16 for
  // `HUDDLE_ADDR_IPV6`, the rest zero.
  uint8_t source_addr[16];
  // (ABI 1.9) The host's index of the request's header fields, in order, or null when it
  // has none (parse the bytes then).
  const HuddleField *fields;
  // (ABI 1.9) Number of entries in `fields`.
  size_t fields_len;
  // (ABI 1.9) Offset just after the Request-Line's line terminator (0 without `fields`).
  uint32_t start_line_end;
  // (ABI 1.9) Offset of the blank line that ends the header section (0 without `fields`).
  uint32_t headers_end;
  // (ABI 1.9) Offset of the body's first byte (0 without `fields`).
  uint32_t body_start;
  // (ABI 1.9) Offset just after the body (0 without `fields`).
  uint32_t body_end;
} HuddleRequestInfo;

// A registration event, for plugins that require `HUDDLE_CAP_REGISTRATION_EVENTS`. Borrowed
// for the duration of `on_registration`.
typedef struct {
  // `sizeof(HuddleRegistrationEvent)` as the host knows it.
  size_t struct_size;
  // `HUDDLE_REG_*`.
  uint32_t kind;
  // How many bindings the address-of-record has now.
  uint32_t bindings;
  // The address-of-record (`sip:alice@example.com`), UTF-8, not NUL-terminated.
  const uint8_t *aor;
  // Length of `aor` in bytes.
  size_t aor_len;
  // ABI 1.2: the keys (under `location/`) of the address-of-record's bindings now, each
  // followed by `\n`, UTF-8; empty when it has none. Hosts before 1.2 pass a shorter
  // struct without this field (check `struct_size`).
  const uint8_t *binding_keys;
  // Length of `binding_keys` in bytes.
  size_t binding_keys_len;
} HuddleRegistrationEvent;

// The plugin's descriptor (plugin → host), returned by the entry symbol. Static: it and the
// strings it points to live as long as the library is loaded. Callbacks below `handle_request`
// may be null unless a required capability makes them mandatory (module docs).
//
// In every callback, `instance` is the pointer the plugin stored in `init`'s `out_instance`,
// and every `(pointer, length)` argument is borrowed for the duration of the call.
typedef struct {
  // Must be [`HUDDLE_PLUGIN_ABI_MAJOR`].
  uint32_t abi_major;
  // The minor version the plugin was built against.
  uint32_t abi_minor;
  // `sizeof(HuddlePluginDescriptor)` as the plugin was built.
  size_t struct_size;
  // The plugin's name, a static NUL-terminated string of ASCII letters, digits, `-` and `_`,
  // at most 64 bytes (it names the plugin's store namespace `plugin/<name>/`).
  const char *name;
  // The plugin's own version, a static NUL-terminated UTF-8 string (`0.1.0`).
  const char *version;
  // `HUDDLE_CAP_*` bits the plugin requires from the host.
  uint64_t capabilities;
  // Creates an instance. `host` is valid until `destroy` returns (module docs). `config` is
  // the instance's `[plugins.config]` table as TOML text, UTF-8 (possibly empty), borrowed
  // for the call. The plugin calls `host->claim` for what it handles, stores its instance
  // pointer in `*out_instance` and returns `HUDDLE_OK`; on any other return the host does
  // not call `destroy`, so the plugin frees what it allocated before returning, and should
  // `log` why it failed.
  int32_t (*init)(const HuddleHostApi *host, const uint8_t *config, size_t config_len, void **out_instance);
  // Destroys an instance: the plugin stops its threads, frees the instance and returns.
  // No other callback for this instance runs during or after it.
  void (*destroy)(void *instance);
  // A request the plugin claimed. `msg[0..len]` is the complete request; `txn` identifies
  // its server transaction for `respond` (0: nothing to answer); `info` is never null.
  // Return `HUDDLE_OK` once the request is taken (answered now or later); an error makes the
  // host answer it (module docs, "Status codes").
  int32_t (*handle_request)(void *instance, uint64_t txn, const uint8_t *msg, size_t len, const HuddleRequestInfo *info);
  // A response to a request the plugin sent, `request_id` as `send_request` returned it.
  // Provisional responses may come first; exactly one final response (`>= 200`) comes last.
  int32_t (*handle_response)(void *instance, uint64_t request_id, const uint8_t *msg, size_t len);
  // A timer set with `set_timer` fired (once; timers are one-shot). `token` is the value the
  // plugin passed to `set_timer`.
  int32_t (*on_timer)(void *instance, uint64_t timer_id, uint64_t token);
  // A change under a watched prefix. `kind` is `HUDDLE_STORE_*`; `key` is relative to the
  // watched namespace (empty for `HUDDLE_STORE_LAGGED`); `value` is empty unless
  // `HUDDLE_STORE_PUT`.
  int32_t (*on_store_change)(void *instance, uint64_t watch_id, uint32_t kind, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len);
  // A registration event (only with `HUDDLE_CAP_REGISTRATION_EVENTS`); `event` is never null.
  int32_t (*on_registration)(void *instance, const HuddleRegistrationEvent *event);
  // The media session `session` (created by `media_answer`) is connected: ICE and DTLS are
  // up and media can flow.
  int32_t (*media_ready)(void *instance, uint64_t session);
  // One decrypted RTP packet (header and payload) received on stream `mid` of `session`.
  int32_t (*incoming_rtp)(void *instance, uint64_t session, const uint8_t *mid, size_t mid_len, const uint8_t *packet, size_t len);
  // One decrypted RTCP packet (possibly compound) for `session`. What a host delivers: the
  // peer's key-frame requests (PLI/FIR) for streams the plugin sends itself, and, for each
  // stream the host forwards into the session (`media_forward`), a receiver report (RFC 3550,
  // one block, reporter SSRC 0) per stats interval saying what the peer reported it lost.
  // Other feedback (NACK, REMB/TWCC) the host handles itself. Check what a packet is before
  // acting on it (the SDK's `rtcp::asks_for_keyframe`).
  int32_t (*incoming_rtcp)(void *instance, uint64_t session, const uint8_t *packet, size_t len);
  // The media session ended (`HUDDLE_HANGUP_*`); its id is no longer valid.
  int32_t (*media_hangup)(void *instance, uint64_t session, uint32_t reason);
  // (ABI 1.1, optional) A new estimate of the bandwidth available towards the peer of
  // `session`, in bits per second (transport-wide congestion control or REMB), for plugins
  // that adapt what they send (simulcast layer, encoder bitrate).
  int32_t (*media_bitrate)(void *instance, uint64_t session, uint64_t bps);
  // (ABI 1.2, optional) An admin request: `request[0..len]` is a UTF-8 JSON object. The
  // plugin answers by calling `reply(reply_user, json, json_len)` once during this call,
  // then returns `HUDDLE_OK`; `HUDDLE_ERR_NOT_SUPPORTED` when it takes no admin requests
  // (module docs, "Admin requests and events").
  int32_t (*admin_request)(void *instance, const uint8_t *request, size_t len, void (*reply)(void *user, const uint8_t *json, size_t json_len), void *reply_user);
} HuddlePluginDescriptor;

// The type of the exported entry symbol `huddle_plugin_entry_v1`: returns the plugin's static
// descriptor. Must be cheap, idempotent and side-effect free (the host may call it more than
// once); must not return null.
typedef const HuddlePluginDescriptor *(*HuddlePluginEntryFn)(void);

// Visitor of `HuddleHostApi::store_scan` (the type of its `visit` argument), called once per entry on the calling thread during
// the scan. `key` (relative to the namespace) and `value` are borrowed for the call. Return
// 0 to continue, anything else to stop the scan early. Must not call host functions.
typedef int32_t (*HuddleScanVisitor)(void *user, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len);

// (ABI 1.7) A plugin's receiver of incoming RTP on the host's media thread, registered with
// `HuddleHostApi::media_rtp_sink` (module docs, "Incoming RTP on the media thread"): one
// decrypted RTP packet (`packet[0..len]`, header and payload) received on stream `mid` of
// `session`, both borrowed for the call. `user` is the pointer registered with it. Called
// from any host thread, possibly concurrently; must be quick and must not unwind. Returns
// `HUDDLE_OK`, or `HUDDLE_ERR_PANIC` after catching a panic.
typedef int32_t (*HuddleRtpSinkFn)(void *user, uint64_t session, const uint8_t *mid, size_t mid_len, const uint8_t *packet, size_t len);

#ifdef __cplusplus
extern "C" {
#endif
/* The name of the one symbol a plugin exports, and its prototype (see HuddlePluginEntryFn). */
#define HUDDLE_PLUGIN_ENTRY_SYMBOL "huddle_plugin_entry_v1"
const HuddlePluginDescriptor *huddle_plugin_entry_v1(void);
#ifdef __cplusplus
}
#endif

/* (ABI 1.6) The header naming the plugin's transaction (decimal txn) that the host answers
 * 200 OK when the request carrying it succeeds (sdk/src/abi.rs, "Answers made by the host"). */
#define HUDDLE_ANSWER_HEADER "Huddle-Answer"

#endif /* HUDDLE_PLUGIN_H */
