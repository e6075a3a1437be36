#!/usr/bin/env bash
# Entrypoint of the GPU image (installed as /usr/local/bin/cuematte-gpu-entrypoint).
#
# For `cuematte serve ...`: make sure TensorRT plans for this GPU and this TensorRT are in the plans volume, then
# hand over to cuematte-entrypoint (docker/entrypoint.sh: the token) with `--plans DIR` added:
#
#   cuematte build-engines --check [--model M] --out /plans/<model>   exit 0: the plans there fit; keep them
#   cuematte build-engines [--model M] $CUEMATTE_BUILD_ARGS --out /plans/<model>   otherwise (first start, another
#                                                                                 GPU, another TensorRT)
#   exec cuematte serve ... --plans /plans/<model> (the token from the environment or --token-file)
#
# Environment:
#   CUEMATTE_TOKEN / CUEMATTE_TOKEN_FILE   the service token (see docker/entrypoint.sh); required
#   CUEMATTE_MODEL        a model folder inside the container (default: the shipped model); its plans go to
#                         /plans/<name in its model.json>
#   CUEMATTE_PLANS_ROOT   where plans live (default /plans, a volume so that they survive the container)
#   CUEMATTE_BUILD_ARGS   extra build-engines options, e.g. "--no-fp16 --max-size 1920x1080"
# Any other command (`cuematte bench ...`, `bash`) runs unchanged.
set -euo pipefail

fail() {
    echo "error: $*" >&2
    exit 2
}

if [[ $# -ge 2 && $1 == cuematte && $2 == serve ]]; then
    # Check the token before a build that can take minutes; docker/entrypoint.sh passes it on.
    token_given=false
    for arg in "$@"; do
        [[ $arg == --token || $arg == --token=* || $arg == --token-file || $arg == --token-file=* ]] && token_given=true
    done
    if [[ $token_given == false && -z ${CUEMATTE_TOKEN:-} && -z ${CUEMATTE_TOKEN_FILE:-} ]]; then
        fail "no token: set CUEMATTE_TOKEN (or CUEMATTE_TOKEN_FILE, a file holding it, e.g. a secret under" \
            "/run/secrets). In this container cuematte serves on 0.0.0.0, which it refuses to do without a token"
    fi

    model_args=()
    if [[ -n ${CUEMATTE_MODEL:-} ]]; then model_args=(--model "$CUEMATTE_MODEL"); fi
    # The model's name from its model.json, as build-engines names its default plans folder.
    model_name=$(python3 -c 'import sys
from cuematte.engine.model import read_model_info, resolve_model_dir
print(read_model_info(resolve_model_dir(sys.argv[1] or None)).name)' "${CUEMATTE_MODEL:-}") \
        || fail "cannot read the model's name from ${CUEMATTE_MODEL:-the shipped model}/model.json"
    plans="${CUEMATTE_PLANS_ROOT:-/plans}/$model_name"
    mkdir -p "$plans" 2>/dev/null \
        || fail "cannot create $plans: mount a volume writable by uid $(id -u) at ${CUEMATTE_PLANS_ROOT:-/plans}"
    build_args=()
    read -r -a build_args <<<"${CUEMATTE_BUILD_ARGS:-}"

    # One container builds at a time when several share the volume; the others wait, then find the plans ready.
    exec 9>"$plans/.lock"
    flock 9
    if cuematte build-engines --check "${model_args[@]}" --out "$plans"; then
        echo "TensorRT plans in $plans fit this model, GPU and TensorRT" >&2
    else
        echo "building TensorRT plans into $plans for this GPU (first start: this takes a few minutes)" >&2
        cuematte build-engines "${model_args[@]}" "${build_args[@]}" --out "$plans"
    fi
    flock -u 9
    exec 9>&-

    set -- "$@" "${model_args[@]}" --plans "$plans"
fi
exec cuematte-entrypoint "$@"
