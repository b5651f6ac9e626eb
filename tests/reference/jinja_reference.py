"""Renders Jinja templates exactly as transformers' apply_chat_template does,
for jinja_test.cc to compare Strata's interpreter with: Jinja2 (Debian's
python3-jinja2) in an ImmutableSandboxedEnvironment with trim_blocks,
lstrip_blocks and the loopcontrols extension; transformers' own `tojson`
(json.dumps with ensure_ascii=False); raise_exception(); strftime_now() on a
fixed clock (2026-12-01 12:00:00); and the {% generation %} tag rendering its
body as is.

Usage: jinja_reference.py CASES.json OUT.json
  CASES.json: [{"template": str, "variables": {...}}, ...]
  OUT.json:   [{"ok": true, "output": str} | {"ok": false, "error": str}, ...]
"""
import datetime
import json
import sys

from jinja2 import nodes
from jinja2.exceptions import TemplateError
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment


class GenerationTag(Extension):
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


class RaisedByTemplate(Exception):
    pass


def raise_exception(message):
    raise RaisedByTemplate(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


CLOCK = datetime.datetime(2026, 12, 1, 12, 0, 0)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, "jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: CLOCK.strftime(fmt)
    return env


def main():
    cases = json.load(open(sys.argv[1], encoding="utf-8"))
    env = environment()
    out = []
    for case in cases:
        try:
            text = env.from_string(case["template"]).render(**case["variables"])
            out.append({"ok": True, "output": text})
        except RaisedByTemplate as e:
            out.append({"ok": False, "error": "raise_exception: " + str(e)})
        except (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError,
                ZeroDivisionError, RecursionError, OverflowError) as e:
            out.append({"ok": False, "error": type(e).__name__ + ": " + str(e)})
    json.dump(out, open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False)


if __name__ == "__main__":
    main()
