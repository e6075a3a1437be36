#!/bin/sh
# Entrypoint of the cuematte images (installed as /usr/local/bin/cuematte-entrypoint).
#
# `cuematte serve` refuses to bind beyond loopback without a token (cuematte/server/config.py). It reads the token
# from CUEMATTE_TOKEN itself, or from `--token-file PATH`, so the token never lands on a command line (`ps`). For
# `cuematte serve ...` this script takes
#   CUEMATTE_TOKEN        the token itself (left in the environment for `cuematte serve`), or
#   CUEMATTE_TOKEN_FILE   a file holding it (a Docker/Kubernetes secret, e.g. /run/secrets/cuematte_token), passed on
#                         as `--token-file "$CUEMATTE_TOKEN_FILE"`;
# with neither set (and no --token/--token-file given) it stops with an `error:` line and exit code 2, like the CLI,
# before anything loads. Any other command (`cuematte bench ...`, `sh`) runs unchanged.
set -eu

fail() {
    echo "error: $*" >&2
    exit 2
}

if [ "$#" -ge 2 ] && [ "$1" = cuematte ] && [ "$2" = serve ]; then
    for arg in "$@"; do
        case "$arg" in
            --token | --token=* | --token-file | --token-file=*) exec "$@" ;;  # given explicitly: as it is
        esac
    done
    if [ -n "${CUEMATTE_TOKEN_FILE:-}" ]; then
        [ -f "$CUEMATTE_TOKEN_FILE" ] && [ -r "$CUEMATTE_TOKEN_FILE" ] \
            || fail "CUEMATTE_TOKEN_FILE=$CUEMATTE_TOKEN_FILE is not a readable file (user $(id -u))"
        exec "$@" --token-file "$CUEMATTE_TOKEN_FILE"
    fi
    if [ -z "${CUEMATTE_TOKEN:-}" ]; then
        fail "no token: set CUEMATTE_TOKEN (or CUEMATTE_TOKEN_FILE, a file holding it, e.g. a secret under" \
            "/run/secrets). In this container cuematte serves on 0.0.0.0, which it refuses to do without a token;" \
            "clients then send 'Authorization: Bearer TOKEN' or ?token=TOKEN"
    fi
    exec "$@"  # cuematte serve reads CUEMATTE_TOKEN itself
fi
exec "$@"
