import ipaddress
import logging
import socket
import threading
import webbrowser
from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from .common import handle_errors, load, out

log = logging.getLogger("idcluster.review")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (0 = any free port) before the URL is printed, so a browser
    opening it at once queues instead of being refused; a taken port is a clear error, not a traceback."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be 0-65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:  # port taken, or --host is no address of this machine
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({e.strerror or e}): choose another --port or --host") from None
    return sock


def _addresses(host: str, port: int) -> list[str]:
    """host[:port] of each URL to print (the Host headers the server answers): the bound address; for a
    wildcard bind, this machine's name and the loopback address (what a browser can open)."""
    if host in ("0.0.0.0", "::", ""):
        names = [socket.gethostname(), "127.0.0.1"]
    else:
        names = [f"[{host}]" if ":" in host else host]
    return [n if port == 80 else f"{n}:{port}" for n in names]


@handle_errors
def review(
    args: Optional[list[str]] = typer.Argument(None, help="The output folder (or output_dir=... and other overrides).", show_default=False),
    no_browser: bool = typer.Option(False, "--no-browser", help="Print the URL, do not open a browser."),
    port: int = typer.Option(0, "--port", help="Port to listen on (0 = any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback exposes the page to the network."),
) -> None:
    """Fix identities in a local web page: merge, split, move, rename, hide, undo; later runs keep the fixes."""
    import uvicorn

    from ..export.locking import output_lock
    from ..review.server import create_app, reconcile_after_first_view
    from ..review.store import ReviewStore

    args = list(args or [])
    folders = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    if len(folders) > 1:
        raise InputError(f"one output folder, got {len(folders)}: {' '.join(folders)}")
    run = load(overrides, require_input=False)
    output_dir = Path(folders[0]).expanduser() if folders else run.output_dir
    if not output_dir.is_dir():
        raise InputError(f"{output_dir} is not a folder: run `idcluster cluster ... output_dir={output_dir}` first")
    if not _loopback(host):
        log.warning("--host %s: the review page is reachable from other machines (the token still guards it)", host)
    with output_lock(output_dir, "review"):  # one writer per output folder: cluster/export refuse meanwhile
        # the run's face vectors are in the cache it recorded, unless cache_dir= says where they went
        cache_dir = run.cache_dir if any(o.startswith("cache_dir=") for o in overrides) else None
        store = ReviewStore(output_dir, run.review_decisions, cache_dir, reconcile=False)
        sock = _listen(host, port)
        port = sock.getsockname()[1]
        addresses = _addresses(host, port)
        app = create_app(store, hosts=addresses)
        urls = [f"http://{a}/?token={app.state.token}" for a in addresses]
        url = urls[0]
        out.print(f"review of {store.output_dir}: {len(store.state.live_ids())} identities, {len(store.faces)} faces; "
                  f"decisions in {store.journal}")
        out.print(f"open {url}  (Ctrl+C to stop)", highlight=False)
        for other in urls[1:]:
            out.print(f"  or {other}", highlight=False)
        out.file.flush()  # the URL must reach a pipe or log file before the server blocks
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
        if not no_browser:  # the socket already listens: the browser's first request waits in its queue
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
        # The first view needs only the replayed state: the folders are checked against the journal after it.
        reconcile = threading.Thread(target=reconcile_after_first_view, args=(store, app), name="reconcile", daemon=True)
        reconcile.start()
        with sock:
            server.run(sockets=[sock])
        if reconcile.is_alive():
            reconcile.join(timeout=60)
