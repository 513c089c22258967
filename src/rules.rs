//! The protocol and security rules wsrelay follows, numbered so that code, tests and notes can
//! cite them ("rule 18").
//!
//! Each rule gives the requirement, its *source* (an RFC section, a CVE, or another proxy's
//! behaviour) and what *wsrelay* does. The *client* is the peer that connected to the proxy; the
//! *backend* is the server the proxy connects to for it. Numbers never change: later rules take a
//! letter (6b) or a new number (29). Section 8 is planned work.
//!
//! ## 1. Accepting the client's handshake
//!
//! **Rule 1.** Only a `GET` over HTTP/1.1 counts as a WebSocket handshake, and only when `Upgrade`
//! lists `websocket` and `Connection` carries the `upgrade` option. Both are comma-separated lists
//! compared without regard to case, and every `Connection` line counts, not just the first.
//! HTTP/1.0 cannot upgrade. *Source:* RFC 6455 §4.2.1; RFC 9110 §7.8. *wsrelay:* another method
//! gets 405 with `Allow: GET`; HTTP/1.0 gets 400; an `Upgrade` with no accepted token gets 426
//! (extra tokens can be accepted through [`RewriteConfig`](crate::handshake::RewriteConfig));
//! a `Connection` without `upgrade` gets 400.
//!
//! **Rule 2.** `Host` occurs exactly once. *Source:* RFC 9112 §3.2. *wsrelay:* missing, repeated or
//! invalid: 400.
//!
//! **Rule 3.** `Sec-WebSocket-Key` occurs exactly once and is the base64 encoding of exactly 16
//! bytes. *Source:* RFC 6455 §4.2.1 (item 5) and §11.3.1. *wsrelay:* otherwise 400.
//!
//! **Rule 4.** `Sec-WebSocket-Version` occurs exactly once, and 13 is the only version spoken.
//! *Source:* RFC 6455 §4.2.2 and §4.4; RFC 9110 §7.8 and §15.5.22. *wsrelay:* missing or repeated:
//! 400. Any other value: `426 Upgrade Required` with `Sec-WebSocket-Version: 13` and
//! `Upgrade: websocket`, so that the client knows what to retry with.
//!
//! **Rule 5.** A handshake has no body. *Source:* RFC 9112 §6.1; Envoy rejects upgrade requests
//! that carry one. *wsrelay:* a `Content-Length` other than `0`, or any `Transfer-Encoding`, gets
//! 400 and the connection is closed, so no body (or a request hidden in one) reaches the backend.
//!
//! **Rule 6.** The head is parsed strictly. Refused: whitespace between a field name and its colon,
//! folded lines (obs-fold), a CR without its LF, and NUL, CR or LF inside a field value.
//! *Source:* RFC 9112 §5.1–5.2; RFC 9110 §5.5. *wsrelay:* 400; httparse's strict defaults catch
//! most of these, the head reader the rest.
//!
//! **Rule 6b.** The subprotocol and extension offers are well formed: `Sec-WebSocket-Protocol` is a
//! comma-separated list of distinct tokens, and `Sec-WebSocket-Extensions` matches the extension
//! grammar. *Source:* RFC 6455 §4.1 (item 10), §11.3.4 and §9.1; tokens per RFC 9110 §5.6.2.
//! *wsrelay:* a malformed list gets 400 and is never forwarded. Backends may count on the proxy
//! having checked it.
//!
//! **Rule 6c.** The request target is usable. *Source:* RFC 9112 §3.2 (absolute form: §3.2.2).
//! *wsrelay:* an absolute-form target is rewritten to origin form, and its authority becomes the
//! `Host` (validated as in rule 2). `CONNECT` (authority form) and `OPTIONS *` (asterisk form)
//! never start a tunnel: 405 for the method, 400 for such a target on a `GET`. A path holding a `.`
//! or `..` segment, literal or percent-encoded, gets 400, both as received and after the prefix
//! rewrite of rule 15, so that no request can climb out of the rewritten prefix.
//!
//! **Rule 7.** The head is bounded in size, in header count and in time. *Source:* RFC 6585 §5
//! (431); nginx's 8 KiB header buffers; HAProxy `timeout http-request` and nginx
//! `client_header_timeout`. *wsrelay:* [`HeadLimits`](crate::wire::HeadLimits), set with
//! [`ProxyBuilder`](crate::ProxyBuilder)'s `client_head`: 8 KiB by default (at most 64 KiB), 100
//! fields (at most 256), 10 s for the whole head, however slowly it trickles in (slowloris).
//! Too large or too many fields: 431, then close. Deadline missed: 408.
//!
//! **Rule 8.** The `Origin` is checked against Cross-Site WebSocket Hijacking. Browsers apply no
//! CORS to WebSocket, so `Access-Control-*` headers protect nothing: the origin check is the
//! control. *Source:* RFC 6455 §10.2. *wsrelay:* an optional, case-insensitive allow-list
//! (`allow_origin`); an origin not on it, or several `Origin` lines, gets 403 before any backend
//! is contacted. A request without `Origin` (not from a browser) passes.
//!
//! **Rule 9.** A handshake that breaks any rule above is answered by the proxy itself and never
//! reaches the backend: no backend connection is opened. *wsrelay:*
//! [`Rewriter`](crate::handshake::Rewriter) is pure and returns the status before any I/O; the
//! error response carries `Connection: close` and a short text body.
//!
//! ## 2. The request sent to the backend
//!
//! **Rule 10.** Hop-by-hop headers are removed: `Connection`, `Proxy-Connection`, `Keep-Alive`,
//! `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-Authorization`, `Proxy-Authenticate`,
//! and every header listed as an option in *any* `Connection` line; a blank first `Connection`
//! line does not end the search. *Source:* RFC 9110 §7.6.1; Go CVE-2021-33197. *wsrelay:*
//! as stated, plus `HTTP2-Settings` (rule 14).
//!
//! **Rule 11.** Strip first, then add. The proxy's own forwarding headers are set after the
//! stripping of rule 10, so a client cannot remove them by naming them in `Connection`.
//! *Source:* Traefik CVE-2024-45410 and CVE-2021-32813; RFC 7239 §4 and §6 for `Forwarded`.
//! *wsrelay:* by default sets `X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto`,
//! `X-Forwarded-Host` and appends `Via: 1.1 wsrelay`; `Forwarded` is optional. The client's own
//! `X-Forwarded-*`, `X-Real-IP` and `Forwarded` are dropped unless the peer is trusted
//! (`trust_forwarded`), in which case `X-Forwarded-For` and `Forwarded` are appended to. In
//! `Forwarded`, IPv6 addresses (bracketed) and `host:port` values are quoted.
//!
//! **Rule 12.** The request line is always `GET`, origin-form target, `HTTP/1.1`, with
//! `Upgrade: websocket` and `Connection: Upgrade`. *Source:* nginx's usual WebSocket configuration
//! (`proxy_http_version 1.1` and the `$connection_upgrade` map). *wsrelay:* as stated, whatever
//! form the client used.
//!
//! **Rule 13.** Every end-to-end header passes unchanged and in order: `Sec-WebSocket-Key`,
//! `-Version`, `-Protocol`, `-Extensions`, `Origin`, `Cookie`, `Authorization` and the rest.
//! *Source:* RFC 9110 §7.6.1 (only hop-by-hop fields are a proxy's to remove). *wsrelay:* a header
//! the client named in `Connection` is removed (rule 10) and then treated as absent, so a request
//! that needed it (its key, say) fails the rule of §1 that requires it.
//!
//! **Rule 14.** The `h2c` upgrade token and `HTTP2-Settings` are never forwarded: a proxy that
//! passes them on can hand the client a direct HTTP/2 connection to the backend, past the proxy's
//! checks (h2c smuggling). *wsrelay:* `Upgrade` is rewritten to the one accepted token
//! (`websocket` unless configured); `HTTP2-Settings` is always removed; `h2c` and `h2` cannot be
//! configured as accepted tokens.
//!
//! **Rule 15.** `Host` and path. *Source:* nginx `proxy_set_header Host $host`, and a
//! `location /ws/` block with `proxy_pass http://backend/`. *wsrelay:* the `Host` is the client's
//! (the default) or a configured authority; an optional prefix is stripped or replaced, and a path
//! outside the prefix gets 404. The query string is always kept.
//!
//! ## 3. Judging the backend's answer
//!
//! **Rule 16.** A tunnel opens only on a valid switch: status `101`, `Upgrade: websocket`,
//! `Connection` listing `upgrade`, and one `Sec-WebSocket-Accept` equal to
//! base64(SHA-1(key followed by `258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)). *Source:* RFC 6455 §4.1
//! (the client's checks on the answer) and §4.2.2. *wsrelay:*
//! [`Outgoing::check`](crate::handshake::Outgoing::check); a `101` that fails any check gets 502
//! to the client, and the backend connection is closed.
//!
//! **Rule 17.** The backend may only pick what the client offered: one subprotocol from the
//! client's list (exact match) and extensions the client proposed. *Source:* RFC 6455 §4.1 and
//! §9.1. *wsrelay:* anything else gets 502.
//!
//! **Rule 18.** Every other final status (200, 403, 426, ...) is an ordinary HTTP response: relayed
//! to the client, body included, and never followed by a tunnel. *Source:* WebSocket smuggling:
//! Envoy CVE-2024-23326 entered tunnel mode on a 200; Varnish and older Envoy did so on a 426.
//! *wsrelay:* the response goes out with `Connection: close` and its body streamed as the backend
//! framed it (RFC 9112 §6.3); ambiguous framing gets 502 instead. Bytes the client sent after its
//! head are discarded, then both connections close.
//!
//! **Rule 19.** Interim `1xx` responses other than `101` (`100 Continue`, `103 Early Hints`) are
//! skipped while waiting for the real answer. *Source:* RFC 9110 §15.2. *wsrelay:* up to eight in a
//! row; more is a malformed answer (rule 20).
//!
//! **Rule 20.** Backend failures map to gateway errors. *Source:* RFC 9110 §15.6.3 (502) and
//! §15.6.5 (504); nginx `proxy_connect_timeout`. *wsrelay:* unreachable: 502. No connection or no
//! complete response head within its deadline: 504 (`connect_timeout`, 5 s per attempt, and
//! `backend_head` on [`ProxyBuilder`](crate::ProxyBuilder)). Malformed head: 502. With several
//! backends, one that fails to connect is skipped for the next.
//!
//! ## 4. The response sent to the client
//!
//! **Rule 21.** The backend's headers are cleaned as in rule 10 (including the options its own
//! `Connection` names); on a `101`, `Content-Length` and `Transfer-Encoding` go too. Then
//! `Upgrade: websocket` and `Connection: Upgrade` are set. `Set-Cookie` and the `Sec-WebSocket-*`
//! headers stay. *Source:* RFC 9110 §7.6.1. *wsrelay:* as stated; a refusal (rule 18)
//! keeps its framing headers, gets `Connection: close` and offers no upgrade.
//!
//! ## 5. The tunnel
//!
//! **Rule 22.** Bytes read past a head are delivered first, and only once the switch is certain:
//! what the client sent after its request reaches the backend after the backend's `101`, before
//! anything else; what the backend sent along with its `101` reaches the client right after it.
//! *Source:* RFC 6455 §4 (frames follow the handshake on the same connection). *wsrelay:*
//! [`tunnel`](crate::tunnel) writes these leftovers first, and the [`Report`](crate::Report)
//! counts them.
//!
//! **Rule 23.** Half-close: when one side sends EOF, the proxy shuts down its write half toward the
//! other side and leaves the opposite direction running until that one finishes as well. *Source:*
//! Go's `CloseWrite`; HAProxy `timeout client-fin` / `timeout server-fin`. *wsrelay:* as stated,
//! once the bytes read before the EOF are delivered; a tunnel left half-closed longer than the fin
//! timeout of [`SpliceConfig`](crate::SpliceConfig) (30 s by default) is closed.
//!
//! **Rule 24.** Idle and lifetime limits. *Source:* HAProxy `timeout tunnel`; nginx, which re-arms
//! `proxy_read_timeout` on traffic in either direction; Caddy `stream_timeout`. *wsrelay:* after
//! the idle timeout (600 s by default) without a byte either way, both sides close (the timer is
//! re-armed lazily, so after one to two periods); an optional lifetime cap is off by default.
//!
//! **Rule 25.** An error or reset on either side closes both sockets promptly: nothing stays
//! half-open, and no file descriptor or pipe leaks. *Source:* robustness (a leak here is a slow
//! denial of service). *wsrelay:* the tunnel owns both streams and its pipes and drops them all
//! when it returns; the report says which side failed.
//!
//! **Rule 26.** Memory per tunnel has a fixed ceiling, however the peers behave; a backend flooding
//! a client that has stopped reading costs no more than the configured buffers. *Source:* the fixed
//! per-connection buffers of nginx and HAProxy. *wsrelay:* back-pressure: a direction stops reading
//! from its source while its destination is full, so TCP flow control throttles the sender. At most
//! one buffer (64 KiB by default) or one pipe (1 MiB by default) per direction.
//!
//! **Rule 27.** Graceful shutdown: once told to drain, the proxy takes no new connections, lets
//! open tunnels finish during a grace period, and then closes whatever is left. *Source:* nginx
//! `worker_shutdown_timeout`; HAProxy `hard-stop-after`. *wsrelay:* [`Proxy`](crate::Proxy)'s
//! `serve` does this when its shutdown future completes (grace period 10 s by default) and reports
//! how many connections drained and how many were cut.
//!
//! **Rule 28.** `TCP_NODELAY` on both sockets; one backend connection per upgrade, never pooled or
//! reused. *Source:* nginx, which sets `TCP_NODELAY` on upgraded connections. *wsrelay:* as
//! stated; the backend connection closes with its tunnel or refusal.
//!
//! **Rule 29.** Before the handshake completes, memory grows with the bytes actually received: a
//! silent connection costs at most one small first read, not a full head buffer. An idle
//! connection costs an attacker almost nothing to keep open, so it must cost the proxy little too
//! (nginx spends about half a kilobyte on one). *wsrelay:* the head buffer starts small and grows
//! with the head only, up to the cap of rule 7; nothing is allocated for it before the first
//! bytes, which are read into the stack. `Proxy::serve` keeps a client that has sent nothing in
//! one shared epoll set, with no task of its own, until it speaks or its deadline passes (about
//! 0.3 KiB each).
//!
//! ## 6. WebSocket over HTTP/2
//!
//! RFC 9220 applies the same scheme to HTTP/3. *wsrelay:* behind hyper and axum (feature
//! `hyper`), `Proxy::upgrade` accepts an extended CONNECT; the
//! translation is [`Rewriter::rewrite_extended_connect`](crate::handshake::Rewriter::rewrite_extended_connect)
//! (pure: the caller passes the generated key). Tests: `rule_31_*` to `rule_33_*` in
//! `src/handshake/tests.rs`, `tests/http2.rs`, the HTTP/2 cases of `tests/front_ends.rs`, and
//! Python's `h2` in `tests/interop.rs`.
//!
//! **Rule 30.** `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1` is advertised only on connections where
//! extended CONNECT is actually served. *Source:* RFC 8441 §3. *wsrelay:* the server advertises it
//! (`axum::serve` with axum's `http2` feature; hyper's `http2().enable_connect_protocol()`), so it
//! is the application's choice: the `axum` and `hyper` examples enable it because `/ws` goes to
//! `Proxy::upgrade`.
//!
//! **Rule 31.** A WebSocket request is `:method CONNECT` with `:protocol websocket`, `:scheme`,
//! `:path` and `:authority`, `sec-websocket-version: 13` and no `sec-websocket-key`. Any other
//! `:protocol` gets 501 or 400 on that stream alone. Connection-specific headers (`connection`,
//! `upgrade`, `keep-alive`, `proxy-connection`, `transfer-encoding`, or a `te` other than
//! `trailers`) make the request malformed. *Source:* RFC 8441 §4–5; RFC 9113 §8.2.2. *wsrelay:* a
//! `:protocol` not accepted (`websocket`, plus those of `RewriteConfig::allow_protocol`) gets 501;
//! a malformed request 400: a missing `:authority` or `:scheme`, userinfo in `:authority`, a
//! `host` naming another authority (RFC 9113 §8.3.1), a `:scheme` other than the connection's
//! (`https` exactly when the client used TLS, as `client_tls` says), a connection-specific field
//! (hyper's HTTP/2 layer already resets such a stream with `PROTOCOL_ERROR`), a client key, or a
//! body. The rules of §1 that still apply do: the version (missing 400, not 13 426 with
//! `sec-websocket-version: 13` and without `Upgrade`), 6b, 6c's dot segments, the head limits of
//! 7 and the Origin policy of 8. Only that stream is refused; the connection's others go on.
//!
//! **Rule 32.** Toward an HTTP/1.1 backend the request becomes `GET :path HTTP/1.1` with
//! `Host: :authority`, a freshly generated random 16-byte `Sec-WebSocket-Key`, the `Upgrade` and
//! `Connection` of rule 12 and the forwarding rules of §2; the backend's `101` is judged (§3)
//! against the proxy's own key. *wsrelay:* as stated, with `X-Forwarded-Proto` from `:scheme`,
//! the prefix rules of 15 and `Via: 2 wsrelay`. The key is SipHash, keyed once per process from
//! the operating system's random source (std's `RandomState`), of a process-wide counter: never
//! repeated, unpredictable without the key.
//!
//! **Rule 33.** Toward the HTTP/2 client the switch is `:status 200`, with the
//! `sec-websocket-protocol` and `sec-websocket-extensions` the backend chose (rule 17 applies), and
//! never `sec-websocket-accept`, `upgrade` or `connection`. A backend refusal becomes that
//! stream's response. *Source:* RFC 8441 §5. *wsrelay:* as stated; a refusal is relayed with its
//! body (up to 1 MiB) and without `Connection`. A `2xx` from the backend other than `101` is a
//! 502: any `2xx` tells an HTTP/2 client its WebSocket is open (the smuggling of rule 18).
//!
//! **Rule 34.** The client's END_STREAM half-closes toward the backend; the backend's EOF becomes
//! END_STREAM; a RST_STREAM on the stream or a reset of the TCP side tears down its counterpart at
//! once. Stream flow control bounds each stream's memory. *Source:* RFC 8441 §5; RFC 9113 §5.2.
//! *wsrelay:* the stream's data takes the buffered tunnel; END_STREAM and the backend's EOF are
//! as stated, and the [`Report`](crate::Report) counts the bytes as for HTTP/1.1. hyper 1.x reads
//! a RST_STREAM with `NO_ERROR` or `CANCEL` as an EOF and fails every later write: the backend
//! gets its EOF at once, and both sides close at its next byte or its own close, as for an
//! HTTP/1.1 client that closed its socket (the fin timeout of rule 23 bounds the rest); any other
//! error code closes both at once. A backend reset ends the stream at once, as END_STREAM followed
//! by RST_STREAM (hyper cannot send another code on an upgraded stream). Memory: hyper holds at
//! most the stream's receive window of the client's data (1 MiB by default; hyper's
//! `initial_stream_window_size`) and gives it back only as the backend accepts bytes; toward the
//! client, at most about four tunnel buffers (64 KiB each by default) wait for the client's
//! window.
//!
//! ## 7. TLS
//!
//! *Implemented with the `rustls` feature (rustls with its `ring` provider): `wsrelay::tls`,
//! `ProxyBuilder::tls`, `ProxyBuilder::backend_ca`, and `wss://`/`https://` backends.*
//!
//! **Rule 35.** When terminating TLS, ALPN offers only what the front end serves (`http/1.1`, plus
//! `h2` where rule 30 holds); the TLS handshake counts against the head deadline of rule 7;
//! plaintext arriving on a TLS port is dropped immediately (or gets a 400); the backend sees
//! `X-Forwarded-Proto: https`. *Source:* RFC 7301 (ALPN). *wsrelay:* `TlsAcceptor` offers
//! `http/1.1` unless given another list (`TlsAcceptorBuilder::alpn`), and a client that offers
//! only other protocols fails the handshake (`no_application_protocol`, RFC 7301 §3.2). In
//! [`Proxy::serve`](crate::Proxy::serve) and [`Proxy::handle`](crate::Proxy::handle) with
//! `ProxyBuilder::tls`, one deadline covers the handshake and the head: a client silent, or
//! stuck in its handshake, is closed at it (nothing can be answered before TLS); a head late
//! after the handshake gets 408. A client whose first byte is not a TLS handshake record
//! (`0x16`) gets `400 plain HTTP request sent to a TLS port` at once and is closed (nginx's 497;
//! on a stream other than a `TcpStream`, which cannot be peeked, rustls refuses the bytes and
//! the connection closes at once). `X-Forwarded-Proto: https` follows from termination.
//! Behind hyper or axum, the server terminates (`TlsAcceptor::accept`) and
//! [`ProxyBuilder::client_tls`](crate::ProxyBuilder::client_tls) sets the header.
//!
//! **Rule 36.** Toward a `wss`/`https` backend: SNI is the backend's host name, the certificate is
//! verified against the configured roots (never "accept anything" by default), and ALPN offers
//! `http/1.1` only, since the Upgrade mechanism exists only in HTTP/1.1. A failed verification is
//! a 502; the proxy never retries without TLS. *Source:* RFC 6066 §3 (SNI); RFC 9113 §8.2.2.
//! *wsrelay:* the roots are the system's store plus every `ProxyBuilder::backend_ca` file; there
//! is no switch to accept any certificate. The handshake counts against the connect timeout
//! (504 past it). A failed handshake is a 502, [`ProxyError::BackendTls`](crate::ProxyError)
//! ([`TlsError::is_certificate_error`](crate::TlsError::is_certificate_error) for a refused
//! certificate) and one log line; with several backends the next one is tried, over TLS or not
//! as it is configured, never the same one in plaintext.
//!
//! **Rule 37.** Certificates reload without disturbing established tunnels; a reload that fails
//! keeps the previous certificates. *Source:* the reload behaviour of nginx and HAProxy.
//! *wsrelay:* `TlsAcceptor::reload` reads every certificate and key file again and swaps them in
//! only if all are usable, else returns a [`BuildError::TlsFile`](crate::BuildError) naming the
//! file; handshakes that start afterwards get the new certificates, and connections already
//! established keep their TLS sessions. The `proxy` example reloads on SIGHUP.
//!
//! ## 8. PROXY protocol
//!
//! *Source for both rules:* HAProxy's PROXY protocol specification, §2.1 (text format, v1) and
//! §2.2 (binary format, v2). Both need the feature `proxy-protocol`.
//!
//! **Rule 38.** Only a listener set up for it reads the header, its peer being a trusted L4 load
//! balancer; there the header is required and must arrive complete within the head deadline,
//! else the connection is closed. The address it carries then stands for the client's in every
//! later rule (forwarding headers, origin policy, per-address limits). `LOCAL` (v2) and
//! `UNKNOWN` (v1) mean the socket's own address is used.
//! *wsrelay:* `ProxyBuilder::proxy_protocol(true)` makes `serve` and `handle` read one header
//! before anything else (TLS included), within the client-head deadline, which then also covers
//! the TLS handshake and the request head; a missing, malformed, truncated or late header closes
//! the connection with nothing written, as
//! [`ProxyError::ProxyProtocol`](crate::ProxyError) with a
//! [`ProxyHeaderError`](crate::ProxyHeaderError), and the backend is never contacted. The
//! header's source is the one client address the flow passes on: `X-Real-IP`,
//! `X-Forwarded-For`, `Forwarded`, the logs and [`Report::client_addr`](crate::Report). v2 TLVs
//! are checked for consistency and ignored; a v2 `PROXY` for an unspecified or Unix family keeps
//! the socket's address; a datagram (UDP) one is refused. The header is read exactly, never a
//! byte past it. Without the option a header is not trusted: it is a malformed request (400).
//! `Proxy::upgrade` (hyper, axum) reads none: the server owns the socket
//! (`proxy_protocol::read_header` can be used in its accept loop).
//!
//! **Rule 39.** Sent to a backend only when configured: version 2, with the client's address and
//! port as source and, as destination, the proxy address the client reached.
//! *wsrelay:* `ProxyBuilder::send_proxy_protocol(true)`: the header (command `PROXY`, TCP, no
//! TLV) is written right after the connect, before a `wss://` backend's TLS handshake, within
//! the connect timeout. The destination is the received header's when there was one, else the
//! listening socket's address (unknown behind hyper/axum: the unspecified address, port 0).
//! IPv4-mapped addresses are sent as IPv4; mixed families as IPv6.
