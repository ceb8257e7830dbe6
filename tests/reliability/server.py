"""A real uvicorn (`config.asgi:application`, as in production) on the test database, for the suite's HTTP
tests. Data a test creates must be committed (`transactional_db`) for the server to see it."""

import socket

from tests.conftest import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_uvicorn(processes, **env) -> str:
    port = free_port()
    processes.start(["-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                     "--log-level", "warning"], **env)

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    wait_until(up, timeout=30, message="uvicorn listening")
    return f"http://127.0.0.1:{port}"
