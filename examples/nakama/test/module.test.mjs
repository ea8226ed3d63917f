// The compiled Nakama module against a real gameye-bridge (its embedded Gameye emulator), with a
// recording fake of Nakama's runtime (`nk`) whose httpRequest really calls the bridge, and a fake
// Nakama HTTP API that receives the bridge's push and runs the module's RPC with it, as Nakama would.
//
// Needs build/main.js (tsc -p tsconfig.json) and the gameye-bridge binary (GAMEYE_BRIDGE_BIN, default
// ../../target/debug/gameye-bridge). scripts/nakama-example-test.sh does both.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { readFileSync, existsSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import vm from "node:vm";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const moduleRoot = path.resolve(here, "..");
const bridgeBinary = process.env.GAMEYE_BRIDGE_BIN || path.resolve(moduleRoot, "../../target/debug/gameye-bridge");
const TOKEN = "node-test-token";
const HMAC_SECRET = "node-test-hmac-secret";
const HTTP_KEY = "node-test-http-key";
const SYSTEM_CTX = { executionMode: "event", node: "nakama1", userId: "", username: "", sessionId: "" };

// ------------------------------------------------------------------------------------------------
// A fake Nakama runtime.

/** nk.httpRequest is synchronous in Nakama; a child process makes the real HTTP call meanwhile. */
const FETCH_HELPER = `
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", async () => {
  const request = JSON.parse(input);
  try {
    const response = await fetch(request.url, {
      method: request.method.toUpperCase(), headers: request.headers, body: request.body,
      signal: AbortSignal.timeout(request.timeout),
    });
    const headers = {};
    response.headers.forEach((value, name) => (headers[name] = value));
    process.stdout.write(JSON.stringify({ code: response.status, headers, body: await response.text() }));
  } catch (error) {
    process.stdout.write(JSON.stringify({ error: String(error) }));
  }
});`;

function syncHttp(url, method, headers, body, timeout) {
  const result = spawnSync(process.execPath, ["-e", FETCH_HELPER], {
    input: JSON.stringify({ url, method, headers: headers || {}, body, timeout: timeout || 5000 }),
    encoding: "utf8",
    timeout: (timeout || 5000) + 5000,
  });
  const answer = JSON.parse(result.stdout || '{"error":"no answer"}');
  if (answer.error) {
    throw new Error(answer.error); // Nakama throws a GoError the same way
  }
  return answer;
}

function fakeNk() {
  const storage = new Set();
  const recorded = { requests: [], notifications: [], logs: [] };
  const nk = {
    recorded,
    httpRequest(url, method, headers, body, timeout) {
      const response = syncHttp(url, method, headers, body, timeout);
      recorded.requests.push({ url, method, headers, body, timeout, response });
      return response;
    },
    notificationsSend(notifications) {
      recorded.notifications.push(...notifications);
    },
    storageWrite(objects) {
      for (const object of objects) {
        const key = `${object.collection}/${object.userId}/${object.key}`;
        if (object.version === "*" && storage.has(key)) {
          throw new Error("Storage write rejected - version check failed.");
        }
        storage.add(key);
      }
      return objects.map((o) => ({ collection: o.collection, key: o.key, userId: o.userId, version: "v1" }));
    },
    hmacSha256Hash(input, key) {
      const digest = createHmac("sha256", key).update(input, "utf8").digest();
      return digest.buffer.slice(digest.byteOffset, digest.byteOffset + digest.byteLength);
    },
    base16Encode(input) {
      return Buffer.from(input).toString("hex");
    },
    uuidv4() {
      return randomUUID();
    },
  };
  return nk;
}

function fakeLogger(logs) {
  const log = (level) => (format, ...params) => logs.push(`${level} ${format} ${params.join(" ")}`);
  return { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") };
}

/** Loads build/main.js as Nakama does (a plain script defining a global InitModule) and runs it. */
function loadModule(env) {
  const code = readFileSync(path.join(moduleRoot, "build", "main.js"), "utf8");
  const context = vm.createContext({});
  vm.runInContext(code, context, { filename: "main.js" });
  assert.equal(typeof context.InitModule, "function", "the module defines a global InitModule");
  const registered = { rpcs: {}, matched: null, sessionEnd: null };
  const initializer = {
    registerMatchmakerMatched: (fn) => (registered.matched = fn),
    registerRpc: (id, fn) => (registered.rpcs[id] = fn),
    registerEventSessionEnd: (fn) => (registered.sessionEnd = fn),
  };
  const nk = fakeNk();
  const logger = fakeLogger(nk.recorded.logs);
  context.InitModule({ ...SYSTEM_CTX, env }, logger, nk, initializer);
  assert.ok(registered.matched, "InitModule registers the matched hook");
  assert.ok(registered.rpcs.gameye_bridge_result, "InitModule registers the result RPC");
  assert.ok(registered.sessionEnd, "InitModule registers the session end handler");
  return { registered, nk, logger, env };
}

function matchedEntry(userId, properties) {
  return {
    presence: { userId, sessionId: randomUUID(), username: `name-${userId}`, node: "nakama1" },
    properties,
  };
}

// ------------------------------------------------------------------------------------------------
// A fake Nakama HTTP API for the push: runs the loaded module's RPC, as Nakama's /v2/rpc does.

let nakamaApi;
let bridge;

function startNakamaApi() {
  const state = { pushes: [], module: null };
  const server = http.createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      const url = new URL(request.url, "http://nakama");
      state.pushes.push({ path: url.pathname, query: url.search, authorization: request.headers.authorization, body });
      const reply = (status, payload) => {
        response.writeHead(status, { "content-type": "application/json" });
        response.end(payload);
      };
      if (request.headers.authorization !== "Basic " + Buffer.from(`${HTTP_KEY}:`).toString("base64")) {
        return reply(401, JSON.stringify({ error: "Invalid authentication credentials.", message: "Invalid authentication credentials.", code: 16 }));
      }
      const id = url.pathname.replace(/^\/v2\/rpc\//, "");
      const rpc = state.module && state.module.registered.rpcs[id];
      if (!rpc || !url.searchParams.has("unwrap")) {
        return reply(404, JSON.stringify({ error: "RPC function not found", message: "RPC function not found", code: 5 }));
      }
      try {
        const m = state.module;
        reply(200, rpc({ ...SYSTEM_CTX, env: m.env }, m.logger, m.nk, body) || "");
      } catch (error) {
        const status = { 3: 400, 7: 403 }[error.code] || 500;
        reply(status, JSON.stringify({ error: error.message, message: error.message, code: error.code || 13 }));
      }
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, state, url: `http://127.0.0.1:${server.address().port}` })));
}

function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function startBridge(rpcUrl) {
  assert.ok(existsSync(bridgeBinary), `gameye-bridge binary at ${bridgeBinary} (cargo build first)`);
  const port = await freePort();
  const child = spawn(bridgeBinary, ["serve", "--listen", `127.0.0.1:${port}`], {
    env: {
      PATH: process.env.PATH,
      BRIDGE_HTTP__TOKENS: `["${TOKEN}"]`,
      BRIDGE_NAKAMA__HMAC_SECRET: HMAC_SECRET,
      BRIDGE_NAKAMA__RPC_URL: rpcUrl,
      BRIDGE_NAKAMA__HTTP_KEY: HTTP_KEY,
      BRIDGE_LOG__LEVEL: "warn",
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let logs = "";
  child.stderr.on("data", (chunk) => (logs += chunk));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      throw new Error(`gameye-bridge exited: ${logs}`);
    }
    try {
      if ((await fetch(`${url}/healthz`)).ok) {
        return { child, url, logs: () => logs };
      }
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  child.kill();
  throw new Error(`gameye-bridge did not start: ${logs}`);
}

async function eventually(what, check) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const value = check();
    if (value) {
      return value;
    }
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

before(async () => {
  nakamaApi = await startNakamaApi();
  bridge = await startBridge(nakamaApi.url);
});

after(async () => {
  if (bridge && bridge.child.exitCode === null) {
    const exited = new Promise((resolve) => bridge.child.once("exit", resolve));
    bridge.child.kill("SIGTERM");
    await exited;
  }
  // The bridge's pooled keep-alive connections would hold the server (and this process) open.
  nakamaApi?.server.closeAllConnections();
  nakamaApi?.server.close();
});

function moduleEnv(extra = {}) {
  return { GAMEYE_BRIDGE_URL: bridge.url, GAMEYE_BRIDGE_HMAC_SECRET: HMAC_SECRET, GAMEYE_BRIDGE_PUSH: "true", ...extra };
}

// ------------------------------------------------------------------------------------------------

test("the matched hook places the match and notifies every player once, push included", async () => {
  const loaded = loadModule(moduleEnv());
  nakamaApi.state.module = loaded;
  const entries = [
    matchedEntry("user-1", { "latency_us-east-1": 20, "latency_eu-west-1": 90, mode: "ranked" }),
    matchedEntry("user-2", { "latency_us-east-1": 30, "latency_eu-west-1": 95 }),
  ];
  const returned = loaded.registered.matched({ ...SYSTEM_CTX, env: loaded.env }, loaded.logger, loaded.nk, entries);
  assert.equal(returned, undefined, "no Nakama-hosted match: players go to the Gameye server");

  const [call] = loaded.nk.recorded.requests;
  assert.equal(call.url, `${bridge.url}/v1/nakama/matched`);
  assert.equal(call.timeout, 5000);
  assert.match(call.headers["X-Bridge-Signature"], /^sha256=[0-9a-f]{64}$/);
  assert.equal(call.response.code, 200, call.response.body);

  const notifications = loaded.nk.recorded.notifications;
  assert.deepEqual(notifications.map((n) => n.userId), ["user-1", "user-2"]);
  const [first] = notifications;
  assert.equal(first.subject, "gameye_match");
  assert.equal(first.code, 7300);
  assert.deepEqual(Object.keys(first.content).sort(), ["host", "match_id", "port", "ports", "session_id"]);
  const udp = first.content.ports.find((p) => p.type === "udp");
  assert.equal(first.content.port, udp.host, "port is the UDP game port, as Gameye's plugin sends it");

  // The bridge recorded the same placement, in the lowest-latency location.
  const status = await (await fetch(`${bridge.url}/v1/matches/${first.content.match_id}`, { headers: { authorization: `Bearer ${TOKEN}` } })).json();
  assert.equal(status.status, "placed");
  assert.equal(status.assignment.location, "us-east-1");
  assert.equal(status.assignment.session_id, first.content.session_id);
  assert.equal(status.assignment.host, first.content.host);

  // The push reaches Nakama's RPC with the http_key, and notifies nobody twice.
  const push = await eventually("the push", () => nakamaApi.state.pushes.find((p) => p.body.includes(first.content.match_id)));
  assert.equal(push.path, "/v2/rpc/gameye_bridge_result");
  assert.equal(push.query, "?unwrap");
  assert.equal(JSON.parse(push.body).status, "placed");
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(loaded.nk.recorded.notifications.length, 2, "hook and push notify once between them");
});

test("with wait=false the players hear of their match through the pushed RPC", async () => {
  const loaded = loadModule(moduleEnv({ GAMEYE_BRIDGE_WAIT: "false" }));
  nakamaApi.state.module = loaded;
  loaded.registered.matched({ ...SYSTEM_CTX, env: loaded.env }, loaded.logger, loaded.nk, [matchedEntry("user-3", {})]);
  assert.equal(loaded.nk.recorded.requests[0].response.code, 202);
  assert.equal(loaded.nk.recorded.notifications.length, 0, "nothing known yet when the hook returns");
  const notification = await eventually("the pushed notification", () => loaded.nk.recorded.notifications[0]);
  assert.equal(notification.userId, "user-3");
  assert.equal(notification.subject, "gameye_match");
  assert.equal(notification.code, 7300);
  assert.ok(notification.content.host && notification.content.session_id);
});

test("a placement that fails notifies gameye_failed with Gameye's plugin's reason", () => {
  const loaded = loadModule(moduleEnv({ GAMEYE_BRIDGE_IMAGE: "no-such-image", GAMEYE_BRIDGE_PUSH: "false" }));
  nakamaApi.state.module = loaded;
  loaded.registered.matched({ ...SYSTEM_CTX, env: loaded.env }, loaded.logger, loaded.nk, [matchedEntry("user-4", {})]);
  const [notification] = loaded.nk.recorded.notifications;
  assert.ok(notification, loaded.nk.recorded.logs.join("\n"));
  assert.equal(notification.subject, "gameye_failed");
  assert.equal(notification.code, 7301);
  assert.equal(notification.userId, "user-4");
  assert.equal(notification.content.code, "NOT_FOUND", JSON.stringify(notification.content));
  assert.equal(notification.content.reason, "misconfigured");
  assert.equal(typeof notification.content.retryable, "boolean");
});

test("a wrong secret is refused by the bridge and reported, not placed", () => {
  const loaded = loadModule(moduleEnv({ GAMEYE_BRIDGE_HMAC_SECRET: "wrong", GAMEYE_BRIDGE_PUSH: "false" }));
  loaded.registered.matched({ ...SYSTEM_CTX, env: loaded.env }, loaded.logger, loaded.nk, [matchedEntry("user-5", {})]);
  assert.equal(loaded.nk.recorded.requests[0].response.code, 401);
  assert.ok(loaded.nk.recorded.logs.some((line) => line.startsWith("error") && line.includes("UNAUTHORIZED")));
  assert.equal(loaded.nk.recorded.notifications[0].subject, "gameye_failed");
});

/** A private redis-server on a free port, nothing persisted; null when redis-server is missing. */
async function startRedis() {
  if (spawnSync("redis-server", ["--version"]).status !== 0) {
    return null;
  }
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  await until("redis-server listening", () => new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.end(() => resolve(true)));
    socket.on("error", () => resolve(false));
  }));
  return { child, url: `redis://127.0.0.1:${port}` };
}

async function until(what, check) {
  const deadline = Date.now() + 30_000;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test("a bridge that cannot answer (its store down: 503) is treated like a timeout", async (t) => {
  const redis = await startRedis();
  if (!redis) {
    t.skip("redis-server not found");
    return;
  }
  const port = await freePort();
  const stored = spawn(bridgeBinary, ["serve", "--listen", `127.0.0.1:${port}`], {
    env: {
      PATH: process.env.PATH,
      BRIDGE_REDIS__URL: redis.url,
      BRIDGE_GAMEYE__EMULATE: "true",
      BRIDGE_NAKAMA__HMAC_SECRET: HMAC_SECRET,
      BRIDGE_LOG__LEVEL: "error",
    },
    stdio: "ignore",
  });
  try {
    const url = `http://127.0.0.1:${port}`;
    await until("the bridge on Redis", () => fetch(`${url}/healthz`).then((r) => r.ok, () => false));
    const exited = new Promise((resolve) => redis.child.once("exit", resolve));
    redis.child.kill("SIGKILL");
    await exited;

    // With the push configured, the push tells the players (the claim may have been written).
    const pushed = loadModule(moduleEnv({ GAMEYE_BRIDGE_URL: url }));
    pushed.registered.matched({ ...SYSTEM_CTX, env: pushed.env }, pushed.logger, pushed.nk, [matchedEntry("user-7", {})]);
    assert.equal(pushed.nk.recorded.requests[0].response.code, 503, pushed.nk.recorded.requests[0].response.body);
    assert.equal(pushed.nk.recorded.notifications.length, 0, pushed.nk.recorded.logs.join("\n"));

    // Without it, the players hear of a failure worth retrying, not of a misconfiguration.
    const unpushed = loadModule(moduleEnv({ GAMEYE_BRIDGE_URL: url, GAMEYE_BRIDGE_PUSH: "false" }));
    unpushed.registered.matched({ ...SYSTEM_CTX, env: unpushed.env }, unpushed.logger, unpushed.nk, [matchedEntry("user-8", {})]);
    const [notification] = unpushed.nk.recorded.notifications;
    assert.ok(notification, unpushed.nk.recorded.logs.join("\n"));
    assert.equal(notification.subject, "gameye_failed");
    assert.equal(notification.content.code, "STORE_UNAVAILABLE", JSON.stringify(notification.content));
    assert.equal(notification.content.reason, "unavailable");
    assert.equal(notification.content.retryable, true);
  } finally {
    stored.kill("SIGKILL");
    redis.child.kill("SIGKILL");
  }
});

test("players cannot call the result RPC", () => {
  const loaded = loadModule(moduleEnv());
  const payload = JSON.stringify({ status: "placed", match_id: "fake", session_id: "x", host: "198.51.100.1", ports: [], users: ["victim"] });
  assert.throws(
    () => loaded.registered.rpcs.gameye_bridge_result({ ...SYSTEM_CTX, userId: "attacker", env: loaded.env }, loaded.logger, loaded.nk, payload),
    (error) => error.code === 7,
  );
  assert.equal(loaded.nk.recorded.notifications.length, 0);
});

test("session end is forwarded to the bridge's events endpoint", () => {
  const loaded = loadModule(moduleEnv());
  loaded.registered.sessionEnd({ ...SYSTEM_CTX, userId: "user-6", sessionId: "s-6", env: loaded.env }, loaded.logger, loaded.nk, { name: "session_end", properties: {} });
  const [call] = loaded.nk.recorded.requests;
  assert.equal(call.url, `${bridge.url}/v1/nakama/events`);
  assert.equal(call.response.code, 202, call.response.body);
  assert.equal(JSON.parse(call.response.body).accepted, 1);
});
