"""Checks the Grafana dashboard: its template variables and data source, and
that every panel's query is valid PromQL (promtool parses each one as a
recording rule, with the template variables filled in)."""
import json
import os
import subprocess
import sys
import tempfile

dashboard = json.load(open(sys.argv[1]))
names = {v["name"] for v in dashboard["templating"]["list"]}
missing = {"DS_PROMETHEUS", "model", "worker", "gpu"} - names
assert not missing, f"{sys.argv[1]}: templating lacks {sorted(missing)}"

rules = []
for panel in dashboard["panels"]:
    for target in panel["targets"]:
        where = f"panel {panel['id']} ({panel['title']}) target {target['refId']}"
        assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", f"{where}: data source"
        expr = target["expr"]
        for var, value in (("$model", "m"), ("$worker", ".*"), ("$gpu", ".*")):
            expr = expr.replace(var, value)
        assert "$" not in expr, f"{where}: unknown variable in {target['expr']}"
        rules.append({"record": f"dashboard:panel{panel['id']}:{target['refId']}", "expr": expr})
for variable in dashboard["templating"]["list"]:
    if variable["type"] == "query":
        # label_values(<selector>, label): the selector must parse.
        query = variable["query"]
        assert query.startswith("label_values(") and query.endswith(")"), query
        selector = query[len("label_values("):query.rindex(",")].replace("$model", "m")
        rules.append({"record": f"dashboard:variable:{variable['name']}", "expr": selector})

with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)  # JSON is YAML
try:
    out = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
finally:
    os.unlink(f.name)
if out.returncode != 0:
    sys.exit(f"{sys.argv[1]}: a query does not parse:\n{out.stdout}{out.stderr}")
print(f"{len(dashboard['panels'])} panels, {len(rules)} queries parse")
