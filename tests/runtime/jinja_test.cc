// Strata's Jinja interpreter against Jinja2 itself, set up as transformers'
// apply_chat_template sets it up (tests/reference/jinja_reference.py, run
// with Debian's python3-jinja2): byte-identical output on every case, and an
// error here wherever Jinja raises one. First a few hundred snippets that
// exercise the language, then real chat templates (the published
// tokenizer_config.json files of tests/reference/templates, and the ones in
// tools/chat_templates) on every conversation of
// tests/reference/templates/conversations.json.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/jinja/template.h"
#include "tests/test_util.h"

namespace strata::jinja {
namespace {

using nlohmann::ordered_json;

struct Case {
  std::string name;
  std::string source;
  ordered_json variables = ordered_json::object();
};

struct Outcome {
  bool ok = false;
  std::string text;  // the output, or the error
};

std::string FixedClock(const std::string& format) {
  std::tm t{};
  t.tm_year = 2026 - 1900;
  t.tm_mon = 11;
  t.tm_mday = 1;
  t.tm_hour = 12;
  t.tm_wday = 2;  // a Tuesday
  t.tm_yday = 334;
  char buf[256];
  const size_t n = std::strftime(buf, sizeof(buf), format.c_str(), &t);
  return std::string(buf, n);
}

std::vector<Outcome> Reference(const std::vector<Case>& cases) {
  const std::string dir = testing::FreshDir("jinja-reference");
  ordered_json in = ordered_json::array();
  for (const Case& c : cases) in.push_back({{"template", c.source}, {"variables", c.variables}});
  std::ofstream(dir + "/cases.json") << in.dump();
  const char* python = std::getenv("STRATA_PYTHON");
  std::string output;
  const int rc = testing::RunCommand(
      absl::StrCat(python != nullptr ? python : "/usr/bin/python3", " ", STRATA_SOURCE_DIR,
                   "/tests/reference/jinja_reference.py ", dir, "/cases.json ", dir, "/out.json"),
      &output);
  EXPECT_EQ(rc, 0) << output;
  std::vector<Outcome> out;
  const ordered_json results = ordered_json::parse(testing::ReadFile(dir + "/out.json"));
  for (const auto& r : results) {
    out.push_back({r["ok"].get<bool>(), r["ok"].get<bool>() ? r["output"].get<std::string>()
                                                            : r["error"].get<std::string>()});
  }
  return out;
}

Outcome Ours(const Case& c) {
  absl::StatusOr<Template> t = Template::Parse(c.source);
  if (!t.ok()) return {false, std::string(t.status().message())};
  const Value vars = Value::FromJson(c.variables);
  absl::StatusOr<std::string> text = t->Render(vars.dict(), {}, FixedClock);
  if (!text.ok()) return {false, std::string(text.status().message())};
  return {true, *text};
}

// Compares every case; returns how many matched.
int Compare(const std::vector<Case>& cases) {
  const std::vector<Outcome> want = Reference(cases);
  if (want.size() != cases.size()) {
    ADD_FAILURE() << "the reference gave " << want.size() << " results for " << cases.size();
    return 0;
  }
  int matched = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Outcome got = Ours(cases[i]);
    if (want[i].ok) {
      EXPECT_TRUE(got.ok) << cases[i].name << ": Jinja renders it but we fail: " << got.text
                          << "\n--- template ---\n"
                          << cases[i].source;
      if (got.ok) {
        EXPECT_EQ(got.text, want[i].text) << cases[i].name << "\n--- template ---\n"
                                          << cases[i].source;
      }
      matched += got.ok && got.text == want[i].text;
    } else {
      EXPECT_FALSE(got.ok) << cases[i].name << ": Jinja raises (" << want[i].text
                           << ") but we render " << got.text;
      matched += !got.ok;
    }
  }
  return matched;
}

TEST(JinjaTest, SnippetsRenderAsJinja2Does) {
  const ordered_json msgs = ordered_json::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi  there "},
    {"role": "assistant", "content": "Hello!", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1, "b": [true, null, 1.5]}}}]}
  ])");
  const ordered_json vars = {{"messages", msgs},
                             {"n", 7},
                             {"f", 2.5},
                             {"s", "Hello, World"},
                             {"xs", {3, 1, 2}},
                             {"words", {"b", "A", "c", "a"}},
                             {"d", {{"b", 2}, {"a", 1}, {"C", 3}}},
                             {"empty", ordered_json::array()},
                             {"nested", {{"x", {{"y", "deep"}}}}},
                             {"u", "héllo wörld ÄÖ"}};
  const std::vector<std::string> snippets = {
      // Output, literals, operators.
      "{{ 1 }} {{ 1.0 }} {{ -0.5 }} {{ 1e3 }} {{ 2.5e-7 }} {{ 1_000 }} {{ true }} {{ none }}",
      "{{ 'a' 'b' }} {{ \"q'uote\" }} {{ 'esc\\n\\t\\u00e9\\x41' }}",
      "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }} {{ 10 / 5 }}",
      "{{ 7.5 // 2 }} {{ 7.5 % 2 }} {{ 0.1 + 0.2 }} {{ 1 / 3 }} {{ 2 ** -1 }} {{ 1e16 }} {{ 1e-5 "
      "}}",
      "{{ 'ab' * 3 }} {{ [1] * 2 }} {{ [1, 2] + [3] }} {{ 'a' ~ 1 ~ none ~ true }}",
      "{{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 != 2 }} {{ 3 >= 3 }}",
      "{{ 'a' in 'cat' }} {{ 2 in xs }} {{ 'a' in d }} {{ 'z' not in d }} {{ 4 not in xs }}",
      "{{ not 0 }} {{ 0 or 'x' }} {{ 1 and 2 }} {{ none or [] or 'last' }} {{ '' and 1 }}",
      "{{ 'y' if n > 5 else 'n' }}|{{ 'y' if n > 50 }}|{{ -n|abs }} {{ -2 ** 2 }}",
      "{{ (1, 2) }} {{ [] }} {{ {} }} {{ {'a': [1, {'b': none}]} }} {{ ('x',) }}",
      "{{ d }} {{ xs }} {{ s }} {{ f }} {{ words }}",
      // Attributes, items, slices.
      "{{ messages[0].role }} {{ messages[0]['content'] }} {{ "
      "messages[-1].tool_calls[0].function.name }}",
      "{{ nested.x.y }} {{ nested['x']['y'] }} {{ d.b }} {{ xs.1 }} {{ xs[5] }}|{{ d.zz }}|",
      "{{ s[0] }} {{ s[-1] }} {{ s[1:4] }} {{ s[::-1] }} {{ s[::2] }} {{ xs[1:] }} {{ xs[:-1] }} "
      "{{ u[1:4] }}",
      "{{ xs[-2:] }} {{ xs[10:] }} {{ s[-3:-1] }} {{ xs[::-2] }} {{ u[::-1] }}",
      // Undefined.
      "{{ missing }}|{{ missing is defined }}|{{ missing is undefined }}|{{ missing | "
      "default('dflt') }}",
      "{{ '' | default('x') }}|{{ '' | default('x', true) }}|{{ none | default('x') }}",
      "{% for x in missing %}{{ x }}{% else %}none{% endfor %}|{{ missing | length }}",
      "{{ missing.attr }}",
      "{{ missing + 1 }}",
      "{{ missing ~ 'x' }}|{% if missing %}t{% else %}f{% endif %}",
      // Tests.
      "{{ n is odd }} {{ n is even }} {{ 9 is divisibleby 3 }} {{ n is number }} {{ f is float }}",
      "{{ n is integer }} {{ true is integer }} {{ true is boolean }} {{ s is string }} {{ d is "
      "mapping }}",
      "{{ xs is iterable }} {{ s is sequence }} {{ none is none }} {{ n is eq 7 }} {{ n is ne 7 }}",
      "{{ n is gt 3 }} {{ n is lt 3 }} {{ n is ge 7 }} {{ n is le 6 }} {{ 2 is in xs }} {{ range "
      "is callable }}",
      "{{ true is true }} {{ 1 is true }} {{ false is false }} {{ xs is not string }} {{ 'ab' is "
      "lower }}",
      "{{ n is sameas 7 }} {{ n is equalto 7 }} {{ 'AB' is upper }}",
      // Filters.
      "{{ '  x y  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ s | upper }} {{ s | lower }} {{ 'hello "
      "wORLD' | title }}",
      "{{ 'hello WORLD' | capitalize }} {{ u | upper }} {{ u | title }} {{ 'ǅx' | lower }}",
      "{{ xs | length }} {{ s | length }} {{ u | length }} {{ d | count }} {{ xs | first }} {{ xs "
      "| last }}",
      "{{ s | replace('l', 'L') }} {{ s | replace('l', 'L', 2) }} {{ 'abc' | replace('', '-') }}",
      "{{ words | join(', ') }} {{ xs | join }} {{ messages | join('|', attribute='role') }}",
      "{{ xs | sort }} {{ words | sort }} {{ words | sort(case_sensitive=true) }} {{ xs | "
      "sort(reverse=true) }}",
      "{{ messages | sort(attribute='role') | map(attribute='role') | list }}",
      "{{ d | dictsort }} {{ d | dictsort(by='value') }} {{ d | dictsort(reverse=true) }} {{ d | "
      "items | list }}",
      "{{ xs | reverse | list }} {{ s | reverse }} {{ 'abc' | list }} {{ d | list }}",
      "{{ words | unique | list }} {{ words | unique(case_sensitive=true) | list }}",
      "{{ xs | sum }} {{ [1.5, 2] | sum }} {{ messages | map(attribute='content') | map('length') "
      "| sum }}",
      "{{ xs | min }} {{ xs | max }} {{ words | min }} {{ words | max }} {{ [] | max }}",
      "{{ xs | select('odd') | list }} {{ xs | reject('odd') | list }} {{ [0, 1, '', 'a'] | select "
      "| list }}",
      "{{ messages | selectattr('role', 'eq', 'user') | list | length }} {{ messages | "
      "rejectattr('tool_calls') | map(attribute='role') | join(',') }}",
      "{{ messages | selectattr('tool_calls', 'defined') | list | length }} {{ messages | "
      "selectattr('role', 'in', ['user', 'system']) | map(attribute='role') | list }}",
      "{{ xs | map('string') | join('-') }} {{ ['a', 'b'] | map('upper') | list }} {{ messages | "
      "map(attribute='missing', default='-') | list }}",
      "{{ '3' | int + 1 }} {{ '3.7' | float }} {{ 'x' | int }} {{ 'x' | int(9) }} {{ 3.99 | int }} "
      "{{ '0x1A' | int(0, 16) }}",
      "{{ 2.5 | round }} {{ 3.14159 | round(2) }} {{ 2.5 | round(0, 'floor') }} {{ -3 | abs }} {{ "
      "-2.5 | abs }}",
      "{{ 'a\\nb\\n\\nc' | indent }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent(2, "
      "blank=true) }}",
      "{{ xs | batch(2) | list }} {{ xs | batch(2, 'x') | list }} {{ 'a b  c\\nd' | wordcount }}",
      "{{ s | string }} {{ 5 | string }} {{ none | string }} {{ s | safe }} {{ d | items | first "
      "}}",
      "{{ '%s-%d' | format('a', 3) }} {{ '%s and %s' % ('x', 'y') }} {{ '%d%%' % 50 }}",
      // tojson as transformers defines it.
      "{{ messages | tojson }}",
      "{{ messages[2] | tojson(indent=4) }}",
      "{{ d | tojson(sort_keys=true) }} {{ u | tojson }} {{ 'q\"\\\\\\n\\t\\u0001<>&' | tojson }} "
      "{{ 1.0 | tojson }} {{ [] | tojson(indent=2) }}",
      "{{ {'k': {}} | tojson(indent=2) }}",
      // Methods.
      "{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  a'.lstrip() }}|{{ 'a  '.rstrip() "
      "}}|{{ 'a,b,,c'.split(',') }}",
      "{{ ' a  b c '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a b c'.rsplit(' ', 1) }} {{ "
      "'a\\nb\\r\\nc'.splitlines() }}",
      "{{ s.startswith('Hell') }} {{ s.endswith(('x', 'ld')) }} {{ s.upper() }} {{ s.lower() }} {{ "
      "s.title() }}",
      "{{ s.replace('o', '0') }} {{ s.find('o') }} {{ s.rfind('o') }} {{ s.count('l') }} {{ "
      "'-'.join(['a', 'b']) }}",
      "{{ '{} and {}'.format('x', 'y') }} {{ '{0}{1}{0}'.format('a', 'b') }} {{ "
      "'{name}!'.format(name='n') }}",
      "{{ '123'.isdigit() }} {{ 'ab'.isalpha() }} {{ ' '.isspace() }} {{ 'Ab'.islower() }} {{ "
      "'AB'.isupper() }}",
      "{{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 5) }} {{ d.keys() | list }} {{ d.values() "
      "| list }}",
      "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {{ xs.index(2) }} {{ xs.count(3) }}",
      "{{ d.items is callable }} {{ d.items() | list }}",
      "{{ xs.append(4) }}",
      "{{ d.update({'x': 1}) }}",
      "{{ s.__class__ }}",
      // Statements.
      "{% if n > 5 %}big{% elif n > 2 %}mid{% else %}small{% endif %}",
      "{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ "
      "loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
      "{% for x in xs %}{{ loop.previtem }}-{{ loop.nextitem }}|{{ loop.cycle('a', 'b') }};{% "
      "endfor %}",
      "{% for x in xs if x > 1 %}{{ x }}{{ loop.index }}{% endfor %}",
      "{% for x in xs %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 2 %}{% break %}{% endif "
      "%}{{ x }}{% endfor %}",
      "{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %} {% for x in 'héj' %}[{{ x }}]{% "
      "endfor %}",
      "{% for k in d %}{{ k }}{% endfor %} {% for i in range(3) %}{{ i }}{% endfor %} {{ range(1, "
      "10, 3) | list }} {{ range(5, 0, -2) | list }}",
      "{% for x in [] %}x{% else %}empty{% endfor %}",
      "{% set a = 1 %}{% for x in xs %}{% set a = a + x %}{% endfor %}{{ a }}",
      "{% set ns = namespace(total=0, found=false) %}{% for x in xs %}{% set ns.total = ns.total + "
      "x %}{% endfor %}{{ ns.total }} {{ ns.found }}",
      "{% set a, b = 1, 2 %}{{ a }}{{ b }} {% set t = (3, 4) %}{{ t }}",
      "{% set block %}inner {{ n }}{% endset %}[{{ block }}] {% set up | upper %}shout{% endset "
      "%}{{ up }}",
      "{% macro m(a, b='B') %}<{{ a }}{{ b }}>{% endmacro %}{{ m(1) }}{{ m(1, 2) }}{{ m(b=3, a=4) "
      "}}",
      "{% macro outer() %}[{{ caller() }}]{% endmacro %}{% call outer() %}inside {{ n }}{% endcall "
      "%}",
      "{% macro r(k) %}{% if k > 0 %}{{ k }}{{ r(k - 1) }}{% endif %}{% endmacro %}{{ r(4) }}",
      "{% filter upper %}up {{ s }}{% endfilter %}",
      "{% raw %}{{ not rendered }} {% if %}{% endraw %}",
      "{# a comment #}x{# another\nmultiline #}y",
      "{% set d2 = {'a': 1} %}{{ d2 }} {% set l2 = xs + [9] %}{{ l2 }}",
      "{{ raise_exception('stop: ' ~ n) }}",
      "{{ strftime_now('%Y-%m-%d %d %b %Y') }}",
      "{% generation %}gen {{ n }}{% endgeneration %}",
      "{{ dict(a=1, b=2) }} {{ namespace(a=1).a }}",
      // Whitespace control (trim_blocks and lstrip_blocks on).
      "a\n  {% if true %}\n  b\n  {% endif %}\nc",
      "a\n  {%- if true -%}\n  b\n  {%- endif %}\nc",
      "a\n  {%+ if true %}x{% endif +%}\nb",
      "a  {{ n }}\n b {{- n -}} c",
      "  {% set q = 1 %}  \nq{# c #}\n  {# c2 #}\nz",
      "x {%- if 1 -%} y {%- endif %}\n z\r\n{% if 1 %}\r\nw{% endif %}",
      "{% for m in messages %}\n  {{ m.role }}\n{% endfor %}\n",
      // Errors Jinja raises.
      "{{ 1 / 0 }}",
      "{{ 'a' + 1 }}",
      "{{ [1] < 'a' }}",
      "{% if %}{% endif %}",
      "{% for x in xs %}",
      "{{ x | nosuchfilter }}",
      "{{ 1 is nosuchtest }}",
      "{% endif %}",
      "{{ 'unterminated }}",
      "{{ n.x.y }}",
      "{{ xs[1:2:0] }}",
      "{% set a.b = 1 %}",
  };
  std::vector<Case> cases;
  for (size_t i = 0; i < snippets.size(); ++i) {
    cases.push_back({absl::StrCat("snippet ", i), snippets[i], vars});
  }
  EXPECT_EQ(Compare(cases), static_cast<int>(cases.size()));
}

// The real templates on every conversation.
TEST(JinjaTest, RealChatTemplatesRenderAsTransformersDoes) {
  const std::string root = std::string(STRATA_SOURCE_DIR) + "/tests/reference/templates";
  const ordered_json conversations =
      ordered_json::parse(testing::ReadFile(root + "/conversations.json"));
  ASSERT_GE(conversations.size(), 12u);
  std::vector<std::pair<std::string, ordered_json>> templates;  // name, config
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    const std::string path = entry.path().string();
    if (entry.path().extension() != ".json" || entry.path().filename() == "conversations.json") {
      continue;
    }
    const ordered_json config = ordered_json::parse(testing::ReadFile(path));
    const std::string name = entry.path().stem().string();
    if (config["chat_template"].is_array()) {
      for (const auto& named : config["chat_template"]) {
        ordered_json c = config;
        c["chat_template"] = named["template"];
        templates.emplace_back(name + ":" + named["name"].get<std::string>(), c);
      }
    } else {
      templates.emplace_back(name, config);
    }
  }
  // The transcriptions kept with the tools.
  for (const char* name : {"chatml", "hunyuan", "llama2"}) {
    ordered_json c = {
        {"chat_template", testing::ReadFile(std::string(STRATA_SOURCE_DIR) +
                                            "/tools/chat_templates/" + name + ".jinja")},
        {"bos_token", "<s>"},
        {"eos_token", "</s>"}};
    templates.emplace_back(name, c);
  }
  ASSERT_GE(templates.size(), 15u);
  std::vector<Case> cases;
  for (const auto& [name, config] : templates) {
    for (size_t i = 0; i < conversations.size(); ++i) {
      ordered_json vars = conversations[i];
      // As apply_chat_template: tools and documents are always passed.
      if (!vars.contains("tools")) vars["tools"] = nullptr;
      if (!vars.contains("documents")) vars["documents"] = nullptr;
      for (auto it = config.begin(); it != config.end(); ++it) {
        if (it.key() != "chat_template" && it.key() != "source") vars[it.key()] = it.value();
      }
      cases.push_back({absl::StrCat(name, " / conversation ", i),
                       config["chat_template"].get<std::string>(), vars});
    }
  }
  const int matched = Compare(cases);
  EXPECT_EQ(matched, static_cast<int>(cases.size()));
  std::cout << templates.size() << " templates x " << conversations.size()
            << " conversations: " << matched << " of " << cases.size() << " identical\n";
}

TEST(JinjaTest, SyntaxErrorsNameLineAndColumn) {
  absl::StatusOr<Template> t = Template::Parse("line one\n{% if x %}\n  {{ x + }}\n{% endif %}");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("line 3, column"), std::string::npos) << t.status();
  t = Template::Parse("{% for x in y %}never closed");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("endfor"), std::string::npos) << t.status();
  t = Template::Parse("ok\n\n  {{ 'open");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("line 3, column 6"), std::string::npos) << t.status();
}

TEST(JinjaTest, RaiseExceptionIsAFailedPreconditionWithTheMessage) {
  auto t = Template::Parse(
      "{% if messages|length == 0 %}{{ raise_exception('No messages!') }}{% endif %}");
  ASSERT_TRUE(t.ok());
  Dict vars;
  vars.Set("messages", Value::MakeList());
  const absl::StatusOr<std::string> r = t->Render(vars);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.status().message(), "No messages!");
}

// A hostile template is stopped by its limits, quickly, with an error.
TEST(JinjaTest, HostileTemplatesHitTheirLimits) {
  struct Hostile {
    const char* what;
    const char* source;
  };
  const Hostile cases[] = {
      {"a long loop", "{% for i in range(1000000000) %}{% endfor %}"},
      {"nested loops",
       "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"},
      {"deep recursion", "{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}"},
      {"an output bomb", "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}"},
      {"a doubling string",
       "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% "
       "endfor %}"},
      {"a repetition", "{{ 'x' * 10000000000 }}"},
  };
  for (const Hostile& h : cases) {
    auto t = Template::Parse(h.source);
    ASSERT_TRUE(t.ok()) << h.what << ": " << t.status();
    RenderLimits limits;
    limits.max_steps = 1'000'000;
    limits.max_output = 1 << 20;
    const absl::StatusOr<std::string> r = t->Render({}, limits);
    EXPECT_FALSE(r.ok()) << h.what;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted)
        << h.what << ": " << r.status();
  }
  // Parsing is bounded too: deeply nested brackets are an error, not a stack overflow.
  EXPECT_FALSE(Template::Parse("{{ " + std::string(100000, '(') + " }}").ok());
  EXPECT_FALSE(Template::Parse("{{ " + std::string(100000, '[') + " }}").ok());
  EXPECT_FALSE(Template::Parse(std::string(5000, '{') + "%").ok());
}

}  // namespace
}  // namespace strata::jinja
