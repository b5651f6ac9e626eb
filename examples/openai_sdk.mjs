// The official OpenAI SDK pointed at Strata. Install it once with
//   npm install openai@4
// start a cluster with `strata up --http-listen 127.0.0.1:8000`, then
//   node examples/openai_sdk.mjs [http://127.0.0.1:8000/v1] [API_KEY]
import OpenAI from "openai";

const baseURL = process.argv[2] ?? "http://127.0.0.1:8000/v1";
const client = new OpenAI({ baseURL, apiKey: process.argv[3] ?? "none" });
const model = (await client.models.list()).data[0].id;

const completion = await client.completions.create({
  model, prompt: "Once upon a time", max_tokens: 16, temperature: 0.8,
});
console.log("completion:", JSON.stringify(completion.choices[0].text),
            "seed", completion.seed, "(send it back to reproduce)");

const stream = await client.chat.completions.create({
  model, messages: [{ role: "user", content: "Tell me about the sea" }],
  max_tokens: 16, stream: true,
});
process.stdout.write("chat: ");
for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? "");
console.log();
