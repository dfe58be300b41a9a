"""Command line: ``libproxy`` or ``python -m proxy``.

    serve --config FILE          run the proxy
    check-config [--config] FILE [--probe]   check a configuration, listing every problem
    check-vendor ID --config FILE            fetch a vendor's start page and say what it needs
    import-ezproxy FILE... [--out F] [--report F] [--json]   convert EZproxy configuration
    demo                         run the demo vendor and the proxy on embedded defaults
    patrons add --file F --card C --groups a,b [--home H]   add a patron (PIN asked for)
    keys list|rotate --config FILE   show or rotate the assertion signing keys
    stats --config FILE [--by day|month] [--csv F]   usage statistics, small counts suppressed
    purge --config FILE             purge statistics past their retention now
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import getpass
import logging
import os
import ssl
import sys
from pathlib import Path

from aiohttp import web

from proxy import config as config_mod
from proxy.errors import ConfigError, DirectoryUnavailable


def _setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    # One handler with the privacy filter (proxy/records/logsetup.py): nothing logged anywhere
    # in the process can carry an address, a URL path or query, a card number or a token.
    from proxy.records.logsetup import setup_logging

    setup_logging(level, fmt)


def _require_c_parser() -> None:
    """The pure-Python HTTP parser accepts request-smuggling inputs the C parser rejects."""
    from aiohttp import http_parser

    if getattr(http_parser, "HttpRequestParserC", None) is not http_parser.HttpRequestParser:
        if os.environ.get("LIBPROXY_ALLOW_PYTHON_PARSER") != "1":
            raise SystemExit(
                "aiohttp's C HTTP parser is not in use (AIOHTTP_NO_EXTENSIONS set, or no compiled "
                "wheel for this platform). The pure-Python parser accepts malformed requests the C "
                "parser refuses, so the proxy will not start. Install aiohttp's wheel, or set "
                "LIBPROXY_ALLOW_PYTHON_PARSER=1 to accept the risk."
            )
        logging.getLogger("libproxy").warning("running with aiohttp's pure-Python HTTP parser")


def _run(app: web.Application, cfg: config_mod.Config) -> None:
    """Serve the demo's proxy as ``serve`` serves one process (server.run_one)."""
    from proxy import server

    server.run_one(lambda: app, cfg, sock=None, loop_choice="asyncio", ssl_context=make_ssl_context(cfg))


def make_ssl_context(cfg: config_mod.Config) -> ssl.SSLContext | None:
    """A server TLS context for the (wildcard) certificate, or None to serve plain HTTP."""
    if not (cfg.proxy.tls_cert and cfg.proxy.tls_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cfg.proxy.tls_cert, cfg.proxy.tls_key)
    return context


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy.app import create_app

    cfg = _load_or_report(args.config)
    if cfg is None:
        return 1
    _setup_logging(cfg.logging.level if args.log_level is None else args.log_level, cfg.logging.format)
    _require_c_parser()
    from proxy.records.scrub import allow_addresses

    allow_addresses(config_mod.operator_addresses(cfg))
    from proxy import server

    try:
        workers = server.worker_count(args.workers)
    except ValueError:
        print("--workers must be a number from 1 to 256, or auto", file=sys.stderr)
        return 2
    refusal = server.refuse_workers(cfg, workers)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return 1
    log = logging.getLogger("libproxy")
    log.info("%s", server.start_message(*server.raise_open_files_limit()))
    log.info("listening on %s:%d for %s", cfg.proxy.listen_host, cfg.proxy.listen_port, cfg.proxy.public_origin)

    def make(own: config_mod.Config) -> web.Application:
        app = create_app(own)
        server.install(app, args.config)
        return app

    if workers > 1:
        return server.run_workers(make, cfg, workers, loop_choice=args.loop, ssl_context=make_ssl_context(cfg))
    server.write_pid(cfg.proxy.state_dir)
    server.run_one(lambda: make(cfg), cfg, sock=None, loop_choice=args.loop, ssl_context=make_ssl_context(cfg))
    log.info("stopped")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    """Check the configuration, then ask the running proxy to re-read it (SIGHUP)."""
    from proxy.server import signal_reload

    cfg = _load_or_report(args.config)
    if cfg is None:
        print("Nothing was reloaded: the running proxy keeps its configuration.", file=sys.stderr)
        return 1
    try:
        print(signal_reload(cfg.proxy.state_dir) + "; its log says what changed.")
    except RuntimeError as exc:
        print(f"libproxy reload: {exc}", file=sys.stderr)
        return 1
    return 0


def _config_path(args: argparse.Namespace) -> str | None:
    path: str | None = args.config or args.file
    if args.config and args.file and args.config != args.file:
        print("Give the configuration file once (either FILE or --config FILE).", file=sys.stderr)
        return None
    if not path:
        print("Which configuration file? Give it as FILE or --config FILE.", file=sys.stderr)
    return path


def cmd_check_config(args: argparse.Namespace) -> int:
    from proxy.settings import plural

    path = _config_path(args)
    if path is None:
        return 2
    try:
        cfg = config_mod.load(path)
    except ConfigError as exc:
        print(f"{path}: {plural(len(exc.problems), 'problem')}:")
        for problem in exc.problems:
            print(f"  - {problem}")
        return 1
    problems: list[str] = []
    if args.probe:
        problems = asyncio.run(_probe(cfg))
    if problems:
        print(f"{path}: the configuration is valid, but the probe found {plural(len(problems), 'problem')}:")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    from proxy.config import warnings
    from proxy.rewrite import rewriting_loop

    print(f"{path}: OK ({plural(len(cfg.vendors), 'vendor')}, patrons from {cfg.patrons.source}, "
          f"sessions in {cfg.sessions.store}, rewriting {rewriting_loop()})")
    found = warnings(cfg)
    patrons_file = cfg.patrons.file
    if cfg.patrons.source == "local" and patrons_file is not None and not patrons_file.exists():
        # A warning (the file is made by the first `patrons add`), but serve stops on it at start.
        found.append(f"[patrons] file {patrons_file} does not exist yet: the proxy will not start without it; "
                     f"`libproxy patrons add --file {patrons_file} --card ... --groups ...` creates it")
    for warning in found:
        print(f"  warning: {warning}")
    return 0


def cmd_check_vendor(args: argparse.Namespace) -> int:
    from proxy.vendorcheck import check_vendor

    cfg = _load_or_report(args.config)
    if cfg is None:
        return 1
    result = asyncio.run(check_vendor(cfg, args.vendor))
    for line in result.lines:
        print(line)
    return 0 if result.ok else 1


async def _probe(cfg: config_mod.Config) -> list[str]:
    import secrets

    from proxy.patrons import make_authenticator

    # A throw-away key: a probe computes no pseudonym anyone keeps, and checking a file must not
    # write a secret into its state_dir.
    authenticator = make_authenticator(cfg, secrets.token_bytes(32))
    probe = getattr(authenticator, "probe", None)
    try:
        if probe is not None:
            found: list[str] = await probe()
            return found
        await authenticator.start()
        return []
    except Exception as exc:
        return [f"[patrons] {cfg.patrons.source}: {exc}"]
    finally:
        await authenticator.close()


def cmd_demo(args: argparse.Namespace) -> int:
    from proxy.app import create_app
    from proxy.demo import DEMO_STAFF, demo_config, demo_vendor_app, what_to_try

    cfg = demo_config(Path(args.state_dir).resolve(), args.port, args.vendor_port, args.lang, args.staff_port)
    app = create_app(cfg)

    async def vendor_ctx(_app: web.Application) -> object:
        runner = web.AppRunner(demo_vendor_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.vendor_port).start()
        yield
        await runner.cleanup()

    app.cleanup_ctx.insert(0, vendor_ctx)  # type: ignore[arg-type]
    print(
        "\nThe library proxy demo is running.\n\n"
        f"{what_to_try(cfg, args.lang)}\n"
        f"The demo vendor runs at http://127.0.0.1:{args.vendor_port}/ and is reached through the proxy\n"
        "as a *.proxy.localhost host name (browsers resolve *.localhost to this computer).\n"
        "Its page \"What this site received\" shows everything the vendor sees.\n"
        f"The staff console: http://{cfg.admin.listen}/ (IT: it-demo / {DEMO_STAFF['it-demo'][1]}; "
        f"director: director-demo / {DEMO_STAFF['director-demo'][1]})\n"
        "Press Ctrl+C to stop.\n",
        flush=True,
    )
    _run(app, cfg)
    return 0


def cmd_patrons_add(args: argparse.Namespace) -> int:
    from proxy.patrons.base import acceptable_credentials
    from proxy.patrons.hashing import hash_pin
    from proxy.patrons.local import STATUSES, add_patron

    if args.pin_stdin:
        pin = sys.stdin.readline().rstrip("\n")
    elif not sys.stdin.isatty():
        print("No terminal to ask for the PIN on: pipe it with --pin-stdin.", file=sys.stderr)
        return 1
    else:
        try:
            pin = getpass.getpass("PIN for this card: ")
            again = getpass.getpass("PIN again: ")
        except (EOFError, KeyboardInterrupt):
            print("\nNo PIN given; nothing was written.", file=sys.stderr)
            return 1
        if again != pin:
            print("The two PINs differ; nothing was written.", file=sys.stderr)
            return 1
    if not acceptable_credentials(args.card, pin):
        print("The card number and PIN must be non-empty, printable and not overlong.", file=sys.stderr)
        return 1
    if len(pin) < MIN_PIN:
        # SECURITY: a 2-digit PIN falls to a hundred guesses, which the lockout does not stop.
        print(f"The PIN must have at least {MIN_PIN} characters.", file=sys.stderr)
        return 1
    folder = Path(args.file).resolve().parent
    if not folder.is_dir():
        print(f"The folder {folder} does not exist; create it first (the patrons file goes there).",
              file=sys.stderr)
        return 1
    if args.status not in STATUSES:
        print(f"--status must be one of {', '.join(STATUSES)}", file=sys.stderr)
        return 1
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    if not groups:
        print("--groups must name at least one group (e.g. wolcott,bibliomation)", file=sys.stderr)
        return 1
    try:
        replaced = add_patron(Path(args.file), args.card, hash_pin(pin), groups, args.home, args.status)
    except OSError as exc:
        print(f"Cannot write {args.file}: {exc.strerror}; nothing was changed.", file=sys.stderr)
        return 1
    print(f"{'Updated' if replaced else 'Added'} one patron in {args.file}.")
    return 0


MIN_PIN = 4


def _load_or_report(path: str) -> config_mod.Config | None:
    try:
        return config_mod.load(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return None


def cmd_keys(args: argparse.Namespace) -> int:
    try:
        return _keys(args)
    except Exception as exc:
        # Keys kept in Redis: a Redis that cannot be reached is one line, not a traceback.
        try:
            from redis.exceptions import RedisError
        except ImportError:
            raise exc from None
        if not isinstance(exc, RedisError):
            raise
        print(f"keys: the key store in Redis cannot be used ({type(exc).__name__}): {exc}", file=sys.stderr)
        return 1


def _keys(args: argparse.Namespace) -> int:
    import time

    from proxy.assertion import load_or_create_keys, published_keys, rotate_keys, signing_key_at

    cfg = _load_or_report(args.config)
    if cfg is None:
        return 1
    path, alg, lifetime = cfg.assertion.key_file, cfg.assertion.algorithm, cfg.assertion.lifetime
    if args.keys_command == "rotate":
        from proxy.settings import Problems, Reader

        reader = Reader({"grace": args.grace}, "keys rotate", Problems(), Path.cwd())
        grace = reader.duration("grace", "1d")
        if reader.problems.items:
            print(reader.problems.items[0], file=sys.stderr)
            return 1
        if cfg.assertion.key_store == "redis" and cfg.sessions.redis_url:
            from proxy.assertion import rotate_keys_in_redis

            # Every instance reads the one key set in Redis: the rotation reaches all of them.
            key = rotate_keys_in_redis(cfg.sessions.redis_url, alg, grace, lifetime, seed_file=path)
        else:
            key = rotate_keys(path, alg, grace, lifetime)
        print(f"Added key {key.kid}: published now, signing from "
              f"{time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(key.activate_at))}.")
        print("A running proxy picks it up within 10 seconds; no restart is needed.")
        return 0
    now = time.time()
    if cfg.assertion.key_store == "redis" and cfg.sessions.redis_url:
        from proxy.assertion import read_keys_in_redis

        shared = read_keys_in_redis(cfg.sessions.redis_url)
        if shared is None:
            print("No keys in Redis yet: the first proxy instance to start creates them.")
            return 0
        keys = shared
    else:
        keys = load_or_create_keys(path, alg)
    current = signing_key_at(keys, now)
    published = published_keys(keys, now, lifetime)
    for key in keys:
        state = ("signing" if key is current else "waiting" if key.activate_at > now
                 else "published" if key in published else "retired")
        print(f"{key.kid}  {key.alg}  created {time.strftime('%Y-%m-%d %H:%M', time.localtime(key.created))}  {state}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from proxy.records.commands import stats_from_args

    cfg = _load_or_report(args.config)
    if cfg is None:
        return 1
    titles = {v.id: v.title for v in cfg.vendors}
    unknown = [v for v in args.vendors if v not in titles]
    if unknown:
        print(f"There is no vendor {', '.join(repr(v) for v in unknown)} in {args.config} "
              f"(vendors: {', '.join(sorted(titles)) or 'none'}).", file=sys.stderr)
        return 1
    return stats_from_args(cfg.records, args, titles=titles)


def cmd_purge(args: argparse.Namespace) -> int:
    from proxy.records.commands import run_purge_command

    cfg = _load_or_report(args.config)
    if cfg is None:
        return 1
    return run_purge_command(cfg.records)


def cmd_import_ezproxy(args: argparse.Namespace) -> int:
    """Convert EZproxy configuration; the TOML goes to --out (or stdout), the report to --report
    (or stderr). Exit 1 only when nothing could be read or written; findings are in the report."""
    from proxy.ezproxy import ImportFailure, run_import
    from proxy.ezproxy.report import render_json, render_text, summary_line
    from proxy.patrons.common import GROUP

    # EZproxy's group names are not case-sensitive; the proxy's are written in lower case.
    groups = tuple(g.strip().lower() for g in args.groups.split(",") if g.strip())
    if not groups:
        print("import-ezproxy: --groups must name at least one group (e.g. wolcott,bibliomation)", file=sys.stderr)
        return 1
    bad = [g for g in groups if not GROUP.match(g)]
    if bad:
        print(f"import-ezproxy: --groups: {', '.join(map(repr, bad))} is not a group name (letters, digits, "
              "'.', '_' and '-'; no spaces)", file=sys.stderr)
        return 1
    try:
        result = run_import(args.files, groups)
    except ImportFailure as exc:
        print(f"import-ezproxy: {exc}", file=sys.stderr)
        return 1
    report = render_json(result.report) if args.json else render_text(result.report)
    try:
        if args.out:
            Path(args.out).write_text(result.toml, encoding="utf-8")
        else:
            sys.stdout.write(result.toml)
        if args.report:
            Path(args.report).write_text(report, encoding="utf-8")
            print(f"import-ezproxy: {summary_line(result.report)}", file=sys.stderr)
        else:
            sys.stderr.write(report)
    except OSError as exc:
        print(f"import-ezproxy: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="libproxy", description="A privacy-first library database proxy.")
    parser.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="overrides [logging] level")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", required=True, help="the TOML configuration file")
    serve.add_argument("--workers", default="1",
                       help="processes accepting on the one listening socket: a number or auto (one per "
                            "core); more than one needs [sessions] store = \"redis\"")
    # uvloop: a few percent less CPU per proxied request on balance (docs/operations.md); used when installed.
    serve.add_argument("--loop", default="auto", choices=["asyncio", "uvloop", "auto"],
                       help="event loop: uvloop when installed (default, auto), uvloop, or asyncio's own")
    serve.set_defaults(func=cmd_serve)

    reload = sub.add_parser("reload", help="check the configuration and make the running proxy re-read it")
    reload.add_argument("--config", required=True, help="the TOML configuration file the proxy runs with")
    reload.set_defaults(func=cmd_reload)

    check = sub.add_parser("check-config", help="check a configuration file and list every problem")
    check.add_argument("file", nargs="?", help="the TOML configuration file (or give --config)")
    check.add_argument("--config", help="the TOML configuration file (the same as FILE)")
    check.add_argument("--probe", action="store_true",
                       help="also connect to the patron directory (LDAP, SIP2, RemoteAuth) and report what failed")
    check.set_defaults(func=cmd_check_config)

    vcheck = sub.add_parser("check-vendor", help="fetch a vendor's start page through the proxy's client and "
                                                 "report redirects, TLS problems and the hosts it needs")
    vcheck.add_argument("vendor", metavar="ID", help="the vendor's id in the configuration")
    vcheck.add_argument("--config", required=True, help="the TOML configuration file")
    vcheck.set_defaults(func=cmd_check_vendor)

    demo = sub.add_parser("demo", help="run a demo vendor and the proxy on embedded defaults")
    demo.add_argument("--port", type=int, default=8080, help="the proxy's port (default 8080)")
    demo.add_argument("--vendor-port", type=int, default=8081, help="the demo vendor's port (default 8081)")
    demo.add_argument("--staff-port", type=int, default=9080,
                      help="the staff console's port on 127.0.0.1 (default 9080)")
    demo.add_argument("--lang", choices=("en", "es"), default="en",
                      help="the patron pages' language: en (English) or es (Spanish); default en")
    demo.add_argument("--state-dir", default="var/demo",
                      help="where the demo keeps its keys and statistics (default var/demo)")
    demo.set_defaults(func=cmd_demo)

    keys = sub.add_parser("keys", help="list or rotate the assertion signing keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    klist = ksub.add_parser("list", help="show the keys and which one signs")
    klist.add_argument("--config", required=True, help="the TOML configuration file")
    klist.set_defaults(func=cmd_keys)
    rotate = ksub.add_parser("rotate", help="add a new key that starts signing after a grace period")
    rotate.add_argument("--config", required=True, help="the TOML configuration file")
    rotate.add_argument("--grace", default="1d",
                        help="how long vendors get to fetch the new key before it signs (default 1d)")
    rotate.set_defaults(func=cmd_keys)

    stats = sub.add_parser("stats", help="usage statistics per database (small counts suppressed)")
    stats.add_argument("--config", required=True, help="the TOML configuration file")
    from proxy.records.commands import add_stats_arguments

    add_stats_arguments(stats)
    stats.set_defaults(func=cmd_stats)

    purge = sub.add_parser("purge", help="purge statistics older than their retention, now")
    purge.add_argument("--config", required=True, help="the TOML configuration file")
    purge.set_defaults(func=cmd_purge)

    ezproxy = sub.add_parser("import-ezproxy",
                             help="convert EZproxy config.txt or stanza files into [[vendor]] entries")
    ezproxy.add_argument("files", nargs="+", metavar="FILE",
                         help="config.txt or stanza files, read in this order (IncludeFile is followed)")
    ezproxy.add_argument("--out", help="write the TOML here (default: standard output)")
    ezproxy.add_argument("--report", help="write the import report here (default: standard error)")
    ezproxy.add_argument("--json", action="store_true", help="write the report as JSON for scripts")
    ezproxy.add_argument("--groups", default="default",
                         help="comma-separated groups that EZproxy's Default group (every database before any "
                              "Group line) becomes, e.g. wolcott,bibliomation (default: default)")
    ezproxy.set_defaults(func=cmd_import_ezproxy)

    patrons = sub.add_parser("patrons", help="manage the local patrons file")
    psub = patrons.add_subparsers(dest="patrons_command", required=True)
    add = psub.add_parser("add", help="add or update a patron with a hashed PIN")
    add.add_argument("--file", required=True, help="the patrons file ([patrons] file), created if absent")
    add.add_argument("--card", required=True, help="the card number (stored only as part of the hashed record)")
    add.add_argument("--groups", required=True, help="comma-separated, e.g. wolcott,bibliomation")
    add.add_argument("--home", default=None, help="home library, e.g. wolcott")
    from proxy.patrons.local import STATUSES

    add.add_argument("--status", default="active", choices=STATUSES,
                     help=f"one of {', '.join(STATUSES)} (default active)")
    add.add_argument("--pin-stdin", action="store_true",
                     help="read the PIN from standard input (for scripts); otherwise it is asked for twice")
    add.set_defaults(func=cmd_patrons_add)
    from proxy.staff.command import add_staff_parser

    add_staff_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level or "INFO")
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"libproxy {args.command}: the configuration has problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    except DirectoryUnavailable as exc:
        if args.command != "serve":
            raise
        # The patron directory at start (a patrons file missing or unreadable): one line.
        print(f"libproxy serve: cannot start: {exc}. Check [patrons] in the configuration "
              "(`libproxy check-config`); `libproxy patrons add` creates a local patrons file.", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES) and args.command in ("serve", "demo"):
            # A port already taken (another proxy, or the demo still running): one line, no traceback.
            print(f"libproxy {args.command}: cannot listen: {exc.strerror}. Is another proxy (or the demo) "
                  "already running on that port? Choose another port or stop it.", file=sys.stderr)
            return 1
        raise
    return result


if __name__ == "__main__":
    raise SystemExit(main())
