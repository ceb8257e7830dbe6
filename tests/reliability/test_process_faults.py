"""Process and database faults during a bulk run of real staging entries, on real clusters (`manage.py qcluster`):
SIGKILL of consumer workers and of the whole cluster, SIGTERM of the cluster (to its main process, then to its
whole process group), PostgreSQL restarted twice, and two clusters as two machines (separate PID namespaces,
same host name) of which one is killed. Each test reports its figures and ends with `check_ledger`: nothing
lost, nothing doubled, ledger balanced, nothing stuck."""

import os
import random
import shutil
import signal
import time

import pytest
from django.conf import settings

from tests.conftest import wait_until
from tests.reliability.harness import (
    CLUSTER_ENV,
    MACHINE,
    check_ledger,
    held_by,
    kill_group,
    ledger,
    pg_restart,
    processed,
    report,
    stage_bulk,
    stop_seconds,
    wait_new_cluster,
    wait_processed,
    wait_progress,
)

pytestmark = [pytest.mark.django_db(transaction=True)]

N = int(os.environ.get("RELIABILITY_ENTRIES", 20_000))
LEASE = settings.TRACKER["LEASE_SECONDS"]  # the product's default (30 s): takeover is measured against it
SLICE = settings.TRACKER["CONSUMER_SLICE_SECONDS"]


def qcluster(processes, **env):
    return processes.start(["manage.py", "qcluster"], **{**CLUSTER_ENV, **env})


def test_sigkill_of_workers_and_of_the_whole_cluster_loses_and_doubles_nothing(processes):
    from tracker.models import WorkerHeartbeat

    book = ledger("sigkill")
    total = stage_bulk(book, N)
    known: set[str] = set()
    cluster = qcluster(processes)
    first = wait_new_cluster(known)
    recoveries, held = [], []
    for k in range(3):  # SIGKILL the consumer process of a busy slot, three times
        wait_processed(book, N * (k + 1) // 10, 120, f"{(k + 1) * 10}% processed")

        def busy():  # a consumer in the middle of a batch
            slots = list(WorkerHeartbeat.objects.filter(cluster=first).exclude(worker_id=""))
            return [s for s in random.sample(slots, len(slots)) if held_by(s.worker_id)]

        victim = wait_until(busy, 60, 0.01, "a consumer holding tasks")[0]
        os.kill(victim.pid, signal.SIGKILL)
        held.append(held_by(victim.worker_id))
        killed = time.monotonic()
        wait_until(lambda v=victim: held_by(v.worker_id) == 0, LEASE, 0.05, "the killed consumer's tasks rescued")
        recoveries.append(round(time.monotonic() - killed, 2))
        wait_until(
            lambda v=victim: (
                WorkerHeartbeat.objects.filter(cluster=first, slot=v.slot)
                .exclude(worker_id__in=["", v.worker_id])
                .exists()
            ),
            60,
            0.05,
            "a new consumer in the slot",
        )

    wait_processed(book, N * 4 // 10, 120, "40% processed")
    wait_until(lambda: held_by(first), 60, 0.01, "the cluster holding tasks")
    kill_group(cluster)  # the whole cluster: sentinel, pusher, monitor, workers
    cluster.wait(timeout=10)
    held_at_kill = held_by(first)
    done_at_kill = processed(book)
    qcluster(processes)
    restarted = time.monotonic()
    wait_new_cluster(known)
    up = time.monotonic()
    wait_until(lambda: held_by(first) == 0, LEASE, 0.05, "the dead cluster's tasks rescued")
    cluster_rescue = round(time.monotonic() - restarted, 2)
    cluster_start = round(up - restarted, 2)
    wait_processed(book, N, 300, "every entry processed")
    figures = check_ledger(book, N, total)
    report(
        "sigkill",
        kills=len(recoveries) + 1,
        worker_kills=len(recoveries),
        tasks_held_by_killed_workers=held,
        worker_rescue_seconds=recoveries,
        cluster_kills=1,
        tasks_held_by_killed_cluster=held_at_kill,
        processed_at_cluster_kill=done_at_kill,
        new_cluster_up_seconds=cluster_start,
        cluster_rescue_seconds_after_restart=cluster_rescue,
        **figures,
    )
    # Dead processes of this machine are seen by pid: their tasks come back at once, not a lease later.
    assert max(recoveries) < LEASE / 2 and cluster_rescue < LEASE / 2


def test_sigterm_stops_the_cluster_within_a_slice_and_loses_nothing(processes):
    from tracker.models import ProcessTracker

    book = ledger("sigterm")
    total = stage_bulk(book, N)
    known: set[str] = set()
    stops = {}
    for k, how in enumerate(("process", "group")):
        cluster = qcluster(processes)
        wait_new_cluster(known)
        wait_processed(book, N * (k + 1) // 4, 120, f"{(k + 1) * 25}% processed")
        if how == "process":  # `kill PID`, Ctrl-C's twin, `make run`'s trap
            cluster.send_signal(signal.SIGTERM)
        else:  # systemd's default, `kill -- -PGID`, a container runtime: every process of the cluster at once
            kill_group(cluster, signal.SIGTERM)
        stops[how] = stop_seconds(cluster, 3 * SLICE)
        assert stops[how] is not None, f"SIGTERM to the {how}: still running after {3 * SLICE} s"
        # An orderly stop: every claimed task finished or was put back; none waits for a lease to expire.
        assert not ProcessTracker.objects.filter(status="PROCESSING").exists()
        assert processed(book) < N, "the run ended before the signal: stage more entries"
    done_at_stops = processed(book)
    qcluster(processes)
    wait_processed(book, N, 300, "every entry processed")
    figures = check_ledger(book, N, total)
    report(
        "sigterm",
        signals=len(stops),
        stop_seconds=stops,
        slice_seconds=SLICE,
        processed_at_last_stop=done_at_stops,
        **figures,
    )
    assert max(stops.values()) <= SLICE


@pytest.mark.skipif(
    not os.environ.get("PGDATA"), reason="needs the test run's own PostgreSQL (make test-reliability starts one)"
)
def test_postgresql_restarted_twice_mid_run(processes):
    book = ledger("pgrestart")
    total = stage_bulk(book, N)
    known: set[str] = set()
    qcluster(processes)
    wait_new_cluster(known)
    restarts = []
    for k in range(2):
        wait_processed(book, N * (1 + 2 * k) // 5, 120, f"{(1 + 2 * k) * 20}% processed")
        figures = pg_restart()
        back = time.monotonic()
        assert (processed(book) or 0) < N, "the run ended before the restart: stage more entries"
        wait_progress(book, 120, "the first entry processed after the restart")
        figures["stall_seconds"] = round(time.monotonic() - back, 2)  # from the database answering to progress
        restarts.append(figures)
    wait_processed(book, N, 300, "every entry processed")
    figures = check_ledger(book, N, total)
    report("pg_restart", restarts=len(restarts), per_restart=restarts, **figures)
    # Consumers reconnect by themselves: no wait for the once-a-minute maintenance schedule.
    assert max(r["stall_seconds"] for r in restarts) < 10


@pytest.mark.skipif(not shutil.which("unshare") or os.geteuid() != 0, reason="PID namespaces need unshare as root")
def test_two_machines_share_the_work_and_one_takes_over_when_the_other_dies(processes):
    from django.contrib.contenttypes.models import ContentType

    from tracker.models import ProcessTracker, Transition
    from tracker.worker import cluster_status

    book = ledger("machines")
    total = stage_bulk(book, N)
    known: set[str] = set()
    a = qcluster(processes, prefix=MACHINE)
    a_id = wait_new_cluster(known)
    b = qcluster(processes, prefix=MACHINE)
    b_id = wait_new_cluster(known)
    status = cluster_status()
    alive = {c["cluster"]: c["consumers_alive"] for c in status["clusters"]}
    assert alive[a_id] == alive[b_id] == CLUSTER_ENV["TRACKER_CONSUMERS"]  # two machines: twice the consumers
    worker_ids = sorted(h["worker_id"] for h in status["heartbeats"] if h["alive"])
    assert len(set(worker_ids)) == 4
    ct = ContentType.objects.get_for_model(ProcessTracker)
    claims = Transition.objects.filter(content_type=ct, to_status="PROCESSING")
    wait_until(
        lambda: claims.filter(by_worker__contains=a_id).exists() and claims.filter(by_worker__contains=b_id).exists(),
        60,
        0.05,
        "both machines claiming",
    )
    wait_processed(book, N // 5, 120, "20% processed")

    wait_until(lambda: held_by(a_id) > 0, 30, 0.01, "A holding tasks")
    kill_group(a)  # machine A dies: its PID namespace and every process in it
    a.wait(timeout=10)
    killed = time.monotonic()
    held = held_by(a_id)
    wait_until(lambda: held_by(a_id) == 0, LEASE + 10, 0.05, "A's tasks rescued by B")
    takeover = round(time.monotonic() - killed, 2)
    wait_processed(book, N, 300, "every entry processed")
    figures = check_ledger(book, N, total)
    # B was never judged dead: every rescued task had last been claimed by A.
    rescued = set(Transition.objects.filter(content_type=ct, by_worker="rescuer").values_list("object_id", flat=True))
    wrongly, last_claim = [], {}
    for oid, to_status, by in (
        Transition.objects.filter(content_type=ct, object_id__in=rescued)
        .order_by("object_id", "id")
        .values_list("object_id", "to_status", "by_worker")
    ):
        if to_status == "PROCESSING":
            last_claim[oid] = by
        elif by == "rescuer" and a_id not in last_claim.get(oid, ""):
            wrongly.append(oid)
    by_machine = {m: claims.filter(by_worker__contains=cid).count() for m, cid in (("A", a_id), ("B", b_id))}
    report(
        "two_machines",
        machines=2,
        consumers=sum(alive.values()),
        worker_ids=worker_ids,
        kills=1,
        tasks_held_by_dead_machine=held,
        takeover_seconds=takeover,
        lease_seconds=LEASE,
        claims_by_machine=by_machine,
        rescued_from_live_machine=len(wrongly),
        **figures,
    )
    assert not wrongly
    assert held > 0 and takeover <= LEASE + 1
    assert b.poll() is None  # B lived through it
