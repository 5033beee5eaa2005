#!/usr/bin/env bash
# Install each stack into its own fresh venv and run the whole test suite there; what .ci/run runs.
#   pinned   constraints.txt: numpy 1.26 and all four backends (MXNet needs numpy < 2); all required
#   current  constraints-current.txt: numpy 2 and today's torch/tensorflow/jax/onnx; MXNet skipped
#   bare     numpy only: every framework test skips cleanly, the NumPy-only paths still run
#   docs     mkdocs + mkdocstrings only: builds the documentation site with `mkdocs build --strict`
# Usage: tests/run_stacks.sh [pinned] [current] [bare] [docs]   (default: docs, then the three test stacks)
set -euo pipefail
cd "$(dirname "$0")/.."
stacks=("$@")
[ ${#stacks[@]} -gt 0 ] || stacks=(docs pinned current bare)

for stack in "${stacks[@]}"; do
  case "$stack" in
    pinned)  venv=.venv         pins=(-c constraints.txt)         extras='all,test'
             require=all ;;
    current) venv=.venv-current pins=(-c constraints-current.txt) extras='torch,tensorflow,jax,onnx,onnxruntime,lm,test'
             require=torch,tensorflow,jax,onnx,onnxruntime ;;
    bare)    venv=.venv-bare    pins=()                           extras='test'
             require=none ;;
    docs)    venv=.venv-docs    pins=()                           extras='docs'
             require=none ;;
    *) echo "unknown stack '$stack' (pinned, current, bare, docs)" >&2; exit 2 ;;
  esac
  echo "=== stack $stack: $venv, required: $require ==="
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "${pins[@]}" -e ".[$extras]"
  if [ "$stack" = docs ]; then  # the API pages read the source statically (griffe): no framework needed
    site=$(mktemp -d)
    "$venv/bin/mkdocs" build --strict --site-dir "$site"
    rm -rf "$site"
    continue
  fi
  MULTIRNN_REQUIRE_BACKENDS=$require "$venv/bin/python" -m pytest
done
