// The gateway profile's load generator (run by `scripts/loadtest gateway`):
// STREAMS concurrent answers over real sockets, spread over the API keys
// given, a share of them aborted by the client mid-stream (AbortController,
// as the ai SDK's stop button), then a leak check through the service
// alone: one more request per key, whose `RateLimit` header must show
// every lease but its own free again.
//
//   node scripts/loadtest-gateway.mjs <url> <streams> <abort share 0..1> <streams limit> <key>...
//
// Prints one JSON line: statuses, aborts, time-to-headers percentiles
// (ms, the client's view of the admission decision plus the HTTP round
// trip) and the leases leaked per key.

const [url, streamsArg, abortArg, limitArg, ...keys] = process.argv.slice(2);
if (!url || !streamsArg || !abortArg || !limitArg || keys.length === 0) {
  console.error("usage: node loadtest-gateway.mjs <url> <streams> <abort share> <streams limit> <key>...");
  process.exit(2);
}
const streams = Number(streamsArg);
const abortShare = Number(abortArg);
const limit = Number(limitArg);
const body = JSON.stringify({ messages: [{ role: "user", content: "Why is the sky blue?" }] });

// A fixed seed, so runs abort the same share at the same points.
let seed = 0x2545f491;
function random() {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 0x100000000;
}

function post(key, signal) {
  return fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json",
      authorization: `Bearer ${key}`,
    },
    body,
    signal,
  });
}

const statuses = {};
const headerMs = [];
let aborted = 0;
let finished = 0;
let errors = 0;

async function one(i) {
  const key = keys[i % keys.length];
  const controller = new AbortController();
  const abortAfter = random() < abortShare ? 1 + Math.floor(random() * 10) : -1;
  const started = performance.now();
  let response;
  try {
    response = await post(key, controller.signal);
  } catch (error) {
    errors += 1;
    return;
  }
  headerMs.push(performance.now() - started);
  statuses[response.status] = (statuses[response.status] ?? 0) + 1;
  if (response.status !== 200) {
    await response.text();
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let deltas = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      deltas += decoder.decode(value, { stream: true }).split('"text-delta"').length - 1;
      if (abortAfter >= 0 && deltas >= abortAfter) {
        controller.abort();
        aborted += 1;
        return;
      }
    }
    finished += 1;
  } catch (error) {
    if (error.name !== "AbortError") errors += 1;
  }
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/// The `r` of the `"streams"` item of a RateLimit header.
function streamsLeft(fields) {
  const item = (fields ?? "").split(", ").find((i) => i.startsWith('"streams";'));
  const r = item?.split(";").find((p) => p.startsWith("r="));
  return r === undefined ? undefined : Number(r.slice(2));
}

const wall = performance.now();
await Promise.all(Array.from({ length: streams }, (_, i) => one(i)));
const wallMs = performance.now() - wall;

// The service notices a closed connection at its next write; give the
// last aborts a moment, then count: a request holding its own lease sees
// `limit - 1` free when nothing leaked.
const leaked = {};
for (const key of keys) {
  let left;
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const response = await post(key);
    left = streamsLeft(response.headers.get("ratelimit"));
    await response.text();
    if (left === limit - 1) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  leaked[key.slice(0, 10)] = left === undefined ? "no header" : limit - 1 - left;
}

headerMs.sort((a, b) => a - b);
console.log(
  JSON.stringify({
    streams,
    statuses,
    finished,
    aborted,
    errors,
    wallMs: Math.round(wallMs),
    timeToHeadersMs: {
      p50: +percentile(headerMs, 50).toFixed(2),
      p90: +percentile(headerMs, 90).toFixed(2),
      p99: +percentile(headerMs, 99).toFixed(2),
      max: +headerMs[headerMs.length - 1].toFixed(2),
    },
    leaked,
  }),
);
const leaks = Object.values(leaked).some((n) => n !== 0);
process.exit(leaks || errors > 0 ? 1 : 0);
