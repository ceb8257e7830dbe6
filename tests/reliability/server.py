"""A real uvicorn (`config.asgi:application`, as in production) on the test database, for the suite's HTTP
tests. Data a test creates must be committed (`transactional_db`) for the server to see it."""

import sys
import urllib.request

from tests.conftest import wait_until
from tests.pgserver import free_port


def uvicorn_command(port: int, *extra: str) -> list[str]:
    """The command line of one uvicorn worker serving the product on 127.0.0.1:`port`."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "config.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
    ]


def answers(url: str) -> bool:
    """Whether the server at `url` answers its health endpoint."""
    try:
        return urllib.request.urlopen(f"{url}/api/health/", timeout=2).status == 200
    except OSError:
        return False


def start_uvicorn(processes, *extra: str, **env) -> str:
    """Starts uvicorn as a child of `processes` (killed at teardown) and returns its base URL once it answers."""
    port = free_port()
    processes.start(uvicorn_command(port, *extra)[1:], **env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(url), 60, interval=0.2, message="uvicorn to answer")
    return url
