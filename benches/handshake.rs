//! Cost of one proxied handshake's pure work: `rewrite` + encode + `check`, on what Chrome
//! sends (13 header fields) and a typical backend 101.
//!
//! Run: `cargo bench --bench handshake`. Before the criterion runs, it prints the heap
//! allocations each step makes, counted by a wrapping global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use http::{Request, Response};
use wsrelay::handshake::{Answer, ClientInfo, Outgoing, RewriteConfig, Rewriter};
use wsrelay::wire;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CHROME: &[u8] = b"GET /chat?room=lobby HTTP/1.1\r\n\
Host: app.example.com\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://app.example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: session=4b1d0c2a; theme=dark\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

const SWITCH: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\
Upgrade: websocket\r\n\
Connection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15\r\n\
\r\n";

fn parse<T>(
    input: &[u8],
    read: impl for<'a> Fn(
        &'a mut &'a [u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>,
) -> T {
    let mut input = input;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(read(&mut input))
}

fn request() -> Request<()> {
    parse(CHROME, |io| {
        Box::pin(async move { wire::read_request_head(io, &wire::HeadLimits::default()).await })
    })
    .unwrap()
    .0
}

fn response() -> Response<()> {
    parse(SWITCH, |io| {
        Box::pin(async move { wire::read_response_head(io, &wire::HeadLimits::default()).await })
    })
    .unwrap()
    .0
}

/// The work measured: rewrite, encode for the backend, check the answer, encode for the client.
fn proxy_handshake(
    rewriter: &Rewriter,
    client: &ClientInfo,
    request: &Request<()>,
    answer: Response<()>,
    buf: &mut BytesMut,
) -> Outgoing {
    let outgoing = rewriter.rewrite(request, client).expect("valid");
    buf.clear();
    wire::encode_request_head(outgoing.request(), buf);
    match outgoing.check(answer).expect("valid") {
        Answer::Switch(to_client) => {
            buf.clear();
            wire::encode_response_head(&to_client, buf);
        }
        Answer::Refuse(_) => unreachable!(),
    }
    outgoing
}

fn count_allocations(what: &str, f: impl FnOnce()) {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    f();
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    println!("allocations: {what}: {}", after - before);
}

fn report_allocations(rewriter: &Rewriter, client: &ClientInfo) {
    let request = request();
    let mut buf = BytesMut::with_capacity(2048);
    // Warm up lazily initialised statics.
    drop(proxy_handshake(
        rewriter,
        client,
        &request,
        response(),
        &mut buf,
    ));
    let answer = response();
    count_allocations("rewrite", || {
        black_box(rewriter.rewrite(&request, client).unwrap());
    });
    let outgoing = rewriter.rewrite(&request, client).unwrap();
    count_allocations("encode request head (into a reused buffer)", || {
        buf.clear();
        wire::encode_request_head(outgoing.request(), &mut buf);
    });
    count_allocations("check", || {
        black_box(outgoing.check(answer).unwrap());
    });
    let answer = response();
    count_allocations("rewrite + encode + check + encode", || {
        black_box(proxy_handshake(
            rewriter, client, &request, answer, &mut buf,
        ));
    });
}

fn bench(c: &mut Criterion) {
    let rewriter = Rewriter::new(RewriteConfig::default());
    let client = ClientInfo::new("198.51.100.20:51234".parse().unwrap());
    report_allocations(&rewriter, &client);

    let request = request();
    let answer = response();
    let mut buf = BytesMut::with_capacity(2048);
    c.bench_function("rewrite (chrome, 13 headers)", |b| {
        b.iter(|| black_box(rewriter.rewrite(black_box(&request), &client).unwrap()))
    });
    c.bench_function("rewrite + encode + check + encode", |b| {
        b.iter_batched(
            || answer.clone(),
            |answer| {
                black_box(proxy_handshake(
                    &rewriter,
                    &client,
                    black_box(&request),
                    answer,
                    &mut buf,
                ))
            },
            BatchSize::SmallInput,
        )
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    c.bench_function("read_request_head (chrome, from memory)", |b| {
        b.iter(|| {
            let mut input = black_box(CHROME);
            rt.block_on(wire::read_request_head(
                &mut input,
                &wire::HeadLimits::default(),
            ))
            .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
