"""Procrastinate with a no-op task: the peer the tracker is measured against (bench-only dependency).

python -m bench.procrastinate_app worker CONCURRENCY"""

import os
import sys

import procrastinate

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("PROCRASTINATE_URL", "")))


@app.task(name="noop", queue="bench")
def noop(i: int) -> None:
    return None


if __name__ == "__main__":
    app.run_worker(
        queues=["bench"],
        concurrency=int(sys.argv[2]),
        wait=True,
        install_signal_handlers=True,
        fetch_job_polling_interval=0.2,
    )
