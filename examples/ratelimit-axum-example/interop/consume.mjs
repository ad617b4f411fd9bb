// Consumes the service's answer with the ai SDK v5's own client code and
// prints what it reconstructed, for tests/interop.rs to compare.
//
//   node consume.mjs <url of /api/generate> <sdk|plain> <question>
//
// `sdk`: DefaultChatTransport sends the body useChat sends and parses the
// stream (parseJsonEventStream + uiMessageChunkSchema, throwing on any
// chunk that does not validate). `plain`: fetch with the plain
// { messages: [{ role, content }] } body, then parseJsonEventStream +
// uiMessageChunkSchema directly, failing on any chunk that does not
// validate. Either way readUIMessageStream rebuilds the message.
import {
  DefaultChatTransport,
  parseJsonEventStream,
  readUIMessageStream,
  uiMessageChunkSchema,
} from "ai";

const [url, shape, question] = process.argv.slice(2);
if (!url || !["sdk", "plain"].includes(shape) || question === undefined) {
  console.error("usage: node consume.mjs <url> <sdk|plain> <question>");
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
  }),
);
