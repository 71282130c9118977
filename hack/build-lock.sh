# Sourced by the hack/build-*.sh scripts: take_build_lock DIR WHAT serialises builds into one
# cache directory; a second caller waits for the first and then finds its result.
take_build_lock() {
  mkdir -p "$1"
  exec 9>"$1/.build.lock"
  if ! flock -n 9; then
    echo "another build of $2 is running; waiting for it" >&2
    flock 9
  fi
}
