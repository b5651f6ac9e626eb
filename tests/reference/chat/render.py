#!/usr/bin/python3
"""Renders conversations with a Jinja chat template as Hugging Face's
apply_chat_template does (jinja2, trim_blocks, lstrip_blocks, loop controls,
raise_exception, tojson), as the reference for Strata's built-in renderers.

Usage: render.py TEMPLATE CONVERSATIONS_JSON
TEMPLATE is a tokenizer_config.json (its chat_template, bos_token and
eos_token) or a .jinja file (bos "<s>", eos "</s>"). CONVERSATIONS_JSON is a
list of {"messages": [...], "add_generation_prompt": bool}. Prints a JSON list
with, for each, {"text": ...} or {"error": ...}.
"""
import json
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def main():
    source, conversations = sys.argv[1], json.load(open(sys.argv[2], encoding="utf-8"))
    bos, eos = "<s>", "</s>"
    if source.endswith(".json"):
        config = json.load(open(source, encoding="utf-8"))
        template_text = config["chat_template"]

        def token(value):
            return value.get("content", "") if isinstance(value, dict) else (value or "")

        bos, eos = token(config.get("bos_token")), token(config.get("eos_token"))
    else:
        template_text = open(source, encoding="utf-8").read()
        if template_text.endswith("\n"):  # the file's last newline is not the template's
            template_text = template_text[:-1]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(template_text)
    results = []
    for c in conversations:
        try:
            text = template.render(messages=c["messages"], bos_token=bos, eos_token=eos,
                                   add_generation_prompt=c["add_generation_prompt"], tools=None)
            results.append({"text": text})
        except jinja2.exceptions.TemplateError as e:
            results.append({"error": str(e)})
    json.dump(results, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
