#!/usr/bin/env bash
# Renders every kustomization under deploy/k8s with `kubectl kustomize` and
# validates each rendered object against the Kubernetes and prometheus-operator
# schemas (deploy/k8s/validate/validate.js).
# Usage: check_k8s.sh SOURCE_DIR NODE_MODULES_DIR
set -euo pipefail
source_dir="$1"
export NODE_PATH="$2"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
n=0
for k in $(cd "$source_dir/deploy/k8s" && find . -name kustomization.yaml | sort); do
  dir="$(dirname "${k#./}")"
  rendered="$out/${dir//\//_}.yaml"
  if ! kubectl kustomize "$source_dir/deploy/k8s/$dir" >"$rendered" 2>"$out/err"; then
    echo "kubectl kustomize deploy/k8s/$dir failed:" >&2
    cat "$out/err" >&2
    exit 1
  fi
  node "$source_dir/deploy/k8s/validate/validate.js" "$rendered"
  n=$((n + 1))
done
((n >= 3)) || { echo "expected the base, the cpu and the cert-manager overlays, found $n kustomizations" >&2; exit 1; }
echo "$n kustomizations render and validate"
