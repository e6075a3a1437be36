"""`cuematte` command line. Each sub-command lives in its own module and imports its heavy dependencies
(torch for cuematte/export/train) only when it runs, so the serving install never needs them."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from cuematte.engine.errors import CuematteError

# name -> module with `add_arguments(parser)`, `run(args) -> int` and a one-line `HELP`.
COMMANDS: dict[str, str] = {
    "matte": "cuematte.clients.commands.matte",
    "bench": "cuematte.clients.commands.bench",
    "export": "cuematte.clients.commands.export",
    "build-engines": "cuematte.clients.commands.build_engines",
    "train": "cuematte.clients.commands.train",
    "eval": "cuematte.clients.commands.evaluate",
    "check-real": "cuematte.clients.commands.check_real",
    "serve": "cuematte.clients.commands.serve",
    "virtualcam": "cuematte.clients.commands.virtualcam",
}


# Third-party modules that only an extra installs -> that extra (the base install is the engine and the CLI).
EXTRAS = {"aiortc": "server", "aiohttp": "server", "av": "server", "pyvirtualcam": "virtualcam", "torch": "train",
          "timm": "train", "onnx": "train", "onnxscript": "train", "safetensors": "train", "skimage": "train",
          "matplotlib": "train"}


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(COMMANDS[name])
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("cuematte.clients.commands"):
            return None  # a command this checkout does not have yet
        raise


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    parser = argparse.ArgumentParser(prog="cuematte", description="Real-time matting from flash/no-flash cues.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, ModuleType] = {}
    for name in COMMANDS:
        mod = _load(name)
        if mod is None:
            continue
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        modules[name] = mod
    return parser, modules


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    warnings.showwarning = _show_warning
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].run(args) or 0)
    except CuematteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"error: `cuematte {args.command}` needs the {extra} extra ({exc.name} is missing): "
              f"pip install 'cuematte[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
