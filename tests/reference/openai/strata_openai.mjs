// Drives Strata's HTTP API with the official OpenAI SDK (npm `openai`) and
// prints what came back as one JSON object, for openai_sdk_test.cc.
// Usage: node strata_openai.mjs BASE_URL API_KEY MODEL STOP
import OpenAI from "openai";

const [baseURL, apiKey, model, stop] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
const prompt = "The old lighthouse keeper";
const messages = [{ role: "user", content: "Tell me about the sea" }];
const out = {};

// Completions: greedy, not streamed, with token ids (Strata's extension).
const c = await client.completions.create({
  model, prompt, max_tokens: 12, temperature: 0, ignore_eos: true, return_token_ids: true,
});
out.completion = {
  text: c.choices[0].text, token_ids: c.choices[0].token_ids,
  finish_reason: c.choices[0].finish_reason, usage: c.usage, object: c.object,
};

// The same, streamed, with usage at the end.
const s = await client.completions.create({
  model, prompt, max_tokens: 12, temperature: 0, ignore_eos: true, stream: true,
  stream_options: { include_usage: true },
});
let streamed = "", streamUsage = null, streamFinish = null;
for await (const chunk of s) {
  if (chunk.usage) streamUsage = chunk.usage;
  for (const ch of chunk.choices) {
    streamed += ch.text;
    if (ch.finish_reason) streamFinish = ch.finish_reason;
  }
}
out.completion_stream = { text: streamed, usage: streamUsage, finish_reason: streamFinish };

// Chat, not streamed and streamed.
const chat = await client.chat.completions.create({
  model, messages, max_tokens: 8, temperature: 0, ignore_eos: true,
});
out.chat = { content: chat.choices[0].message.content, role: chat.choices[0].message.role,
             usage: chat.usage, finish_reason: chat.choices[0].finish_reason };
const cs = await client.chat.completions.create({
  model, messages, max_tokens: 8, temperature: 0, ignore_eos: true, stream: true,
});
let chatStreamed = "", roles = [];
for await (const chunk of cs) {
  for (const ch of chunk.choices) {
    if (ch.delta.role) roles.push(ch.delta.role);
    if (ch.delta.content) chatStreamed += ch.delta.content;
  }
}
out.chat_stream = { content: chatStreamed, roles };

// Seeded sampling reproduces; the seed comes back.
const seeded = await client.completions.create({
  model, prompt: "Once upon a time", max_tokens: 16, temperature: 0.9, seed: 1234,
  ignore_eos: true, return_token_ids: true,
});
out.seeded = { token_ids: seeded.choices[0].token_ids, seed: seeded.seed };
const unseeded = await client.completions.create({
  model, prompt: "Once upon a time", max_tokens: 16, temperature: 0.9, ignore_eos: true,
  return_token_ids: true,
});
const replay = await client.completions.create({
  model, prompt: "Once upon a time", max_tokens: 16, temperature: 0.9, seed: unseeded.seed,
  ignore_eos: true, return_token_ids: true,
});
out.unseeded = { token_ids: unseeded.choices[0].token_ids, seed: unseeded.seed,
                 replay: replay.choices[0].token_ids };

// n = 3 seeded samples of one prompt: choice j used seed + j.
const three = await client.completions.create({
  model, prompt: "Once upon a time", max_tokens: 16, temperature: 0.9, seed: 1234, n: 3,
  ignore_eos: true, return_token_ids: true,
});
out.n3 = { seed: three.seed, usage: three.usage,
           choices: three.choices.map((ch) => ({ index: ch.index, token_ids: ch.token_ids,
                                                 text: ch.text })) };
// The same as chat, streamed and not: per choice, the deltas make the text.
const chatThree = { model, messages, max_tokens: 8, temperature: 1.0, seed: 99, n: 3,
                    ignore_eos: true };
const chat3 = await client.chat.completions.create(chatThree);
const chat3s = await client.chat.completions.create({ ...chatThree, stream: true });
const parts = ["", "", ""];
for await (const chunk of chat3s) {
  for (const ch of chunk.choices) parts[ch.index] += ch.delta.content ?? "";
}
out.chat_n3 = { contents: chat3.choices.map((ch) => ch.message.content), streamed: parts,
                completion_tokens: chat3.usage.completion_tokens };

// Two prompts in one request.
const batch = await client.completions.create({
  model, prompt: [prompt, "Once upon a time"], max_tokens: 12, temperature: 0, ignore_eos: true,
  return_token_ids: true,
});
out.batch = { texts: batch.choices.map((ch) => ch.text), usage: batch.usage };

// Presence and frequency penalties (greedy).
const penalised = await client.completions.create({
  model, prompt, max_tokens: 24, temperature: 0, presence_penalty: 1.5, frequency_penalty: 1.0,
  ignore_eos: true, return_token_ids: true,
});
out.penalised = { token_ids: penalised.choices[0].token_ids };

// Chat log-probabilities with the top 3 alternatives.
const lp = await client.chat.completions.create({
  model, messages, max_tokens: 6, temperature: 0, ignore_eos: true, logprobs: true,
  top_logprobs: 3,
});
out.chat_logprobs = lp.choices[0].logprobs.content.map((e) => ({
  token: e.token, logprob: e.logprob, top: e.top_logprobs.map((t) => [t.token, t.logprob]),
}));

// A stop sequence.
const stopped = await client.completions.create({
  model, prompt, max_tokens: 40, temperature: 0, stop: [stop], ignore_eos: true,
});
out.stop = { text: stopped.choices[0].text, finish_reason: stopped.choices[0].finish_reason };

// Models, and errors as the SDK raises them.
const models = await client.models.list();
out.models = models.data.map((m) => m.id);
for (const [name, req] of [
  ["unknown_model", { model: "gpt-4o", prompt }],
  ["huge_n", { model, prompt, n: 65 }],
  ["unsupported_best_of", { model, prompt, n: 2, best_of: 4 }],
]) {
  try {
    await client.completions.create(req);
    out[name] = { status: 200 };
  } catch (e) {
    out[name] = { status: e.status, param: e.param, code: e.code, message: e.message };
  }
}
const wrongKey = new OpenAI({ baseURL, apiKey: "sk-not-a-key-000000000", maxRetries: 0 });
try {
  await wrongKey.models.list();
  out.wrong_key = { status: 200 };
} catch (e) {
  out.wrong_key = { status: e.status };
}
console.log(JSON.stringify(out));
