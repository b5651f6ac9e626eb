// Validates Kubernetes objects (a YAML stream, as `kubectl kustomize` prints
// it) against the OpenAPI schemas of the Kubernetes API and of the CRDs of
// prometheus-operator and cert-manager, as compiled by the kubernetes-models
// packages.
// Usage: node validate.js RENDERED.yaml [...]; exit 1 on the first file with
// an invalid object or one whose apiVersion/kind has no schema here.
"use strict";
const fs = require("fs");
const YAML = require("yaml");

// apiVersion -> the module holding its models.
function modelsFor(apiVersion) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com") {
    return require(`@kubernetes-models/prometheus-operator/${group}/${version}`);
  }
  if (group === "cert-manager.io") {
    return require(`@kubernetes-models/cert-manager/${group}/${version}`);
  }
  return require(group === "" ? `kubernetes-models/${version}` : `kubernetes-models/${group}/${version}`);
}

function validate(file) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  const problems = [];
  let count = 0;
  for (const doc of docs) {
    if (doc.errors.length) {
      problems.push(`${file}: YAML: ${doc.errors[0].message}`);
      continue;
    }
    const object = doc.toJS();
    if (object === null) continue;
    const what = `${object.kind}/${object.metadata && object.metadata.name}`;
    let Model;
    try {
      Model = modelsFor(object.apiVersion)[object.kind];
    } catch (e) {
      Model = undefined;
    }
    if (!Model) {
      problems.push(`${file}: ${what}: no schema for apiVersion ${object.apiVersion} kind ${object.kind}`);
      continue;
    }
    try {
      new Model(object).validate();
      ++count;
    } catch (e) {
      const details = (e.errors || []).map((x) => `\n    ${x.instancePath || "/"} ${x.message}` +
        (x.params && x.params.additionalProperty ? ` (${x.params.additionalProperty})` : ""));
      problems.push(`${file}: ${what}: ${e.message}${details.join("")}`);
    }
  }
  if (count === 0 && problems.length === 0) problems.push(`${file}: no objects`);
  return { count, problems };
}

let failed = false;
for (const file of process.argv.slice(2)) {
  const { count, problems } = validate(file);
  for (const p of problems) console.error(p);
  if (problems.length) failed = true;
  else console.log(`${file}: ${count} objects valid`);
}
process.exit(failed ? 1 : 0);
