//! The raw plugin ABI: the `#[repr(C)]` tables and constants that cross between the Huddle host
//! and a plugin shared library. `include/huddle_plugin.h` is generated from this file by
//! cbindgen (`sdk/generate-header.sh`); the header and this module are the contract, and a test
//! fails when the checked-in header is stale.
//!
//! Everything here is plain C: integers, pointers, byte slices as `(pointer, length)` pairs and
//! nullable function pointers. No Rust type (`String`, `Vec`, `Box`, `Result`, a trait object,
//! a panic) ever crosses, and nothing allocated on one side is freed on the other.
//!
//! # The two tables
//!
//! Like Janus's `plugin.h`, there is one table per direction:
//!
//! * [`HuddlePluginDescriptor`] (plugin → host): what the plugin is (name, version, ABI version,
//!   the capabilities it requires) and the callbacks the host calls. A plugin library exports
//!   exactly one symbol, `huddle_plugin_entry_v1` ([`HUDDLE_PLUGIN_ENTRY_SYMBOL`]), a function
//!   with no arguments returning a pointer to its descriptor. The ABI major version is part of
//!   the symbol name, so a library built for another major has no symbol this host looks for.
//! * [`HuddleHostApi`] (host → plugin): what the host offers (respond, send requests, the
//!   store, timers, logging, media), passed to the plugin's `init`.
//!
//! Both tables start with `abi_major: u32, abi_minor: u32, struct_size: usize`, so either side
//! can read the version of the other before anything else.
//!
//! # Versioning rules
//!
//! * **Major** ([`HUDDLE_PLUGIN_ABI_MAJOR`]): bumped when anything is removed, reordered or
//!   changes meaning. The host loads only plugins of its own major (the entry symbol carries the
//!   major in its name; the descriptor repeats it and the host checks it), and a plugin (the SDK
//!   does this for Rust plugins) refuses a host table of another major.
//! * **Minor** ([`HUDDLE_PLUGIN_ABI_MINOR`]): bumped when entries are *appended* to a table or
//!   new constants are defined. Tables only grow: a new entry goes at the end, and every entry
//!   added after 1.0 is optional (a nullable function pointer, or a field whose absence, judged
//!   by `struct_size`, means "not there").
//! * **`struct_size`**: the size of the table as the side that filled it knows it. The reader
//!   uses a field only when the field lies entirely within `struct_size`. The host refuses a
//!   descriptor whose `struct_size` is smaller than the 1.0 layout
//!   ([`HUDDLE_PLUGIN_DESCRIPTOR_MIN_SIZE`] in Rust, `sizeof` of the 1.0 struct in C); a plugin
//!   refuses a host table smaller than [`HUDDLE_HOST_API_MIN_SIZE`]. Both minimums are the full
//!   1.0 layouts: there is nothing smaller than 1.0 in major 1.
//! * **Newer host, older plugin** (same major): loads. The host reads only the part of the
//!   descriptor the plugin's `struct_size` covers and treats later callbacks as absent.
//! * **Older host, newer plugin** (same major): loads unless the plugin *requires* a capability
//!   the host does not provide. The plugin must check `HuddleHostApi::struct_size` and the
//!   host's capability bits before using anything newer than 1.0.
//! * **Capabilities**: the descriptor's `capabilities` lists what the plugin cannot work
//!   without (`HUDDLE_CAP_*`). The host refuses the plugin, naming the missing bits, when
//!   `capabilities & !host_capabilities != 0`. Bits unknown to the host count as missing. A
//!   plugin that can use something but does without checks `HuddleHostApi::host_capabilities`
//!   at `init` instead of requiring it.
//! * **Mandatory callbacks**: `init`, `destroy` and `handle_request` are never null. A required
//!   capability makes its callbacks mandatory too: `HUDDLE_CAP_SEND_REQUEST` needs
//!   `handle_response`, `HUDDLE_CAP_TIMERS` needs `on_timer`, `HUDDLE_CAP_STORE_WATCH` needs
//!   `on_store_change`, `HUDDLE_CAP_REGISTRATION_EVENTS` needs `on_registration`, and
//!   `HUDDLE_CAP_MEDIA` needs `media_ready`, `incoming_rtp`, `incoming_rtcp` and
//!   `media_hangup`. The host refuses a descriptor that breaks this, naming the callback.
//! * **Host functions**: `free_buf`, `log`, `claim` and `respond` are never null, nor are
//!   `retarget` (ABI 1.4) and `respond_status` (ABI 1.12) in a table whose `struct_size`
//!   covers them. Every other
//!   host function is non-null exactly when its capability bit is set in `host_capabilities`
//!   (store functions: `HUDDLE_CAP_STORE`; `store_watch`/`store_unwatch`:
//!   `HUDDLE_CAP_STORE_WATCH`; `send_request`: `HUDDLE_CAP_SEND_REQUEST`; timers:
//!   `HUDDLE_CAP_TIMERS`; `media_*`: `HUDDLE_CAP_MEDIA`; `user_exists` (ABI 1.5):
//!   `HUDDLE_CAP_LOCATION`; `media_rtp_sink`, `media_send_rtp_batch` (ABI 1.7):
//!   `HUDDLE_CAP_MEDIA`; `event_wanted` (ABI 1.8): `HUDDLE_CAP_EVENTS`; `send_request_parts`
//!   (ABI 1.10): `HUDDLE_CAP_SEND_REQUEST`; `mem_alloc`, `mem_alloc_zeroed`, `mem_dealloc`,
//!   `mem_realloc` (ABI 1.11): `HUDDLE_CAP_HOST_ALLOCATOR`). Until the media
//!   engine exists the media functions are null and the bit is clear: "not supported".
//!
//! [`crate::loader::load`], [`crate::hosting::PluginEntry::from_raw`] and
//! [`crate::hosting::PluginEntry::check_capabilities`] implement the host's half of these
//! checks; the host in the server calls them rather than re-implementing them.
//!
//! # Lifetimes and ownership
//!
//! * The descriptor, and the `name` and `version` strings it points to, are static: they live
//!   as long as the library stays loaded, and the host never unloads a plugin library in
//!   production. The host never writes to them.
//! * `init` receives a pointer to the host table and its `ctx`. Both are owned by the host and
//!   stay valid from the start of `init` until `destroy` returns (if `init` fails, until `init`
//!   returns). The plugin may keep the pointer and call the host functions during that time.
//! * `init` stores an opaque instance pointer in `*out_instance`. The plugin owns it; the host
//!   passes it back to every callback and, exactly once, to `destroy`, after which it never
//!   uses it again. One library may be instantiated more than once (two `[[plugins]]` entries
//!   with the same `path`); instances share nothing through the ABI.
//! * Every `(pointer, length)` argument is *borrowed for the duration of the call*: the callee
//!   copies what it wants to keep. Pointers may be null when the length is 0. Text arguments
//!   are UTF-8 and not NUL-terminated (the descriptor's `name` and `version` are the only C
//!   strings). SIP messages are the complete wire bytes.
//! * A [`HuddleHostBuf`] written by the host into a plugin's out-parameter is owned by the host
//!   until the plugin hands it back, exactly once, to `free_buf` of the same host table. A
//!   buffer with a null `ptr` holds no value; `free_buf` accepts it and does nothing.
//! * Out-parameters (`out_*`) point to plugin memory that the host writes only when the call
//!   returns [`HUDDLE_OK`] (and, for `store_cas`, on [`HUDDLE_ERR_CONFLICT`]).
//!
//! # Threads and re-entrancy
//!
//! * The host never calls into one plugin instance concurrently: each callback returns before
//!   the next one for that instance starts. The one exception is opt-in: an RTP sink registered with
//!   `media_rtp_sink` (ABI 1.7, "Incoming RTP on the media thread") runs concurrently with
//!   the callbacks. Calls may come from different threads over time, so
//!   a plugin's instance state must not rely on thread-local storage.
//! * Callbacks must return quickly. A request is answered later, through `respond`, from
//!   whichever callback or plugin thread has the answer; blocking work belongs on the plugin's
//!   own threads.
//! * Host functions are thread-safe: a plugin may call them from any thread, at any time between
//!   the start of `init` and the return of `destroy`, except `claim`, which works only during
//!   `init` (elsewhere it returns [`HUDDLE_ERR_BAD_STATE`]). A plugin that starts threads stops
//!   them in `destroy` before returning.
//! * The host never calls back into the plugin from inside a host function, except
//!   `store_scan`'s visitor, which runs on the calling thread during the call and must not call
//!   host functions itself.
//!
//! # Status codes
//!
//! Every function that can fail returns an `int32_t`: [`HUDDLE_OK`] (0) or a negative
//! `HUDDLE_ERR_*`. A plugin callback that returns an error for a request it has not answered
//! finally makes the host answer it: [`HUDDLE_ERR_BUSY`] → `503 Service Unavailable` with
//! `Retry-After`, anything else → `500 Server Internal Error`; the host logs the code with the
//! plugin's name. [`HUDDLE_ERR_PANIC`] is what a Rust plugin's trampolines return after catching
//! a panic; the host may disable a plugin that panics, per its configuration.
//!
//! # Routing: claims
//!
//! During `init` the plugin tells the host what it handles by calling `claim` once per
//! [`HuddleClaim`]. A claim has three optional fields (an empty field matches anything): a SIP
//! method (exact, case-sensitive: `MESSAGE`), an Event package (case-insensitive: `presence`,
//! for SUBSCRIBE/NOTIFY/PUBLISH), and a Request-URI user pattern (case-sensitive, `*` matches any
//! run of characters: `echo`, `room-*`). A request matches a claim when it matches every
//! non-empty field; a claim with all fields empty is refused, and so is one whose method is
//! `REGISTER` (the registrar's), `ACK` or `CANCEL` (these follow their transaction). The host
//! considers only requests whose Request-URI names one of its own domains, after validation and
//! authentication. Two claims of different plugins that some request could match both are a
//! conflict, and the host refuses to start, naming both plugins and claims
//! ([`crate::claims::Claim::overlaps`] decides it). Configuration may adjust a plugin's claims;
//! the host applies that after `init`.
//!
//! # Requests, transactions and responses
//!
//! `handle_request` gets the complete request bytes, a transaction id (`txn`, never 0 for a
//! request that expects a response) and a [`HuddleRequestInfo`]. The plugin answers with
//! `respond(ctx, txn, bytes, len)`: any number of provisional responses, then exactly one
//! final response (`>= 200`), each the complete response bytes (Via, From, To, Call-ID and
//! CSeq copied from the request, as the SDK's response builder does). After the final response
//! the `txn` is gone ([`HUDDLE_ERR_UNKNOWN_TRANSACTION`]). Retransmissions are absorbed by the
//! host's transaction layer and never reach the plugin. An `ACK` for a 2xx arrives with
//! `txn == 0` (nothing to answer). A `CANCEL` is answered `200` by the host and arrives with
//! `txn == 0` and `related_txn` naming the INVITE it cancels, which the plugin should answer
//! `487 Request Terminated`.
//!
//! `send_request(ctx, bytes, len, &id)` sends a request the plugin built (start line and every
//! header except Via: the host prepends its own Via and routes the request through its
//! transaction layer and location service, forking to every registered contact as its proxy
//! would). Every successful `send_request` leads to zero or more provisional responses and
//! exactly one final response through `handle_response`, matched by the request id; when no
//! response comes the host synthesises one (`408` on timeout, `480` when the target is not
//! registered, `503` on transport failure). Delivered responses have the host's Via removed.
//!
//! # Final responses by status (ABI 1.12)
//!
//! `respond_status(ctx, txn, response)` (host table, optional by `struct_size`; never null in a
//! host whose table covers it) answers server transaction `txn` finally with the status,
//! reason phrase and extra header fields of a [`HuddleStatusResponse`], the host writing the
//! response from the request it holds (Via stamped with `received`/`rport`, From, To with a
//! tag of the host's, Call-ID, CSeq, the fields given in order, `Content-Length: 0`), where
//! with `respond` the plugin writes the bytes and the host parses them again to check them. A
//! plugin answering with no body and no To tag of its own chosen yet (no provisional response
//! carried one) calls this; the SDK's `Host::reply` does. The To tag is the host's, unknown to
//! the plugin: a response whose tag the plugin must name later (a 2xx that starts a dialog: to
//! an INVITE, SUBSCRIBE or REFER without a To tag) or repeat (after a provisional response
//! with a tag) goes through `respond`. The host may add fields of its own (Huddle adds
//! `Server`). Everything else is `respond`'s for a final response: the transaction is gone
//! afterwards.
//!
//! Refused with [`HUDDLE_ERR_INVALID_ARGUMENT`], nothing sent: a status outside 200..=699
//! (provisional responses go through `respond`); a reason phrase with a control character
//! (CR, LF, NUL, any below 0x20 but HTAB, DEL); a field name that is not a token, or names a
//! field the host writes (Via, From, To, Call-ID, CSeq, Content-Length, Content-Type, Server,
//! compact forms included); a value with a control character; text that is not UTF-8; a null `response`, or one whose `struct_size` is below
//! [`HUDDLE_STATUS_RESPONSE_MIN_SIZE`]. [`HUDDLE_ERR_TOO_LARGE`]: more than
//! [`HUDDLE_STATUS_RESPONSE_MAX_FIELDS`] fields, or more text than the host's message size
//! limit. [`HUDDLE_ERR_UNKNOWN_TRANSACTION`] as for `respond`. [`HUDDLE_ERR_NOT_SUPPORTED`]:
//! this host cannot write responses (it holds no request): write the bytes and call
//! `respond`. A host before 1.12 has no such entry: the same. The response and everything it
//! points to are borrowed for the call.
//!
//! # Requests in parts (ABI 1.10)
//!
//! `send_request_parts(ctx, parts, &id)` (host table, optional by `struct_size`, present with
//! [`HUDDLE_CAP_SEND_REQUEST`]) sends the same request `send_request` would, given as its
//! parts ([`HuddleRequestParts`]: method, Request-URI, header fields as [`HuddleHeader`] name
//! and value pairs in order, body) instead of bytes. The host writes the request once, with
//! its own Via, recording where each part went, where from bytes it would parse them first: a
//! plugin that has the parts at hand (the SDK's `NewRequest`) saves writing them and the host
//! saves reading them. Everything else is `send_request`'s: the id, the responses through
//! `handle_response`, the host's headers (`Huddle-Answer` and the others the host documents
//! are given as fields like any other and taken out before sending).
//!
//! The host writes `method SP uri SP SIP/2.0`, then each field as `name: value` in the order
//! given, then `Content-Length` (the body's length), the blank line and the body. Refused with
//! [`HUDDLE_ERR_INVALID_ARGUMENT`] (and the reason in the host's log): a method that is not a
//! token; a Request-URI that is empty, starts with `<`, has no `:`, or has white space, a line
//! break or a NUL; a name that is not a token; a value with a CR, LF or NUL; a `Via` or
//! `Content-Length` field (the host writes them); From, To, Call-ID or CSeq missing or given
//! more than once, or a CSeq that is not a number and `method`; text that is not UTF-8; and
//! everything `send_request` refuses (ACK, CANCEL, a From or To that is not a name-addr).
//! [`HUDDLE_ERR_TOO_LARGE`]: the request written would be larger than the host's message size
//! limit, or have more header fields than it parses. White space around a value is kept in
//! the bytes and left out of the value, as a parser reads it. `parts` and everything it points
//! to are borrowed for the call. A host before 1.10 has no such entry: write the bytes and call
//! `send_request` (the SDK does).
//!
//! # Answers made by the host (ABI 1.6)
//!
//! A plugin that answers one of its transactions `200 OK` as soon as a request it sends
//! succeeds (a message store relaying a MESSAGE to an online device) may put a
//! [`HUDDLE_ANSWER_HEADER`] header naming that transaction (its `txn` as a decimal number) in
//! the request. The host strips the header before sending, and on the request's first 2xx
//! answers the transaction `200 OK` itself, unless the plugin answered it finally already, or
//! it is an INVITE, or not the plugin's; then it delivers the 2xx through `handle_response` as
//! usual, but without urgency when it answered: the 2xx waits for the next callback that
//! wakes the plugin anyway, at most a few tens of milliseconds (the host's
//! `UNHURRIED_DEADLINE`, 20 ms). A plugin that gets that 2xx while the transaction is still unanswered on its side
//! knows the host answered it (its own `respond` would get
//! [`HUDDLE_ERR_UNKNOWN_TRANSACTION`]). A failure changes nothing: the plugin gets it and
//! answers. The caller's `200` then leaves without a round trip through the plugin. Hosts
//! before 1.6 forward the header and never answer: check the host's minor version first.
//!
//! # Retargeting (ABI 1.4)
//!
//! `retarget(ctx, txn, uri, uri_len)` (host table, optional by `struct_size`; never null in a
//! host whose table covers it) is what a SIP proxy calls retargeting: the plugin gives up an
//! out-of-dialog server transaction it has not answered finally (an INVITE it claimed) and the
//! host routes the request again as if its Request-URI were `uri`. The plugin whose claim
//! matches then gets the request with that Request-URI and every other byte as it arrived
//! (headers, SDP), with the same [`HuddleRequestInfo`] (authenticated user, or none for a
//! guest) and the same Record-Route values; it may be the same plugin. From the call on, `txn`
//! is not the caller's any more ([`HUDDLE_ERR_UNKNOWN_TRANSACTION`] for `respond`): a later
//! CANCEL goes to the new owner, and ACK and in-dialog requests follow the Contact the new owner
//! answers with. Provisional responses the plugin sent stay sent; a plugin that retargets
//! should have sent none but `100`.
//!
//! Returned at once: [`HUDDLE_ERR_INVALID_ARGUMENT`] when `uri` is not a `sip:`/`sips:` URI,
//! [`HUDDLE_ERR_UNKNOWN_TRANSACTION`] when `txn` is not an open transaction of this plugin
//! (answered finally, retargeted already, or never its), [`HUDDLE_ERR_BAD_STATE`] for an
//! in-dialog request, and [`HUDDLE_ERR_BUSY`] when the host cannot take the command now (the
//! transaction stays the plugin's). Decided by the host afterwards, which then answers the
//! request itself: `404 Not Found` when `uri` does not name this server or no claim matches it,
//! `482 Loop Detected` when the request was retargeted three times already, `487` when it was
//! cancelled meanwhile, and the digest challenge (`407`) when the new claim is not open to
//! guests and the request carries no authenticated user while its From names a local user, as
//! on first arrival (the client's authenticated retry reaches the first plugin again, which
//! retargets again).
//!
//! # Users (ABI 1.5)
//!
//! `user_exists(ctx, user, user_len)` (host table, optional by `struct_size`, present with
//! [`HUDDLE_CAP_LOCATION`]) answers whether the host has an account named `user` (a Request-URI
//! user part, UTF-8, unescaped): [`HUDDLE_OK`] when it has, [`HUDDLE_ERR_NOT_FOUND`] when it has
//! not (a name no account can have, empty or with characters user names never contain, is
//! simply not found). The answer is the host's accounts as they are at the moment of the call
//! (every account written or removed before the call counts; `huddle user add` and `huddle
//! user remove` write them with the server stopped), with no SIP round trip: Huddle answers
//! from the account names it holds in memory, kept current by a watch on its store, and reads
//! the store per call where that store may have other writers. Whether the user has
//! bindings is what registration events and the `location` namespace say (events come in order
//! with the requests that follow them); this call says nothing about bindings, so that a plugin
//! never mixes two views of them that may disagree for a moment. The accounts' credentials stay
//! the host's: there is no other way to read them.
//!
//! # The store
//!
//! Each plugin has its own namespace (`plugin/<name>/` in the host's store). Writes
//! (`store_put`, `store_delete`, `store_cas`) always go to it, with keys relative to it. Reads
//! and watches (`store_get`, `store_scan`, `store_watch`) take a namespace name: empty for the
//! plugin's own, or a shared namespace the host documents and lets plugins read — `location`
//! (the registrar's bindings, keyed by address-of-record) and `plugin/<other>` for what another
//! plugin documents. Reading a namespace the host does not offer is
//! [`HUDDLE_ERR_PERMISSION_DENIED`]. Keys passed to and reported by these functions are always
//! relative to the namespace. Values are opaque bytes; by convention they are self-describing
//! records that survive upgrades.
//!
//! A watch reports every write committed under its prefix after it was created, in commit
//! order, through `on_store_change`: [`HUDDLE_STORE_PUT`] (key and new value),
//! [`HUDDLE_STORE_DELETE`] (key, no value), or [`HUDDLE_STORE_LAGGED`] (no key: changes were
//! dropped because the plugin fell behind; rescan the prefix).
//!
//! `store_batch` (ABI 1.3, optional by `struct_size`, present with [`HUDDLE_CAP_STORE`])
//! applies an array of [`HuddleStoreOp`]s (puts and deletes in the plugin's own namespace, in
//! array order) in ONE durable commit: it returns `HUDDLE_OK` only once every op is on disk,
//! and on any error none of them is applied. One `fsync` for many writes is what makes it
//! worth having next to `store_put`. A batch over the host's limits (operations, or bytes of
//! keys and values; `[store] plugin_batch_max_ops` / `plugin_batch_max_bytes`) is refused
//! whole with [`HUDDLE_ERR_TOO_LARGE`] (the host logs which limit): split it and try again.
//! An unknown `op`, or a null pointer with a non-zero length, is
//! [`HUDDLE_ERR_INVALID_ARGUMENT`]. An empty batch is `HUDDLE_OK` at once.
//!
//! # Admin requests and events (ABI 1.2)
//!
//! `admin_request` (descriptor, optional) is how the host's admin HTTP API asks a plugin to do
//! something or to describe its state (the conference plugin: list rooms, kick, mute, lock,
//! change the layout). The request is a UTF-8 JSON object, `{"command": "...", ...}`, whose
//! commands the plugin documents. The plugin answers *during the call* by calling
//! `reply(reply_user, json, len)` once with a UTF-8 JSON value (borrowed for that call; the host
//! copies it), then returns `HUDDLE_OK`. A command that failed is still answered `HUDDLE_OK`,
//! with `{"error": {"code": "...", "message": "..."}}`: `code` is one of `not_found`,
//! `bad_request`, `conflict`, `unsupported` (the host maps them to HTTP 404, 400, 409, 501).
//! Returning [`HUDDLE_ERR_NOT_SUPPORTED`] (or having no `admin_request`, as every plugin built
//! before 1.2) means "this plugin takes no admin requests"; any other error code is a failure
//! the host reports as such. The call runs on the plugin's thread like every other callback,
//! so it must be quick: what takes long (a BYE and its answer) is started and not awaited.
//!
//! `emit_event` (host table, with [`HUDDLE_CAP_EVENTS`]) lets a plugin raise an event for the
//! host's webhooks: `kind` is a dotted name (`room.created`, `participant.joined`), `json` a
//! UTF-8 JSON object with its details. The host queues it and returns at once; it never blocks
//! the plugin (a full queue drops the event, counted and logged by the host, and still returns
//! `HUDDLE_OK`: events are best effort by design). `HUDDLE_ERR_INVALID_ARGUMENT` for a kind that
//! is not `[a-z0-9._-]{1,64}` or a body that is not a JSON object.
//!
//! # The request's index and binary source (ABI 1.9)
//!
//! [`HuddleRequestInfo`] grew at its end (a host before 1.9 passes the 1.0 layout, with a
//! `struct_size` that ends at `related_txn`; a plugin reads a field only when `struct_size`
//! covers it, and accepts any `struct_size` from [`HUDDLE_REQUEST_INFO_MIN_SIZE`] up):
//!
//! * `source_family` and `source_addr`: the source IP in binary ([`HUDDLE_ADDR_IPV4`]: the
//!   first 4 bytes of `source_addr`, network order; [`HUDDLE_ADDR_IPV6`]: all 16;
//!   [`HUDDLE_ADDR_NONE`]: unknown), so the plugin need not parse `source_ip` back. The text
//!   is still filled in, with the same meaning as before.
//! * `fields`, `fields_len`, `start_line_end`, `headers_end`, `body_start`, `body_end`: where
//!   the host's own parse of the request found its parts, as byte offsets into `msg`: one
//!   [`HuddleField`] per header field, in order (a folded field is one entry, its line
//!   breaks inside `line_start..line_end`); the end of the Request-Line including its line
//!   terminator; the start of the blank line that ends the header section; the body
//!   (`Content-Length` bytes). A plugin that splits messages itself can take these instead of
//!   scanning the header section again. `fields` is null (and the rest 0) when the host has no
//!   index for the request; a plugin must then parse the bytes, as before 1.9. The index is
//!   borrowed for the call like the rest of the info. A plugin that uses it still checks it
//!   against the bytes (the SDK does, and parses the bytes when any check fails).
//!
//! # Events nobody takes (ABI 1.8)
//!
//! `event_wanted(ctx, kind, kind_len)` (host table, optional by `struct_size`, present with
//! [`HUDDLE_CAP_EVENTS`]) tells a plugin before it builds an event's details whether the host
//! would deliver an event of `kind` raised now: [`HUDDLE_OK`] when some webhook takes that
//! kind, [`HUDDLE_ERR_NOT_FOUND`] when `emit_event` would accept and drop it (no webhooks, or
//! every webhook filters the kind out). A plugin raising an event per message or per call
//! asks first and skips the JSON when nobody takes it. The answer is about the moment of the
//! call (webhooks start after plugins' `init`): ask when about to raise, not once at `init`.
//! `HUDDLE_ERR_INVALID_ARGUMENT` for a kind `emit_event` would refuse. Hosts before 1.8 have no
//! such call: build and raise the event as before.
//!
//! # Incoming RTP on the media thread (ABI 1.7)
//!
//! By default every incoming RTP packet reaches the plugin like every other callback: queued
//! for the instance and delivered through `incoming_rtp`, one call at a time, on the thread
//! that drives the instance. For a media plugin that costs two thread hand-offs per packet
//! (the host's media thread, then the instance's thread) before the plugin can pass the packet
//! on to threads of its own (a decoder's). A plugin whose handling of incoming RTP is
//! thread-safe can opt out of the queue, as Janus plugins do: `media_rtp_sink(ctx, sink,
//! user)` (host table, optional by `struct_size`, present with [`HUDDLE_CAP_MEDIA`]) registers
//! `sink` ([`HuddleRtpSinkFn`]), and from then on the host calls `sink(user, session, mid,
//! mid_len, packet, len)` directly on its media thread for every incoming RTP packet it would
//! have delivered to `incoming_rtp` (the instance's own sessions and the streams it taps),
//! instead of queueing it. Everything else (`media_ready`, `incoming_rtcp`, `media_bitrate`,
//! `media_hangup`, requests, timers) keeps the one-call-at-a-time path. A plugin that never
//! calls `media_rtp_sink` (every plugin built before 1.7) keeps today's behaviour.
//!
//! The sink's contract (the plugin's promise):
//!
//! * **Thread-safe.** It is called from the host's media threads, concurrently with the
//!   instance's callbacks and the plugin's own threads, and possibly concurrently with itself
//!   (today the host has one media thread; do not rely on it). Everything it touches must be
//!   synchronised; in Rust, it is a `Send + Sync` value ([`crate::RtpSink`]).
//! * **Quick and non-blocking.** It runs on the thread that moves every leg's media: copy the
//!   packet where it goes (a decoder's queue) and return. No store call, no waiting on a lock
//!   a slow thread holds, no `media_answer`. Other host functions may be called from it
//!   (`media_send_rtp`, `media_request_keyframe`, `log`); `media_rtp_sink` may not
//!   ([`HUDDLE_ERR_BAD_STATE`]: it would wait for the very call it is made from).
//! * **Order and lifetimes of sessions.** Packets of one stream arrive in order. A packet may
//!   arrive before the instance's thread has handled `media_ready` for its session, or after
//!   `media_hangup` was queued for it: the sink ignores sessions it does not know (or no longer
//!   knows). The packet and `mid` are borrowed for the call.
//! * **Never unwinds.** A Rust plugin's sink catches panics at the boundary (the SDK's
//!   trampoline does) and returns [`HUDDLE_ERR_PANIC`]; the host counts and logs it like a
//!   panic in a callback, and with the instance's `on_panic = "disable"` disables the instance
//!   (its sink is not called again). Any other return value is ignored: a packet the sink did
//!   not want is simply dropped.
//!
//! The host's promise: `sink` and `user` are used until the plugin replaces them (another
//! `media_rtp_sink` call) or clears them (`sink` null), and never after `destroy` starts. When
//! `media_rtp_sink` returns, no call of the previous sink is running or will start, so the
//! plugin may free the previous `user` then (the call waits for a delivery in progress: do not
//! call it while holding a lock the sink takes). Returns [`HUDDLE_OK`], or
//! [`HUDDLE_ERR_BAD_STATE`] from inside a sink.
//!
//! # Sending one packet to many legs (ABI 1.7)
//!
//! `media_send_rtp_batch(ctx, packets, count)` (host table, optional by `struct_size`, present
//! with [`HUDDLE_CAP_MEDIA`]) sends `count` [`HuddleRtpOut`]s (each as `media_send_rtp` would:
//! a session, a stream, a plain RTP packet) in one crossing into the media engine, where
//! `media_send_rtp` costs one crossing (and possibly one wake-up of the media thread) per
//! packet. An MCU sending each composite packet to every receiver (each with its own sequence
//! numbers) makes one call per composite packet instead of one per receiver. Every entry is
//! checked as `media_send_rtp` checks its arguments; an entry that fails (a session that just
//! ended: [`HUDDLE_ERR_NOT_FOUND`]; bytes that are not RTP: [`HUDDLE_ERR_INVALID_ARGUMENT`]) is
//! skipped, the others are still sent, and the call returns the first such error.
//! [`HUDDLE_ERR_BUSY`]: the engine's queue is full and nothing was sent. Everything is
//! borrowed for the call; `count` 0 is [`HUDDLE_OK`] at once.
//!
//! # The host's allocator (ABI 1.11)
//!
//! `mem_alloc(size, align)`, `mem_alloc_zeroed(size, align)`, `mem_dealloc(ptr, size, align)`
//! and `mem_realloc(ptr, size, align, new_size)` (host table, optional by `struct_size`, all
//! four present exactly with [`HUDDLE_CAP_HOST_ALLOCATOR`]) lend a plugin library the allocator
//! the host runs on, with the contract of Rust's `GlobalAlloc`: `align` a power of two, `size`
//! (and `new_size`) non-zero and at most `isize::MAX` once rounded up to `align`; a block is
//! released or resized with the size and alignment it was made with. Any other request gets a
//! null pointer (`mem_dealloc` ignores it); so does a failed allocation. Nothing unwinds. They
//! take no `ctx`: they are the process's, valid for its whole life (before `init` returns, after
//! `destroy`, on any thread, from thread-local destructors), not an instance's.
//!
//! A library takes the lent allocator only if nothing it allocated is still to be released by
//! another allocator: the Rust SDK's `HostAllocator` (opt-in, `use_host_allocator!`) switches to
//! it at the first `init` when nothing was allocated before, and otherwise, or on a host before
//! 1.11, stays on the system allocator for the library's whole life. Memory of the lent
//! allocator still belongs to the plugin: the "nothing allocated on one side is freed on the
//! other" rule above is about ownership across the boundary, which this does not change.
#![allow(unsafe_code)]
// The function-pointer types are written out in the tables so the generated header shows each
// signature where it is documented.
#![allow(clippy::type_complexity)]

use std::ffi::{c_char, c_void};

/// The ABI major version. Part of the entry symbol's name.
pub const HUDDLE_PLUGIN_ABI_MAJOR: u32 = 1;
/// The ABI minor version this SDK was built with.
pub const HUDDLE_PLUGIN_ABI_MINOR: u32 = 12;
/// (ABI 1.6) The header naming the plugin's transaction the host answers `200 OK` when the
/// request carrying it succeeds (module docs, "Answers made by the host").
pub const HUDDLE_ANSWER_HEADER: &str = "Huddle-Answer";
/// The one symbol a plugin library exports: `huddle_plugin_entry_v<major>`, of type
/// [`HuddlePluginEntryFn`].
pub const HUDDLE_PLUGIN_ENTRY_SYMBOL: &str = "huddle_plugin_entry_v1";

/// Success.
pub const HUDDLE_OK: i32 = 0;
/// The callee failed for a reason of its own (a store I/O error, a host-side bug). Logged.
pub const HUDDLE_ERR_INTERNAL: i32 = -1;
/// A null pointer where one is required, text that is not UTF-8, bytes that are not a SIP
/// message of the expected kind, an invalid claim.
pub const HUDDLE_ERR_INVALID_ARGUMENT: i32 = -2;
/// No such key, timer, watch or media session.
pub const HUDDLE_ERR_NOT_FOUND: i32 = -3;
/// `store_cas` found a value other than the expected one.
pub const HUDDLE_ERR_CONFLICT: i32 = -4;
/// `respond` for a transaction that does not exist or has its final response already.
pub const HUDDLE_ERR_UNKNOWN_TRANSACTION: i32 = -5;
/// The function or callback is absent: its capability is not provided.
pub const HUDDLE_ERR_NOT_SUPPORTED: i32 = -6;
/// A namespace the plugin may not read, or a claim the host reserves.
pub const HUDDLE_ERR_PERMISSION_DENIED: i32 = -7;
/// A key, value or message larger than the host accepts.
pub const HUDDLE_ERR_TOO_LARGE: i32 = -8;
/// Overloaded: try again later. From a plugin callback: the host answers 503 with Retry-After.
pub const HUDDLE_ERR_BUSY: i32 = -9;
/// Called at the wrong time (`claim` outside `init`, any call after `destroy`).
pub const HUDDLE_ERR_BAD_STATE: i32 = -10;
/// A plugin callback panicked; the panic was caught at the boundary.
pub const HUDDLE_ERR_PANIC: i32 = -11;
/// The other side's table has another major version, is too small, or lacks a mandatory entry.
pub const HUDDLE_ERR_INCOMPATIBLE: i32 = -12;
/// `init` refused its configuration (the plugin logged why).
pub const HUDDLE_ERR_INVALID_CONFIG: i32 = -13;
/// A plugin-specific failure (the plugin logged why).
pub const HUDDLE_ERR_PLUGIN: i32 = -14;
/// (ABI 1.1) `media_answer`: the offer is not SDP that can be parsed. Answer the INVITE
/// `400`; `*out_answer` holds the reason phrase to use (see `media_answer`).
pub const HUDDLE_ERR_SDP_MALFORMED: i32 = -15;
/// (ABI 1.1) `media_answer`: the offer is SDP the host cannot answer (plain RTP/AVP from a
/// SIP phone, no DTLS fingerprint or ICE, no codec in common). Answer the INVITE `488`;
/// `*out_answer` holds the reason phrase, optionally followed by a line feed and the text of
/// a `Warning: 399` header to add.
pub const HUDDLE_ERR_SDP_NOT_ACCEPTABLE: i32 = -16;

/// Capability: the key-value store (`store_get`, `store_put`, `store_delete`, `store_cas`,
/// `store_scan`).
pub const HUDDLE_CAP_STORE: u64 = 1;
/// Capability: prefix watches (`store_watch`, `store_unwatch`, and the `on_store_change`
/// callback).
pub const HUDDLE_CAP_STORE_WATCH: u64 = 2;
/// Capability: read access to the `location` namespace (who is registered, with which flows).
pub const HUDDLE_CAP_LOCATION: u64 = 4;
/// Capability: registration events (the `on_registration` callback). The host calls
/// `on_registration` only for plugins that require this capability.
pub const HUDDLE_CAP_REGISTRATION_EVENTS: u64 = 8;
/// Capability: sending requests (`send_request`, and the `handle_response` callback).
pub const HUDDLE_CAP_SEND_REQUEST: u64 = 16;
/// Capability: timers (`set_timer`, `cancel_timer`, and the `on_timer` callback).
pub const HUDDLE_CAP_TIMERS: u64 = 32;
/// Capability: the media engine (`media_*` host functions and media callbacks).
pub const HUDDLE_CAP_MEDIA: u64 = 64;
/// Every capability bit defined in ABI 1.0.
pub const HUDDLE_CAP_ALL_V1_0: u64 = 127;
/// (ABI 1.2) Capability: raising events for the host's webhooks (`emit_event`). A plugin that
/// can do without events checks `host_capabilities` rather than requiring it.
pub const HUDDLE_CAP_EVENTS: u64 = 128;
/// (ABI 1.11) Capability: the host lends its allocator (`mem_alloc`, `mem_alloc_zeroed`,
/// `mem_dealloc`, `mem_realloc`; module docs, "The host's allocator"). Never required: a plugin
/// that can use it checks `host_capabilities`.
pub const HUDDLE_CAP_HOST_ALLOCATOR: u64 = 256;

/// Log level: an error.
pub const HUDDLE_LOG_ERROR: u32 = 1;
/// Log level: a warning.
pub const HUDDLE_LOG_WARN: u32 = 2;
/// Log level: information.
pub const HUDDLE_LOG_INFO: u32 = 3;
/// Log level: debugging detail.
pub const HUDDLE_LOG_DEBUG: u32 = 4;
/// Log level: tracing detail.
pub const HUDDLE_LOG_TRACE: u32 = 5;

/// The request came from the host itself, or the transport is unknown.
pub const HUDDLE_TRANSPORT_OTHER: u32 = 0;
/// SIP over UDP.
pub const HUDDLE_TRANSPORT_UDP: u32 = 1;
/// SIP over TCP.
pub const HUDDLE_TRANSPORT_TCP: u32 = 2;
/// SIP over TLS.
pub const HUDDLE_TRANSPORT_TLS: u32 = 3;
/// SIP over WebSocket (RFC 7118).
pub const HUDDLE_TRANSPORT_WS: u32 = 4;
/// SIP over secure WebSocket.
pub const HUDDLE_TRANSPORT_WSS: u32 = 5;

/// `on_store_change`: the key was written; the value is its new value.
pub const HUDDLE_STORE_PUT: u32 = 1;
/// `on_store_change`: the key was deleted; no value.
pub const HUDDLE_STORE_DELETE: u32 = 2;
/// `on_store_change`: changes were dropped; no key or value. Rescan the watched prefix.
pub const HUDDLE_STORE_LAGGED: u32 = 3;

/// `store_cas` flag: the key must be absent (`expected` is ignored).
pub const HUDDLE_CAS_EXPECT_ABSENT: u32 = 1;
/// `store_cas` flag: on a match, delete the key (`new_value` is ignored).
pub const HUDDLE_CAS_DELETE: u32 = 2;

/// (ABI 1.3) [`HuddleStoreOp::op`]: set `key` to `value`.
pub const HUDDLE_STORE_OP_PUT: u32 = 1;
/// (ABI 1.3) [`HuddleStoreOp::op`]: delete `key` (absent already is not an error); `value` is
/// ignored.
pub const HUDDLE_STORE_OP_DELETE: u32 = 2;

/// Registration event: an address-of-record went from no bindings to at least one.
pub const HUDDLE_REG_ONLINE: u32 = 1;
/// Registration event: an address-of-record lost its last binding (expiry, unregister, or the
/// connection of a WebSocket flow closed).
pub const HUDDLE_REG_OFFLINE: u32 = 2;
/// Registration event: the bindings of an address-of-record changed while it stayed online.
pub const HUDDLE_REG_UPDATED: u32 = 3;

/// Media hang-up reason: the remote side or a SIP BYE ended the session.
pub const HUDDLE_HANGUP_NORMAL: u32 = 0;
/// Media hang-up reason: ICE or DTLS failed or timed out.
pub const HUDDLE_HANGUP_TRANSPORT: u32 = 1;
/// Media hang-up reason: the host is shutting down.
pub const HUDDLE_HANGUP_SHUTDOWN: u32 = 2;

/// A byte buffer allocated by the host and lent to the plugin.
///
/// Ownership: the host owns `ptr[0..len]`. The plugin may read it until it passes the buffer
/// back, exactly once, to `HuddleHostApi::free_buf` of the table it came from. `token` is the
/// host's bookkeeping; the plugin leaves it untouched. A buffer whose `ptr` is null holds no
/// value (an absent key); passing it to `free_buf` is allowed and does nothing. A present but
/// empty value has a non-null `ptr` and `len == 0`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HuddleHostBuf {
    /// Start of the bytes, or null for "no value".
    pub ptr: *const u8,
    /// Number of bytes at `ptr`.
    pub len: usize,
    /// Host bookkeeping (for example the allocation's capacity); opaque to the plugin.
    pub token: *mut c_void,
}

impl HuddleHostBuf {
    /// The empty buffer ("no value").
    pub const NONE: HuddleHostBuf = HuddleHostBuf {
        ptr: std::ptr::null(),
        len: 0,
        token: std::ptr::null_mut(),
    };
}

/// One routing claim, passed to `HuddleHostApi::claim` during `init`. See the module docs,
/// "Routing: claims". Every text field is borrowed for the call (the host copies it), UTF-8,
/// not NUL-terminated; a zero length means "any".
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HuddleClaim {
    /// `sizeof(HuddleClaim)` as the plugin knows it.
    pub struct_size: usize,
    /// SIP method, exact and case-sensitive (`MESSAGE`).
    pub method: *const u8,
    /// Length of `method` in bytes.
    pub method_len: usize,
    /// Event package, case-insensitive (`presence`).
    pub event: *const u8,
    /// Length of `event` in bytes.
    pub event_len: usize,
    /// Request-URI user pattern, case-sensitive, `*` matches any run of characters
    /// (`room-*`).
    pub user: *const u8,
    /// Length of `user` in bytes.
    pub user_len: usize,
    /// (ABI 1.2, optional by `struct_size`) `HUDDLE_CLAIM_*` bits; bits the host does not know
    /// are ignored.
    pub flags: u32,
}

/// (ABI 1.2) `HuddleClaim::flags`: out-of-dialog requests this claim matches reach the plugin
/// without the digest challenge (407) the host sends callers who name a local user in From,
/// unless they carry credentials; the plugin sees no `auth_user` and decides what a guest may
/// do (a public conference room).
pub const HUDDLE_CLAIM_GUESTS: u32 = 1;

/// (ABI 1.3) One write of `HuddleHostApi::store_batch`. The key and value are borrowed for the
/// call, relative to the plugin's own namespace; a zero length allows a null pointer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HuddleStoreOp {
    /// `HUDDLE_STORE_OP_*`.
    pub op: u32,
    /// The key.
    pub key: *const u8,
    /// Length of `key` in bytes.
    pub key_len: usize,
    /// The new value (`HUDDLE_STORE_OP_PUT`; ignored otherwise).
    pub value: *const u8,
    /// Length of `value` in bytes.
    pub value_len: usize,
}

/// The smallest `struct_size` a major-1 host accepts in a claim: the 1.0 layout, which ends
/// with `user_len`.
pub const HUDDLE_CLAIM_MIN_SIZE: usize = std::mem::offset_of!(HuddleClaim, flags);

/// What the host knows about a request beyond its bytes. Borrowed for the duration of
/// `handle_request`, like everything it points to.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HuddleRequestInfo {
    /// `sizeof(HuddleRequestInfo)` as the host knows it. Fields beyond it are absent.
    pub struct_size: usize,
    /// `HUDDLE_TRANSPORT_*` the request arrived on.
    pub transport: u32,
    /// Source port of the request (0 when unknown).
    pub source_port: u32,
    /// Source IP address as text (`192.0.2.1`, `2001:db8::1`), UTF-8, not NUL-terminated;
    /// empty when unknown. Used for the top Via's `received`/`rport` in responses.
    pub source_ip: *const u8,
    /// Length of `source_ip` in bytes.
    pub source_ip_len: usize,
    /// The user the host authenticated (digest username), UTF-8; empty when the request was
    /// not authenticated.
    pub auth_user: *const u8,
    /// Length of `auth_user` in bytes.
    pub auth_user_len: usize,
    /// For a CANCEL: the `txn` of the INVITE it cancels. Otherwise 0.
    pub related_txn: u64,
    /// (ABI 1.9) `HUDDLE_ADDR_*`: how to read `source_addr`. Module docs, "The request's index
    /// and binary source".
    pub source_family: u32,
    /// (ABI 1.9) The source IP, network byte order: 4 bytes for `HUDDLE_ADDR_IPV4`, 16 for
    /// `HUDDLE_ADDR_IPV6`, the rest zero.
    pub source_addr: [u8; 16],
    /// (ABI 1.9) The host's index of the request's header fields, in order, or null when it
    /// has none (parse the bytes then).
    pub fields: *const HuddleField,
    /// (ABI 1.9) Number of entries in `fields`.
    pub fields_len: usize,
    /// (ABI 1.9) Offset just after the Request-Line's line terminator (0 without `fields`).
    pub start_line_end: u32,
    /// (ABI 1.9) Offset of the blank line that ends the header section (0 without `fields`).
    pub headers_end: u32,
    /// (ABI 1.9) Offset of the body's first byte (0 without `fields`).
    pub body_start: u32,
    /// (ABI 1.9) Offset just after the body (0 without `fields`).
    pub body_end: u32,
}

/// The smallest `struct_size` a major-1 plugin accepts in a request info: the 1.0 layout, which
/// ends with `related_txn`.
pub const HUDDLE_REQUEST_INFO_MIN_SIZE: usize =
    std::mem::offset_of!(HuddleRequestInfo, source_family);

/// (ABI 1.9) `HuddleRequestInfo::source_family`: the source address is unknown.
pub const HUDDLE_ADDR_NONE: u32 = 0;
/// (ABI 1.9) `HuddleRequestInfo::source_family`: IPv4, the first 4 bytes of `source_addr`.
pub const HUDDLE_ADDR_IPV4: u32 = 4;
/// (ABI 1.9) `HuddleRequestInfo::source_family`: IPv6, all 16 bytes of `source_addr`.
pub const HUDDLE_ADDR_IPV6: u32 = 6;

/// (ABI 1.9) One header field of a request as the host's parse found it: byte offsets into the
/// request, ends exclusive.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HuddleField {
    /// Where the field's first line starts (its name).
    pub line_start: u32,
    /// Just after the field's last line terminator (continuation lines included).
    pub line_end: u32,
    /// Where the value starts, white space after the colon skipped.
    pub value_start: u32,
    /// Just after the value's last character, trailing white space and the terminator left out.
    pub value_end: u32,
}

/// (ABI 1.10) One header field of [`HuddleRequestParts`]: written `name: value`. Borrowed for
/// the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HuddleHeader {
    /// The field name, a token (`Subject`, `f`), UTF-8, not NUL-terminated.
    pub name: *const u8,
    /// Length of `name` in bytes.
    pub name_len: usize,
    /// The value, UTF-8 without CR, LF or NUL, not NUL-terminated.
    pub value: *const u8,
    /// Length of `value` in bytes.
    pub value_len: usize,
}

/// (ABI 1.10) A request for `HuddleHostApi::send_request_parts`, given as its parts (module
/// docs, "Requests in parts"). Borrowed for the call, like everything it points to.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HuddleRequestParts {
    /// `sizeof(HuddleRequestParts)` as the plugin knows it.
    pub struct_size: usize,
    /// The method, a token (`MESSAGE`).
    pub method: *const u8,
    /// Length of `method` in bytes.
    pub method_len: usize,
    /// The Request-URI (`sip:alice@example.com`).
    pub uri: *const u8,
    /// Length of `uri` in bytes.
    pub uri_len: usize,
    /// The header fields, in the order they are written; neither Via nor Content-Length.
    pub headers: *const HuddleHeader,
    /// Number of entries in `headers`.
    pub headers_len: usize,
    /// The body (may be null when `body_len` is 0).
    pub body: *const u8,
    /// Length of `body` in bytes.
    pub body_len: usize,
}

/// The smallest `struct_size` a host accepts in request parts: the 1.10 layout, which ends
/// with `body_len`.
pub const HUDDLE_REQUEST_PARTS_MIN_SIZE: usize = std::mem::size_of::<HuddleRequestParts>();

/// (ABI 1.12) A final response for `HuddleHostApi::respond_status`, given as its status, reason
/// phrase and extra header fields; the host writes the rest from the request (module docs,
/// "Final responses by status"). Borrowed for the call, like everything it points to.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HuddleStatusResponse {
    /// `sizeof(HuddleStatusResponse)` as the plugin knows it.
    pub struct_size: usize,
    /// The status code, 200..=699.
    pub status: u32,
    /// The reason phrase (`Accepted`), UTF-8 without control characters but HTAB, not
    /// NUL-terminated; may be empty.
    pub reason: *const u8,
    /// Length of `reason` in bytes.
    pub reason_len: usize,
    /// Extra header fields, written in order after the ones copied from the request; none of
    /// the fields the host writes itself.
    pub headers: *const HuddleHeader,
    /// Number of entries in `headers`.
    pub headers_len: usize,
}

/// (ABI 1.12) The smallest `struct_size` a host accepts in a status response: the 1.12
/// layout, which ends with `headers_len`.
pub const HUDDLE_STATUS_RESPONSE_MIN_SIZE: usize = std::mem::size_of::<HuddleStatusResponse>();
/// (ABI 1.12) The most header fields `respond_status` takes in one response.
pub const HUDDLE_STATUS_RESPONSE_MAX_FIELDS: usize = 32;

/// A registration event, for plugins that require `HUDDLE_CAP_REGISTRATION_EVENTS`. Borrowed
/// for the duration of `on_registration`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HuddleRegistrationEvent {
    /// `sizeof(HuddleRegistrationEvent)` as the host knows it.
    pub struct_size: usize,
    /// `HUDDLE_REG_*`.
    pub kind: u32,
    /// How many bindings the address-of-record has now.
    pub bindings: u32,
    /// The address-of-record (`sip:alice@example.com`), UTF-8, not NUL-terminated.
    pub aor: *const u8,
    /// Length of `aor` in bytes.
    pub aor_len: usize,
    /// ABI 1.2: the keys (under `location/`) of the address-of-record's bindings now, each
    /// followed by `\n`, UTF-8; empty when it has none. Hosts before 1.2 pass a shorter
    /// struct without this field (check `struct_size`).
    pub binding_keys: *const u8,
    /// Length of `binding_keys` in bytes.
    pub binding_keys_len: usize,
}

/// (ABI 1.7) A plugin's receiver of incoming RTP on the host's media thread, registered with
/// `HuddleHostApi::media_rtp_sink` (module docs, "Incoming RTP on the media thread"): one
/// decrypted RTP packet (`packet[0..len]`, header and payload) received on stream `mid` of
/// `session`, both borrowed for the call. `user` is the pointer registered with it. Called
/// from any host thread, possibly concurrently; must be quick and must not unwind. Returns
/// `HUDDLE_OK`, or `HUDDLE_ERR_PANIC` after catching a panic.
pub type HuddleRtpSinkFn = unsafe extern "C" fn(
    user: *mut c_void,
    session: u64,
    mid: *const u8,
    mid_len: usize,
    packet: *const u8,
    len: usize,
) -> i32;

/// (ABI 1.7) One packet of `HuddleHostApi::media_send_rtp_batch`: what `media_send_rtp` takes,
/// as a struct. Borrowed for the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HuddleRtpOut {
    /// The media session.
    pub session: u64,
    /// The stream, UTF-8, not NUL-terminated.
    pub mid: *const u8,
    /// Length of `mid` in bytes.
    pub mid_len: usize,
    /// One plain RTP packet (header and payload, unencrypted).
    pub packet: *const u8,
    /// Length of `packet` in bytes.
    pub len: usize,
}

/// Visitor of `HuddleHostApi::store_scan` (the type of its `visit` argument), called once per entry on the calling thread during
/// the scan. `key` (relative to the namespace) and `value` are borrowed for the call. Return
/// 0 to continue, anything else to stop the scan early. Must not call host functions.
pub type HuddleScanVisitor = unsafe extern "C" fn(
    user: *mut c_void,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> i32;

/// The type of the exported entry symbol `huddle_plugin_entry_v1`: returns the plugin's static
/// descriptor. Must be cheap, idempotent and side-effect free (the host may call it more than
/// once); must not return null.
pub type HuddlePluginEntryFn = unsafe extern "C" fn() -> *const HuddlePluginDescriptor;

/// The plugin's descriptor (plugin → host), returned by the entry symbol. Static: it and the
/// strings it points to live as long as the library is loaded. Callbacks below `handle_request`
/// may be null unless a required capability makes them mandatory (module docs).
///
/// In every callback, `instance` is the pointer the plugin stored in `init`'s `out_instance`,
/// and every `(pointer, length)` argument is borrowed for the duration of the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HuddlePluginDescriptor {
    /// Must be [`HUDDLE_PLUGIN_ABI_MAJOR`].
    pub abi_major: u32,
    /// The minor version the plugin was built against.
    pub abi_minor: u32,
    /// `sizeof(HuddlePluginDescriptor)` as the plugin was built.
    pub struct_size: usize,
    /// The plugin's name, a static NUL-terminated string of ASCII letters, digits, `-` and `_`,
    /// at most 64 bytes (it names the plugin's store namespace `plugin/<name>/`).
    pub name: *const c_char,
    /// The plugin's own version, a static NUL-terminated UTF-8 string (`0.1.0`).
    pub version: *const c_char,
    /// `HUDDLE_CAP_*` bits the plugin requires from the host.
    pub capabilities: u64,
    /// Creates an instance. `host` is valid until `destroy` returns (module docs). `config` is
    /// the instance's `[plugins.config]` table as TOML text, UTF-8 (possibly empty), borrowed
    /// for the call. The plugin calls `host->claim` for what it handles, stores its instance
    /// pointer in `*out_instance` and returns `HUDDLE_OK`; on any other return the host does
    /// not call `destroy`, so the plugin frees what it allocated before returning, and should
    /// `log` why it failed.
    pub init: Option<
        unsafe extern "C" fn(
            host: *const HuddleHostApi,
            config: *const u8,
            config_len: usize,
            out_instance: *mut *mut c_void,
        ) -> i32,
    >,
    /// Destroys an instance: the plugin stops its threads, frees the instance and returns.
    /// No other callback for this instance runs during or after it.
    pub destroy: Option<unsafe extern "C" fn(instance: *mut c_void)>,
    /// A request the plugin claimed. `msg[0..len]` is the complete request; `txn` identifies
    /// its server transaction for `respond` (0: nothing to answer); `info` is never null.
    /// Return `HUDDLE_OK` once the request is taken (answered now or later); an error makes the
    /// host answer it (module docs, "Status codes").
    pub handle_request: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            txn: u64,
            msg: *const u8,
            len: usize,
            info: *const HuddleRequestInfo,
        ) -> i32,
    >,
    /// A response to a request the plugin sent, `request_id` as `send_request` returned it.
    /// Provisional responses may come first; exactly one final response (`>= 200`) comes last.
    pub handle_response: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            request_id: u64,
            msg: *const u8,
            len: usize,
        ) -> i32,
    >,
    /// A timer set with `set_timer` fired (once; timers are one-shot). `token` is the value the
    /// plugin passed to `set_timer`.
    pub on_timer:
        Option<unsafe extern "C" fn(instance: *mut c_void, timer_id: u64, token: u64) -> i32>,
    /// A change under a watched prefix. `kind` is `HUDDLE_STORE_*`; `key` is relative to the
    /// watched namespace (empty for `HUDDLE_STORE_LAGGED`); `value` is empty unless
    /// `HUDDLE_STORE_PUT`.
    pub on_store_change: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            watch_id: u64,
            kind: u32,
            key: *const u8,
            key_len: usize,
            value: *const u8,
            value_len: usize,
        ) -> i32,
    >,
    /// A registration event (only with `HUDDLE_CAP_REGISTRATION_EVENTS`); `event` is never null.
    pub on_registration: Option<
        unsafe extern "C" fn(instance: *mut c_void, event: *const HuddleRegistrationEvent) -> i32,
    >,
    /// The media session `session` (created by `media_answer`) is connected: ICE and DTLS are
    /// up and media can flow.
    pub media_ready: Option<unsafe extern "C" fn(instance: *mut c_void, session: u64) -> i32>,
    /// One decrypted RTP packet (header and payload) received on stream `mid` of `session`.
    pub incoming_rtp: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            session: u64,
            mid: *const u8,
            mid_len: usize,
            packet: *const u8,
            len: usize,
        ) -> i32,
    >,
    /// One decrypted RTCP packet (possibly compound) for `session`. What a host delivers: the
    /// peer's key-frame requests (PLI/FIR) for streams the plugin sends itself, and, for each
    /// stream the host forwards into the session (`media_forward`), a receiver report (RFC 3550,
    /// one block, reporter SSRC 0) per stats interval saying what the peer reported it lost.
    /// Other feedback (NACK, REMB/TWCC) the host handles itself. Check what a packet is before
    /// acting on it (the SDK's `rtcp::asks_for_keyframe`).
    pub incoming_rtcp: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            session: u64,
            packet: *const u8,
            len: usize,
        ) -> i32,
    >,
    /// The media session ended (`HUDDLE_HANGUP_*`); its id is no longer valid.
    pub media_hangup:
        Option<unsafe extern "C" fn(instance: *mut c_void, session: u64, reason: u32) -> i32>,
    /// (ABI 1.1, optional) A new estimate of the bandwidth available towards the peer of
    /// `session`, in bits per second (transport-wide congestion control or REMB), for plugins
    /// that adapt what they send (simulcast layer, encoder bitrate).
    pub media_bitrate:
        Option<unsafe extern "C" fn(instance: *mut c_void, session: u64, bps: u64) -> i32>,
    /// (ABI 1.2, optional) An admin request: `request[0..len]` is a UTF-8 JSON object. The
    /// plugin answers by calling `reply(reply_user, json, json_len)` once during this call,
    /// then returns `HUDDLE_OK`; `HUDDLE_ERR_NOT_SUPPORTED` when it takes no admin requests
    /// (module docs, "Admin requests and events").
    pub admin_request: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            request: *const u8,
            len: usize,
            reply: Option<unsafe extern "C" fn(user: *mut c_void, json: *const u8, json_len: usize)>,
            reply_user: *mut c_void,
        ) -> i32,
    >,
}

/// The host's table (host → plugin), passed to `init`. Owned by the host; valid, like `ctx`,
/// until `destroy` returns. Every function takes `ctx` as its first argument. Out-parameters are
/// written only on success. See the module docs for which entries may be null.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HuddleHostApi {
    /// The host's ABI major version; a plugin refuses any other.
    pub abi_major: u32,
    /// The host's ABI minor version.
    pub abi_minor: u32,
    /// `sizeof(HuddleHostApi)` as the host was built. Entries beyond it are absent.
    pub struct_size: usize,
    /// `HUDDLE_CAP_*` bits the host provides to this plugin instance.
    pub host_capabilities: u64,
    /// The host's context for this instance; opaque to the plugin, passed back to every
    /// function.
    pub ctx: *mut c_void,
    /// Returns a buffer the host lent (see [`HuddleHostBuf`]). Never null.
    pub free_buf: Option<unsafe extern "C" fn(ctx: *mut c_void, buf: HuddleHostBuf)>,
    /// Logs `msg[0..len]` (UTF-8) at `level` (`HUDDLE_LOG_*`) in the host's log, tagged with
    /// the plugin's name. Never null.
    pub log: Option<unsafe extern "C" fn(ctx: *mut c_void, level: u32, msg: *const u8, len: usize)>,
    /// Claims requests for this instance; only during `init` (module docs, "Routing: claims").
    /// `HUDDLE_ERR_INVALID_ARGUMENT` for a malformed claim, `HUDDLE_ERR_PERMISSION_DENIED` for a
    /// reserved method. Never null.
    pub claim: Option<unsafe extern "C" fn(ctx: *mut c_void, claim: *const HuddleClaim) -> i32>,
    /// Sends a response (complete bytes) on server transaction `txn`. Provisional responses any
    /// number of times, then one final response. Never null.
    pub respond:
        Option<unsafe extern "C" fn(ctx: *mut c_void, txn: u64, msg: *const u8, len: usize) -> i32>,
    /// Sends a request (complete bytes without Via). On success writes the id its responses will
    /// carry to `*out_request_id` (never 0).
    pub send_request: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            msg: *const u8,
            len: usize,
            out_request_id: *mut u64,
        ) -> i32,
    >,
    /// Reads `key` in namespace `ns` (empty: the plugin's own). On success writes the value to
    /// `*out` (a host buffer to free with `free_buf`); `HUDDLE_ERR_NOT_FOUND` when absent.
    pub store_get: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            ns: *const u8,
            ns_len: usize,
            key: *const u8,
            key_len: usize,
            out: *mut HuddleHostBuf,
        ) -> i32,
    >,
    /// Sets `key` to `value` in the plugin's own namespace.
    pub store_put: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            key: *const u8,
            key_len: usize,
            value: *const u8,
            value_len: usize,
        ) -> i32,
    >,
    /// Deletes `key` in the plugin's own namespace; `HUDDLE_ERR_NOT_FOUND` if it was absent.
    pub store_delete:
        Option<unsafe extern "C" fn(ctx: *mut c_void, key: *const u8, key_len: usize) -> i32>,
    /// Compare-and-swap in the plugin's own namespace: if `key` currently holds `expected`
    /// (or is absent, with `HUDDLE_CAS_EXPECT_ABSENT`), sets it to `new_value` (or deletes it,
    /// with `HUDDLE_CAS_DELETE`) and returns `HUDDLE_OK`. Otherwise returns
    /// `HUDDLE_ERR_CONFLICT` and, if `out_current` is not null, writes the current value there
    /// (a null `ptr` when the key is absent), to be freed with `free_buf`.
    pub store_cas: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            key: *const u8,
            key_len: usize,
            expected: *const u8,
            expected_len: usize,
            new_value: *const u8,
            new_value_len: usize,
            flags: u32,
            out_current: *mut HuddleHostBuf,
        ) -> i32,
    >,
    /// Visits up to `limit` entries (the host may cap it lower; 0 means the host's maximum page)
    /// of namespace `ns` whose keys start with `prefix`, in key order, starting after
    /// `start_after` (empty: from the start of the prefix). Writes 1 to `*out_more` when entries
    /// remain after the last one visited (continue with its key as `start_after`), else 0.
    pub store_scan: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            ns: *const u8,
            ns_len: usize,
            prefix: *const u8,
            prefix_len: usize,
            start_after: *const u8,
            start_after_len: usize,
            limit: u32,
            visit: Option<
                unsafe extern "C" fn(
                    user: *mut c_void,
                    key: *const u8,
                    key_len: usize,
                    value: *const u8,
                    value_len: usize,
                ) -> i32,
            >,
            visit_user: *mut c_void,
            out_more: *mut u8,
        ) -> i32,
    >,
    /// Watches `prefix` in namespace `ns`; changes arrive through `on_store_change` with the id
    /// written to `*out_watch_id` (never 0).
    pub store_watch: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            ns: *const u8,
            ns_len: usize,
            prefix: *const u8,
            prefix_len: usize,
            out_watch_id: *mut u64,
        ) -> i32,
    >,
    /// Ends a watch. Changes already queued may still be delivered.
    pub store_unwatch: Option<unsafe extern "C" fn(ctx: *mut c_void, watch_id: u64) -> i32>,
    /// Arms a one-shot timer: `on_timer(timer_id, token)` after `delay_ms` milliseconds. Writes
    /// the id to `*out_timer_id` (never 0).
    pub set_timer: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            delay_ms: u64,
            token: u64,
            out_timer_id: *mut u64,
        ) -> i32,
    >,
    /// Cancels a timer that has not fired; `HUDDLE_ERR_NOT_FOUND` if it fired or never existed.
    pub cancel_timer: Option<unsafe extern "C" fn(ctx: *mut c_void, timer_id: u64) -> i32>,
    /// Answers an SDP offer with the host's media engine. `session` 0 creates a media session
    /// (its id is written to `*out_session`); an existing id renegotiates it. The SDP answer, to
    /// put in the plugin's SIP response, is written to `*out_answer` (free with `free_buf`).
    ///
    /// The plugin picks codecs and directions by the offer it passes (drop the payload types
    /// it does not want, change a direction attribute); the host answers each m-line with the
    /// offered codecs it supports, mirroring the direction, and adds the transport: ICE-lite
    /// credentials and candidate, DTLS fingerprint and setup, rtcp-mux, BUNDLE.
    ///
    /// (ABI 1.1) On `HUDDLE_ERR_SDP_MALFORMED` or `HUDDLE_ERR_SDP_NOT_ACCEPTABLE` the host
    /// writes the reason to `*out_answer` too (an exception to the out-parameter rule), so the
    /// plugin can answer `400`/`488` saying what was wrong. `HUDDLE_ERR_BUSY`: too many media
    /// sessions (answer `503`).
    pub media_answer: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            session: u64,
            offer: *const u8,
            offer_len: usize,
            out_session: *mut u64,
            out_answer: *mut HuddleHostBuf,
        ) -> i32,
    >,
    /// Sends one RTP packet (header and payload, unencrypted) on stream `mid` of `session`.
    pub media_send_rtp: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            session: u64,
            mid: *const u8,
            mid_len: usize,
            packet: *const u8,
            len: usize,
        ) -> i32,
    >,
    /// Sends one RTCP packet (possibly compound, unencrypted) on `session`.
    pub media_send_rtcp: Option<
        unsafe extern "C" fn(ctx: *mut c_void, session: u64, packet: *const u8, len: usize) -> i32,
    >,
    /// Asks the sender of stream `mid` of `session` for a key frame (PLI/FIR).
    pub media_request_keyframe: Option<
        unsafe extern "C" fn(ctx: *mut c_void, session: u64, mid: *const u8, mid_len: usize) -> i32,
    >,
    /// Forwards stream `src_mid` of `src_session` to stream `dst_mid` of `dst_session` inside
    /// the host (SSRC rewrite, key-frame requests passed back), without the packets passing
    /// through the plugin. An empty `src_mid` stops what is forwarded to `dst_mid`.
    pub media_forward: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            src_session: u64,
            src_mid: *const u8,
            src_mid_len: usize,
            dst_session: u64,
            dst_mid: *const u8,
            dst_mid_len: usize,
        ) -> i32,
    >,
    /// Closes a media session; `media_hangup` follows with `HUDDLE_HANGUP_NORMAL`.
    pub media_close: Option<unsafe extern "C" fn(ctx: *mut c_void, session: u64) -> i32>,
    /// (ABI 1.2, with `HUDDLE_CAP_EVENTS`) Raises event `kind` (`[a-z0-9._-]{1,64}`) with the
    /// JSON object `json` as its details, for the host's webhooks. Never blocks (module docs,
    /// "Admin requests and events"). Absent when `struct_size` does not cover it.
    pub emit_event: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            kind: *const u8,
            kind_len: usize,
            json: *const u8,
            json_len: usize,
        ) -> i32,
    >,
    /// (ABI 1.3, with `HUDDLE_CAP_MEDIA`) Taps (`on` 1) or untaps (`on` 0) the incoming stream
    /// `mid` of `session`, which may be any plugin's media session: each packet of it is then
    /// also delivered to this plugin's `incoming_rtp`, with `session` (not one of this plugin's
    /// own) as its session, and this plugin may call `media_request_keyframe` on it. A tap ends
    /// when the tapped session ends (no `media_hangup` is sent for it: the tapper learns that
    /// from the owner's shared state). `HUDDLE_ERR_NOT_FOUND`: no such session or stream (it is
    /// gone), or, to untap, no such tap. Absent when `struct_size` does not cover it.
    pub media_tap: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            session: u64,
            mid: *const u8,
            mid_len: usize,
            on: u32,
        ) -> i32,
    >,
    /// (ABI 1.3, with `HUDDLE_CAP_STORE`) Applies `ops[0..count]` in the plugin's own
    /// namespace, in order, in one durable commit: all or none, `HUDDLE_OK` only once durable.
    /// `HUDDLE_ERR_TOO_LARGE` over the host's limits (split the batch), and
    /// `HUDDLE_ERR_INVALID_ARGUMENT` for an unknown op. Module docs, "The store". Absent when
    /// `struct_size` does not cover it.
    pub store_batch: Option<
        unsafe extern "C" fn(ctx: *mut c_void, ops: *const HuddleStoreOp, count: usize) -> i32,
    >,
    /// (ABI 1.4) Gives up server transaction `txn` (out of dialog, no final response yet) and
    /// has the host route its request again as if its Request-URI were `uri[0..uri_len]`
    /// (UTF-8, a `sip:`/`sips:` URI naming this server). Module docs, "Retargeting". Never
    /// null when `struct_size` covers it; absent otherwise.
    pub retarget: Option<
        unsafe extern "C" fn(ctx: *mut c_void, txn: u64, uri: *const u8, uri_len: usize) -> i32,
    >,
    /// (ABI 1.5, with `HUDDLE_CAP_LOCATION`) Whether the host has an account named
    /// `user[0..user_len]` (UTF-8, a Request-URI user part): `HUDDLE_OK` when it has,
    /// `HUDDLE_ERR_NOT_FOUND` when it has not. Read at the moment of the call; nothing about
    /// bindings. Module docs, "Users". Absent when `struct_size` does not cover it.
    pub user_exists:
        Option<unsafe extern "C" fn(ctx: *mut c_void, user: *const u8, user_len: usize) -> i32>,
    /// (ABI 1.7, with `HUDDLE_CAP_MEDIA`) Registers `sink` (with `user`) as the instance's
    /// receiver of incoming RTP, called on the host's media thread instead of queueing
    /// `incoming_rtp`; a null `sink` goes back to `incoming_rtp`. When this returns, the
    /// previous sink is not running and will not be called again. `HUDDLE_ERR_BAD_STATE` from
    /// inside a sink. Module docs, "Incoming RTP on the media thread". Absent when
    /// `struct_size` does not cover it.
    pub media_rtp_sink: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            // `HuddleRtpSinkFn` spelled out: cbindgen 0.24 writes `Option<alias>` as an opaque
            // `Option_HuddleRtpSinkFn` struct instead of a nullable function pointer.
            sink: Option<
                unsafe extern "C" fn(
                    user: *mut c_void,
                    session: u64,
                    mid: *const u8,
                    mid_len: usize,
                    packet: *const u8,
                    len: usize,
                ) -> i32,
            >,
            user: *mut c_void,
        ) -> i32,
    >,
    /// (ABI 1.7, with `HUDDLE_CAP_MEDIA`) Sends `packets[0..count]`, each as `media_send_rtp`
    /// would, in one crossing into the media engine. Entries that fail their check are skipped
    /// and the first failure is returned; `HUDDLE_ERR_BUSY`: none was sent. Module docs,
    /// "Sending one packet to many legs". Absent when `struct_size` does not cover it.
    pub media_send_rtp_batch: Option<
        unsafe extern "C" fn(ctx: *mut c_void, packets: *const HuddleRtpOut, count: usize) -> i32,
    >,
    /// (ABI 1.8, with `HUDDLE_CAP_EVENTS`) Whether an event `kind[0..kind_len]` raised now with
    /// `emit_event` would go anywhere: `HUDDLE_OK` when it would, `HUDDLE_ERR_NOT_FOUND` when
    /// the host would drop it (no webhooks, or none that takes this kind). Module docs, "Events
    /// nobody takes (ABI 1.8)". Absent when `struct_size` does not cover it.
    pub event_wanted:
        Option<unsafe extern "C" fn(ctx: *mut c_void, kind: *const u8, kind_len: usize) -> i32>,
    /// (ABI 1.10, with `HUDDLE_CAP_SEND_REQUEST`) Sends the request `*parts` (method,
    /// Request-URI, header fields without Via or Content-Length, body), which the host writes
    /// with its Via; otherwise as `send_request`, whose id it writes to `*out_request_id`.
    /// Module docs, "Requests in parts". Absent when `struct_size` does not cover it.
    pub send_request_parts: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            parts: *const HuddleRequestParts,
            out_request_id: *mut u64,
        ) -> i32,
    >,
    /// (ABI 1.11, with `HUDDLE_CAP_HOST_ALLOCATOR`) A block of `size` bytes aligned to `align`
    /// from the host's allocator, or null. The process's, not an instance's: no `ctx`. Module
    /// docs, "The host's allocator". Absent when `struct_size` does not cover it.
    pub mem_alloc: Option<unsafe extern "C" fn(size: usize, align: usize) -> *mut u8>,
    /// (ABI 1.11, with `HUDDLE_CAP_HOST_ALLOCATOR`) As `mem_alloc`, the block zeroed.
    pub mem_alloc_zeroed: Option<unsafe extern "C" fn(size: usize, align: usize) -> *mut u8>,
    /// (ABI 1.11, with `HUDDLE_CAP_HOST_ALLOCATOR`) Releases a block `mem_alloc`,
    /// `mem_alloc_zeroed` or `mem_realloc` made with this `size` and `align`.
    pub mem_dealloc: Option<unsafe extern "C" fn(ptr: *mut u8, size: usize, align: usize)>,
    /// (ABI 1.11, with `HUDDLE_CAP_HOST_ALLOCATOR`) Resizes a block made with `size` and
    /// `align` to `new_size` bytes, keeping its contents up to the smaller size: the block's
    /// new address, or null (then the old block is untouched).
    pub mem_realloc: Option<
        unsafe extern "C" fn(ptr: *mut u8, size: usize, align: usize, new_size: usize) -> *mut u8,
    >,
    /// (ABI 1.12) Answers server transaction `txn` finally with `*response` (status, reason,
    /// extra fields), the host writing the response from the request it holds.
    /// `HUDDLE_ERR_NOT_SUPPORTED` from a host that cannot (write the bytes and call
    /// `respond`). Module docs, "Final responses by status". Never null when `struct_size`
    /// covers it; absent otherwise.
    pub respond_status: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            txn: u64,
            response: *const HuddleStatusResponse,
        ) -> i32,
    >,
}

/// The smallest `struct_size` a major-1 host accepts in a descriptor: the 1.0 layout, which
/// ends with `media_hangup`.
pub const HUDDLE_PLUGIN_DESCRIPTOR_MIN_SIZE: usize =
    std::mem::offset_of!(HuddlePluginDescriptor, media_bitrate);
/// The smallest `struct_size` a major-1 plugin accepts in a host table: the 1.0 layout, which
/// ends with `media_close`.
pub const HUDDLE_HOST_API_MIN_SIZE: usize = std::mem::offset_of!(HuddleHostApi, emit_event);

/// The names of the capability bits, for messages (`HUDDLE_CAP_STORE` → `store`).
pub const CAPABILITY_NAMES: [(u64, &str); 9] = [
    (HUDDLE_CAP_STORE, "store"),
    (HUDDLE_CAP_STORE_WATCH, "store_watch"),
    (HUDDLE_CAP_LOCATION, "location"),
    (HUDDLE_CAP_REGISTRATION_EVENTS, "registration_events"),
    (HUDDLE_CAP_SEND_REQUEST, "send_request"),
    (HUDDLE_CAP_TIMERS, "timers"),
    (HUDDLE_CAP_MEDIA, "media"),
    (HUDDLE_CAP_EVENTS, "events"),
    (HUDDLE_CAP_HOST_ALLOCATOR, "host_allocator"),
];

// SAFETY: a descriptor is immutable static data (function pointers and pointers to static C
// strings); sharing it between threads is what the ABI expects.
unsafe impl Sync for HuddlePluginDescriptor {}
// SAFETY: as above; the raw pointers refer to static data, not to thread-owned memory.
unsafe impl Send for HuddlePluginDescriptor {}
