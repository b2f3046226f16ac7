#!/usr/bin/env bash
# Build the C reference device with the system compiler and Debian's Mbed TLS
# (libmbedtls-dev, installed by scripts/setup). Usage: build.sh [OUTPUT]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/imprint-c-device}"
mkdir -p "$(dirname "$out")"
${CC:-cc} -std=c99 -O2 -Wall -Wextra -Wpedantic -Werror \
  -o "$out" "$here/imprint_device.c" -lmbedx509 -lmbedcrypto
echo "$out"
