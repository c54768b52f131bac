"""The ``tfserve`` command line (also ``python -m tfserve_magic``).

``serve`` hands its arguments untouched to the server, which parses tensorflow_model_server's
flags itself; the other subcommands are thin wrappers over the process manager.
"""

from __future__ import annotations

import argparse
import sys

SUBCOMMANDS = {
    "serve": "run a TensorFlow-Serving-compatible model server (tensorflow_model_server's flags)",
    "list": "list this user's running servers",
    "status": "show the model version states of a running server",
    "logs": "print the end of a server's log",
    "stop": "stop a running server (or --all)",
    "deploy": "write a Docker/Kubernetes/KServe recipe for real TF Serving (with a preflight)",
}


def _usage() -> str:
    lines = ["usage: tfserve <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, text in SUBCOMMANDS.items()]
    lines += ["", "`tfserve serve --help` lists the server's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "serve":
        from tfserve_magic.server.main import main as serve_main

        return serve_main(rest)
    if command == "deploy":
        return _deploy_command(rest)
    if command not in SUBCOMMANDS:
        print(f"tfserve: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return _manager_command(command, rest)


def _manager_command(command: str, rest: list[str]) -> int:
    from tfserve_magic import manager

    parser = argparse.ArgumentParser(prog=f"tfserve {command}", description=SUBCOMMANDS[command])
    if command in ("status", "logs"):
        parser.add_argument("name")
    if command == "logs":
        parser.add_argument("-n", type=int, default=20, help="number of lines")
    if command == "stop":
        parser.add_argument("name", nargs="?")
        parser.add_argument("--all", action="store_true", help="stop every server of this user")
    args = parser.parse_args(rest)
    try:
        if command == "list":
            handles = manager.servers()
            print(manager.format_servers(handles) if handles else "No servers running.")
        elif command == "status":
            print(repr(manager.StatusView(args.name, manager.status(args.name))))
        elif command == "logs":
            print(manager.logs(args.name, n=args.n))
        else:
            if not args.name and not args.all:
                parser.error("give a server name or --all")
            stopped = manager.stop(args.name, all=args.all)
            print("\n".join(f"Stopped {h.name} (pid {h.pid})" for h in stopped) or "Nothing to stop.")
    except (LookupError, RuntimeError, ValueError) as exc:
        print(f"tfserve {command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _deploy_command(rest: list[str]) -> int:
    from tfserve_magic.deployment import DeployError, add_arguments, deploy_from_args

    parser = argparse.ArgumentParser(prog="tfserve deploy", description=SUBCOMMANDS["deploy"])
    add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        print(repr(deploy_from_args(args)))
    except DeployError as exc:
        print(f"tfserve deploy: {exc}", file=sys.stderr)
        return 1
    return 0
