# Sourced by the scripts: a cargo target dir outside the clone, so repeated
# runs (and CI on the same machine) build incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/imprint-target}"
mkdir -p "$CARGO_TARGET_DIR" 2>/dev/null || export CARGO_TARGET_DIR="$HOME/.cache/imprint-target"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
