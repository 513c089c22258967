// WebSocket interop client for tests/interop.rs, on Node's `ws` package.
//
// Connects to URL (through the proxy under test) and exchanges, with an echo server behind
// it: text, binary (up to 1 MiB and around every frame-length boundary), a fragmented
// message (`send` with `fin: false`), ping/pong, many messages in flight, a subprotocol
// negotiation, and a close with a given code and reason whose echo is checked.
//
// `ws` is found through NODE_PATH (tests/interop.rs points it at
// target/interop-node/node_modules, where `.ci/run` installs it).
//
// Prints one line per case (`ok NAME` or `FAIL NAME: why`) and a final
// `interop: N passed, M failed`; exits 0 only when every case passed.
//
// Usage: node ws_client.mjs URL [--subprotocol P ...] [--expect-subprotocol P|none]
//                               [--close-code N] [--close-reason TEXT]

import { createRequire } from "node:module";
import { randomBytes } from "node:crypto";

const require = createRequire(import.meta.url);
let WebSocket;
try {
  WebSocket = require("ws");
} catch (error) {
  console.error(
    `interop: the ws package is not installed (${error.message}); .ci/run installs it with ` +
      "`npm install --prefix target/interop-node ws`",
  );
  process.exit(3);
}

const STEP = 10_000; // milliseconds for any one step
const TOTAL = 90_000; // milliseconds for the whole run

const args = { url: null, subprotocols: [], expect: null, code: 4001, reason: "interop done" };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  switch (argv[i]) {
    case "--subprotocol":
      args.subprotocols.push(argv[++i]);
      break;
    case "--expect-subprotocol":
      args.expect = argv[++i];
      break;
    case "--close-code":
      args.code = Number(argv[++i]);
      break;
    case "--close-reason":
      args.reason = argv[++i];
      break;
    default:
      args.url = argv[i];
  }
}

function within(what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), STEP);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

/// Messages as they arrive, awaited one at a time.
class Inbox {
  constructor(ws) {
    this.queue = [];
    this.waiters = [];
    ws.on("message", (data, isBinary) => {
      const message = isBinary ? Buffer.from(data) : data.toString("utf8");
      const waiter = this.waiters.shift();
      if (waiter) waiter(message);
      else this.queue.push(message);
    });
  }

  next() {
    if (this.queue.length > 0) return Promise.resolve(this.queue.shift());
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

function same(a, b) {
  if (typeof a === "string" || typeof b === "string") return a === b;
  return Buffer.isBuffer(a) && Buffer.isBuffer(b) && a.equals(b);
}

function send(ws, data, options = {}) {
  return new Promise((resolve, reject) =>
    ws.send(data, options, (error) => (error ? reject(error) : resolve())),
  );
}

async function main() {
  let passed = 0;
  let failed = 0;
  const run = async (name, body) => {
    try {
      await within(name, body());
      passed++;
      console.log(`ok ${name}`);
    } catch (error) {
      failed++;
      console.log(`FAIL ${name}: ${error.message}`);
    }
  };
  const version = require("ws/package.json").version;
  console.log(`ws ${version}, node ${process.version}, connecting to ${args.url}`);

  let ws;
  let inbox;
  await run("handshake and subprotocol", async () => {
    ws = new WebSocket(args.url, args.subprotocols, {
      perMessageDeflate: false,
      handshakeTimeout: STEP,
      maxPayload: 4 << 20,
    });
    inbox = new Inbox(ws);
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
      ws.once("unexpected-response", (_, response) =>
        reject(new Error(`handshake answered ${response.statusCode}`)),
      );
    });
    if (args.expect !== null) {
      const expected = args.expect === "none" ? "" : args.expect;
      expect(ws.protocol === expected, `subprotocol '${ws.protocol}', expected '${expected}'`);
    }
  });
  if (!ws || ws.readyState !== WebSocket.OPEN) {
    console.log(`interop: ${passed} passed, ${failed} failed`);
    return 1;
  }

  const echo = async (message, options = {}) => {
    await send(ws, message, options);
    const back = await inbox.next();
    expect(same(back, message), `echo differs (${back.length} back for ${message.length} sent)`);
  };

  await run("text", () => echo("hello through the proxy ✓"));
  await run("empty text", () => echo(""));
  await run("binary", () => echo(Buffer.from([...Array(256).keys()]), { binary: true }));
  await run("empty binary", () => echo(Buffer.alloc(0), { binary: true }));
  for (const size of [125, 126, 65535, 65536]) {
    await run(`binary ${size} bytes`, () => echo(randomBytes(size), { binary: true }));
  }
  await run("binary 1 MiB", () => echo(randomBytes(1 << 20), { binary: true }));

  await run("fragmented text", async () => {
    const parts = ["frag", "mented ", "téxt ✓"];
    for (const [i, part] of parts.entries()) {
      await send(ws, part, { binary: false, fin: i === parts.length - 1 });
    }
    const back = await inbox.next();
    expect(back === parts.join(""), `got '${back}'`);
  });

  await run("ping/pong", async () => {
    for (const payload of [Buffer.alloc(0), Buffer.from("ping payload"), randomBytes(125)]) {
      const pong = new Promise((resolve) => ws.once("pong", resolve));
      ws.ping(payload);
      const got = await pong;
      expect(Buffer.from(got).equals(payload), "pong payload differs");
    }
  });

  await run("200 messages in flight", async () => {
    const messages = [...Array(200).keys()].map((i) =>
      i % 2 ? `message ${i}` : randomBytes(i * 37),
    );
    for (const message of messages) {
      ws.send(message, { binary: typeof message !== "string" });
    }
    for (const message of messages) {
      const back = await inbox.next();
      expect(same(back, message), "messages reordered or changed");
    }
  });

  await run(`close ${args.code} echoed`, async () => {
    const closed = new Promise((resolve) =>
      ws.once("close", (code, reason) => resolve([code, reason.toString()])),
    );
    ws.close(args.code, args.reason);
    const [code, reason] = await closed;
    expect(code === args.code, `close code ${code}, expected ${args.code}`);
    expect(reason === args.reason, `close reason '${reason}', expected '${args.reason}'`);
  });

  console.log(`interop: ${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

const deadline = setTimeout(() => {
  console.log(`interop: timed out after ${TOTAL} ms`);
  process.exit(1);
}, TOTAL);
main().then(
  (code) => {
    clearTimeout(deadline);
    process.exit(code);
  },
  (error) => {
    console.log(`interop: ${error.stack}`);
    process.exit(1);
  },
);
