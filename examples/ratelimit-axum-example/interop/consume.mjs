// Consumes the service's answer with the ai SDK's own client code and
// prints what it reconstructed, for tests/interop.rs to compare.
//
//   AI_SDK=ai-v5|ai-v7 node consume.mjs <url of /api/generate> <sdk|plain|abort> <question> [deltas]
//
// AI_SDK names the pinned package to use (package.json: ai-v5 is ai 5.x,
// ai-v7 the current major); ai-v5 by default.
//
// `sdk`: DefaultChatTransport sends the body useChat sends and parses the
// stream (parseJsonEventStream + uiMessageChunkSchema, throwing on any
// chunk that does not validate). `plain`: fetch with the plain
// { messages: [{ role, content }] } body, then parseJsonEventStream +
// uiMessageChunkSchema directly, failing on any chunk that does not
// validate. Either way readUIMessageStream rebuilds the message.
// `abort`: as `sdk`, with an AbortController whose abort() (the stop
// button of useChat) is called once `deltas` text deltas have arrived;
// prints what arrived before it, how many chunks still came out after it,
// and how the stream ended.
const sdk = process.env.AI_SDK ?? "ai-v5";
const {
  DefaultChatTransport,
  parseJsonEventStream,
  readUIMessageStream,
  uiMessageChunkSchema,
} = await import(sdk);

const [url, shape, question, abortAfter] = process.argv.slice(2);
if (!url || !["sdk", "plain", "abort"].includes(shape) || question === undefined) {
  console.error("usage: node consume.mjs <url> <sdk|plain|abort> <question> [deltas]");
  process.exit(2);
}

function fail(message) {
  console.error(`interop: ${message}`);
  process.exit(1);
}

const expectedHeaders = {
  "content-type": "text/event-stream",
  "cache-control": "no-cache",
  "x-vercel-ai-ui-message-stream": "v1",
  "x-accel-buffering": "no",
};

function checkResponse(response) {
  if (response.status !== 200) fail(`status ${response.status}`);
  for (const [name, value] of Object.entries(expectedHeaders)) {
    if (response.headers.get(name) !== value) {
      fail(`header ${name}: ${response.headers.get(name)} != ${value}`);
    }
  }
}

async function collect(stream) {
  const out = [];
  for await (const item of stream) out.push(item);
  return out;
}

let chunks;
let requestBody;
if (shape === "abort") {
  const wanted = Number(abortAfter ?? "3");
  const controller = new AbortController();
  const transport = new DefaultChatTransport({
    api: url,
    fetch: async (input, init) => {
      const response = await fetch(input, init);
      checkResponse(response);
      return response;
    },
  });
  const stream = await transport.sendMessages({
    chatId: "chat-interop",
    messages: [{ id: "msg-1", role: "user", parts: [{ type: "text", text: question }] }],
    abortSignal: controller.signal,
    trigger: "submit-message",
    messageId: undefined,
  });
  // Chunks the SDK had already parsed when abort() was called may still
  // come out of the stream before its AbortError: they are counted apart
  // (`late`), since the caller stopped reading at `wanted` deltas.
  const seen = [];
  let late = 0;
  let ended = "finished";
  try {
    for await (const chunk of stream) {
      if (controller.signal.aborted) {
        late += 1;
        continue;
      }
      seen.push(chunk);
      if (seen.filter((c) => c.type === "text-delta").length === wanted) controller.abort();
    }
  } catch (error) {
    ended = error?.name ?? String(error);
  }
  console.log(
    JSON.stringify({
      sdk,
      types: seen.map((c) => c.type),
      deltas: seen.filter((c) => c.type === "text-delta").length,
      late,
      ended,
    }),
  );
  process.exit(0);
}
if (shape === "sdk") {
  const transport = new DefaultChatTransport({
    api: url,
    fetch: async (input, init) => {
      requestBody = JSON.parse(init.body);
      const response = await fetch(input, init);
      checkResponse(response);
      return response;
    },
  });
  const stream = await transport.sendMessages({
    chatId: "chat-interop",
    messages: [{ id: "msg-1", role: "user", parts: [{ type: "text", text: question }] }],
    abortSignal: undefined,
    trigger: "submit-message",
    messageId: undefined,
  });
  chunks = await collect(stream);
} else {
  requestBody = { messages: [{ role: "user", content: question }] };
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(requestBody),
  });
  checkResponse(response);
  const results = await collect(
    parseJsonEventStream({ stream: response.body, schema: uiMessageChunkSchema }),
  );
  chunks = results.map((result, i) => {
    if (!result.success) fail(`chunk ${i} does not validate: ${result.error}`);
    return result.value;
  });
}

const deltas = chunks
  .filter((c) => c.type === "text-delta")
  .map((c) => c.delta)
  .join("");

let message;
const replay = new ReadableStream({
  start(controller) {
    for (const chunk of chunks) controller.enqueue(chunk);
    controller.close();
  },
});
for await (const snapshot of readUIMessageStream({
  stream: replay,
  onError: (error) => fail(`readUIMessageStream: ${error}`),
})) {
  message = snapshot;
}
if (!message) fail("readUIMessageStream produced no message");
const text = message.parts
  .filter((p) => p.type === "text")
  .map((p) => p.text)
  .join("");

console.log(
  JSON.stringify({
    types: chunks.map((c) => c.type),
    deltas,
    text,
    role: message.role,
    metadata: message.metadata,
    requestBody,
    sdk,
  }),
);
