#!/usr/bin/env bash
# Sourced by test.sh and screenshots.sh: make sure Debian's chromium is installed for the browser tests
# (tests/test_browser.py drives it with the pinned playwright from the dev extra; no browser download).
# Exports PERCEPTLIB_BROWSER=1 when chromium is there, so that a browser problem fails the tests instead of
# skipping them. Installs with apt-get as root or with passwordless sudo; otherwise prints how to and leaves
# the browser tests to skip (in CI, i.e. $CI set, they fail instead). PERCEPTLIB_BROWSER=0 opts out.
chromium_bin() {
  local p candidates=("${PERCEPTLIB_CHROMIUM:-}")  # when set, only that one (as the tests do)
  [ -n "${PERCEPTLIB_CHROMIUM:-}" ] || candidates=(/usr/lib/chromium/chromium "$(command -v chromium || true)")
  for p in "${candidates[@]}"; do
    if [ -n "$p" ] && [ -x "$p" ]; then echo "$p"; return 0; fi
  done
  return 1
}

if [ "${PERCEPTLIB_BROWSER:-}" = "0" ]; then
  echo "browser tests: off (PERCEPTLIB_BROWSER=0)"
elif chromium_bin >/dev/null; then
  export PERCEPTLIB_BROWSER=1
else
  _as_root=()
  if [ "$(id -u)" = 0 ]; then
    _as_root=(env)
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    _as_root=(sudo -n env)
  fi
  if ! command -v apt-get >/dev/null; then
    _why="there is no apt-get (not Debian/Ubuntu); install chromium and set PERCEPTLIB_CHROMIUM=/path/to/it"
  elif [ ${#_as_root[@]} -eq 0 ]; then
    _why="installing it needs root: run \`sudo apt-get install chromium\` once"
  else
    echo "browser tests: installing Debian's chromium (apt-get, ~1 min, ~500 MB)"
    _t0=$SECONDS
    if "${_as_root[@]}" DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
       "${_as_root[@]}" DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
      echo "browser tests: chromium installed in $((SECONDS - _t0)) s"
      _why="apt-get installed chromium but no binary was found"
    else
      _why="\`apt-get install chromium\` failed (see above)"
    fi
  fi
  if chromium_bin >/dev/null; then
    export PERCEPTLIB_BROWSER=1
  elif [ -n "${CI:-}" ]; then
    echo "browser tests: chromium missing in CI: $_why" >&2
    export PERCEPTLIB_BROWSER=1  # the tests then fail with this reason rather than skip
  else
    echo "browser tests: will SKIP, chromium is missing: $_why" >&2
  fi
  unset _as_root _why _t0
fi
if [ "${PERCEPTLIB_BROWSER:-}" = "1" ] && chromium_bin >/dev/null; then
  echo "browser tests: on ($(chromium_bin))"
fi
