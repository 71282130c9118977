# Sourced by the hack/build-*.sh scripts. take_build_lock DIR WHAT serialises builds into one
# cache directory; a second caller waits for the first and then finds its result.
take_build_lock() {
  mkdir -p "$1"
  exec 9>"$1/.build.lock"
  if ! flock -n 9; then
    echo "another build of $2 is running; waiting for it" >&2
    flock 9
  fi
}

# make_build_dir OUT: sets tmp to an empty OUT.tmp.<pid>, removed on exit unless the build moves it.
make_build_dir() {
  tmp="$1.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  trap 'rm -rf "$tmp"' EXIT
}

# require_go SCRIPT: Go is needed to build the engines from their modules.
require_go() {
  command -v go >/dev/null || { echo "$1: 'go' is not on PATH; install Go 1.24 or newer" >&2; exit 1; }
}
