#!/bin/sh
# Entrypoint of the cuematte images (installed as /usr/local/bin/cuematte-entrypoint).
#
# `cuematte serve` refuses to bind beyond loopback without a token (cuematte/server/config.py), and it reads the token
# only from its `--token` option; there is no environment variable for it. So for `cuematte serve ...` this script
# takes the token from
#   CUEMATTE_TOKEN        the token itself, or
#   CUEMATTE_TOKEN_FILE   a file holding it (a Docker/Kubernetes secret, e.g. /run/secrets/cuematte_token)
# and appends `--token "$CUEMATTE_TOKEN"`; with neither set (and no --token given) it stops with an `error:` line
# and exit code 2, like the CLI. Any other command (`cuematte bench ...`, `sh`) runs unchanged.
#
# Note: a token given as an option is visible to `ps` inside the container, like any `--token` on a command line.
set -eu

fail() {
    echo "error: $*" >&2
    exit 2
}

if [ "$#" -ge 2 ] && [ "$1" = cuematte ] && [ "$2" = serve ]; then
    for arg in "$@"; do
        case "$arg" in
            --token | --token=*) exec "$@" ;;  # given explicitly: use it as it is
        esac
    done
    if [ -n "${CUEMATTE_TOKEN_FILE:-}" ]; then
        [ -f "$CUEMATTE_TOKEN_FILE" ] && [ -r "$CUEMATTE_TOKEN_FILE" ] \
            || fail "CUEMATTE_TOKEN_FILE=$CUEMATTE_TOKEN_FILE is not a readable file (user $(id -u))"
        CUEMATTE_TOKEN=$(cat "$CUEMATTE_TOKEN_FILE")  # $(...) drops the trailing newline
    fi
    if [ -z "${CUEMATTE_TOKEN:-}" ]; then
        fail "no token: set CUEMATTE_TOKEN (or CUEMATTE_TOKEN_FILE, a file holding it, e.g. a secret under" \
            "/run/secrets). In this container cuematte serves on 0.0.0.0, which it refuses to do without a token;" \
            "clients then send 'Authorization: Bearer TOKEN' or ?token=TOKEN"
    fi
    exec "$@" --token "$CUEMATTE_TOKEN"
fi
exec "$@"
