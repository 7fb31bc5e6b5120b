"""Command line: ``python -m bot [run|chat|models|usage|check]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from bot.adapter import AdapterSpec
from bot.app import Preflight, Runtime, check_api_key, open_runtime, preflight, serve
from bot.durable import finalize_unfinished
from bot.errors import BotError, ConfigError
from bot.log import configure_logging
from bot.settings import AdapterSettings, Settings

log = logging.getLogger("bot")

EXIT_CONFIG = 2


def _parser(platforms: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description=f"Self-hosted LLM chat bot for {', '.join(platforms)} and the terminal. "
        "Settings come from the environment and .env (see .env.example).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="start every adapter whose credentials are set (the default)")
    chat = sub.add_parser("chat", help="chat in this terminal; history is kept in the database")
    chat.add_argument("--user", help="whose conversation to open (default: $USER)")
    chat.add_argument("--ephemeral", action="store_true", help="keep nothing after exit")
    sub.add_parser("models", help="list the models the API offers")
    usage = sub.add_parser("usage", help="export the usage ledger")
    usage.add_argument("--csv", action="store_true", required=True, help="write CSV to stdout")
    sub.add_parser("check", help="check the settings, API key, base URL and default model")
    migrate = sub.add_parser(
        "migrate",
        help="copy a SQLite database into PostgreSQL (ids kept; a second run copies nothing twice)",
    )
    migrate.add_argument(
        "--from", dest="source", required=True, metavar="sqlite:PATH", help="the SQLite file"
    )
    migrate.add_argument(
        "--to",
        dest="target",
        metavar="postgresql://…",
        help="the PostgreSQL database (default: DATABASE_URL)",
    )
    return parser


Platform = tuple[AdapterSpec, AdapterSettings]


def _invalid(exc: ValidationError, prefix: str) -> str:
    """``TEMPERATURE (Input should be …)`` for each failed field, as the user spells it."""
    return ", ".join(
        f"{prefix}{'.'.join(str(p) for p in err['loc']).upper()} ({err['msg']})"
        for err in exc.errors()
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    from adapters import ADAPTERS

    args = _parser([spec.name for spec in ADAPTERS]).parse_args(argv)

    invalid: list[str] = []
    try:
        settings = Settings()
    except ValidationError as exc:
        invalid.append(_invalid(exc, ""))
    platforms: list[Platform] = []
    for spec in ADAPTERS:
        cls = spec.settings_type()
        try:
            platforms.append((spec, cls()))
        except ValidationError as exc:
            invalid.append(_invalid(exc, str(cls.model_config.get("env_prefix") or "")))
    if invalid:
        print(
            f"Invalid settings: {', '.join(invalid)}. Fix them in .env or the environment.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    secrets = [*settings.secrets(), *(s for _, config in platforms for s in config.secrets())]
    quiet = [name for _, config in platforms for name in type(config).quiet_loggers]
    configure_logging(settings.log_level, secrets, quiet, log_format=settings.log_format)
    command = args.command or "run"
    try:
        return asyncio.run(_dispatch(command, args, settings, platforms))
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        print(exc.user_text, file=sys.stderr)
        return EXIT_CONFIG
    except BotError as exc:
        print(exc.user_text, file=sys.stderr)
        return 1


async def _dispatch(
    command: str, args: argparse.Namespace, settings: Settings, platforms: list[Platform]
) -> int:
    if command == "run":
        return await _run(settings, platforms)
    if command == "migrate":
        return await _migrate(args.source, args.target, settings)
    ephemeral = bool(getattr(args, "ephemeral", False))
    async with open_runtime(settings, ephemeral=ephemeral, need_api=command != "usage") as runtime:
        if command == "usage":
            return await _export_usage(runtime)
        found = await preflight(runtime)
        if command == "check":
            return _report_check(settings, found)
        for problem in found.problems:
            print(f"Warning: {problem}", file=sys.stderr)
        if command == "models":
            default = await runtime.engine.default_model()
            for m in await runtime.engine.list_models():
                mark = "\t(default)" if m.id == default else ""
                print(
                    f"{m.id}\tcontext={m.context_window} ({m.context_source})"
                    f"\tmax_output={m.max_completion_tokens or '-'}{mark}"
                )
            return 0
        from adapters.terminal import PLATFORM, TerminalAdapter, TerminalSettings

        terminal = TerminalAdapter(runtime.context(TerminalSettings()), user=args.user)
        # Answers an earlier chat left streaming (killed mid-answer) become interrupted.
        unfinished = await runtime.store.streaming_replies([PLATFORM])
        await finalize_unfinished(runtime.store, unfinished, {terminal.name: terminal})
        await terminal.run()
        return 0


def _report_check(settings: Settings, found: Preflight) -> int:
    for note in found.notes:
        print(note)
    if found.problems:
        for problem in found.problems:
            print(f"Problem: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"OK: {settings.api_base_url} answers, the default model fits, the database opens.")
    return 0


async def _export_usage(runtime: Runtime) -> int:
    from bot.limits.report import write_usage_csv

    rows = await write_usage_csv(runtime.store.iter_usage(), sys.stdout)
    print(f"exported {rows} usage row(s)", file=sys.stderr)
    return 0


async def _migrate(source: str, target: str | None, settings: Settings) -> int:
    from bot.store.sqlite_to_postgres import copy_sqlite_to_postgres, sqlite_path, summary

    path = sqlite_path(source)
    if target is None and settings.database_url is not None:
        target = settings.database_url.get_secret_value()
    if target is None or not target.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "--to: give the PostgreSQL database as postgresql://… (or set DATABASE_URL)"
        )
    copies = await copy_sqlite_to_postgres(
        path, target, progress=lambda line: print(line, file=sys.stderr)
    )
    print(summary(copies, path, target))
    return 0


async def _run(settings: Settings, platforms: list[Platform]) -> int:
    enabled = [(spec, config) for spec, config in platforms if config.enabled()]
    if not enabled:
        wanted = "; ".join(f"{spec.name}: {type(config).requirement}" for spec, config in platforms)
        print(
            f"No platform is configured. Set the variables for at least one ({wanted}) "
            "in .env, or run `python -m bot chat` to chat in the terminal.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    check_api_key(settings)
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():  # a second signal: the operator does not want to wait
            log.warning("%s again: exiting now, without finishing replies", sig.name)
            logging.shutdown()
            os._exit(128 + sig.value)
        log.info("%s: finishing replies in flight, then exiting (again to exit now)", sig.name)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    await serve(settings, enabled, stop=stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
