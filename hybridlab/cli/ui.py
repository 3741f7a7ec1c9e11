"""`hybridlab ui`: the web page for browsing studies, Pareto fronts and trials, composing specs,
launching searches and exporting models.

    hybridlab ui                                   # http://127.0.0.1:7860, ./hybridlab.db
    hybridlab ui --db runs/search.db --port 8080 --auth alice:secret
"""
from __future__ import annotations

import errno
import os
import socket
import sys

from hybridlab.errors import Problem, SpecError, UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ui", help="web UI: studies, Pareto fronts, trials, compose, launch, export",
        description="Serve the hybridlab web page (Gradio). It reads the database only (short "
                    "read-only transactions), so it is safe while searches write to it, and "
                    "refreshes itself while they run. Listens on 127.0.0.1 unless --host says "
                    "otherwise; never creates a public share link. The page opens spec files "
                    "only inside the folder it was started in and the shipped examples, and "
                    "never imports a spec's plugins. The Launch tab starts searches as separate "
                    "processes: protect a non-local server with --auth or turn launching off "
                    "with --no-launch.")
    p.add_argument("--db", default=None, metavar="URL",
                   help="database URL or SQLite file (default: sqlite:///hybridlab.db here)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--auth", metavar="USER:PASS", default=None,
                   help="require this user name and password")
    p.add_argument("--refresh", type=float, default=5.0, metavar="SECONDS",
                   help="live-update interval (default 5)")
    p.add_argument("--no-launch", action="store_true",
                   help="no Launch tab and no Launch endpoints: the page cannot start searches")
    p.set_defaults(func=run)


def run(args) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    auth = None
    if args.auth is not None:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            raise SpecError(Problem("--auth takes USER:PASS", file="<command line>",
                                    field="--auth"))
        auth = (user, password)
    if not 0 < args.port < 65536:
        raise SpecError(Problem(f"--port must be 1..65535, got {args.port}",
                                file="<command line>"))
    if not args.refresh > 0:
        raise SpecError(Problem("--refresh must be > 0", file="<command line>"))
    check_port(args.host, args.port)
    from hybridlab.ui.app import build_app, launch

    if args.host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        print(f"warning: serving on {args.host} without --auth: anyone who can reach this "
              f"address can read the studies" + ("" if args.no_launch else
                                                 " and start searches (--no-launch stops that)"),
              file=sys.stderr)
    demo = build_app(args.db, refresh_s=args.refresh, enable_launch=not args.no_launch)
    ctx = demo.hybridlab.ctx
    print(f"hybridlab ui: database {ctx.shown_url}")
    print(f"hybridlab ui: spec files are opened only inside {ctx.roots.describe()}")
    try:
        # quiet: Gradio's own start-up lines include a hint to make a public share link
        _, local_url, _ = launch(demo, host=args.host, port=args.port, auth=auth, quiet=True,
                                 prevent_thread_lock=True)
    except OSError as e:
        if "empty port" in str(e) or e.errno == errno.EADDRINUSE:
            raise busy(args.port) from None
        raise UserError(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}") from None
    print(f"hybridlab ui: serving on {local_url} (Ctrl-C to stop)", flush=True)
    try:
        demo.block_thread()
    finally:
        running = ctx.launcher.running() if ctx.enable_launch else []
        if running:
            print(f"stopping {len(running)} search(es) started from the page; run them again "
                  f"to resume", file=sys.stderr)
            ctx.launcher.stop_all()
    return 0


def busy(port: int) -> UserError:
    return UserError(f"port {port} is busy; pick another with --port")


def check_port(host: str, port: int) -> None:
    """``UserError`` when ``host:port`` cannot be listened on (before building the page)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # the options Gradio's server uses, so a port it could take is not called busy
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise busy(port) from None
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e} (check "
                            f"--host)") from None
