"""How runs enter and leave the queue, through real processes: a worker with free slots claims the
queued runs together (not one after another), and a tenant limited to N runs in ``reject`` mode is
never admitted past N, however many API processes admit its runs at once.

The module has its own small cluster (PostgreSQL, Redis, 2 API processes; the worker is started by
the test that needs it), because both checks need the queue to hold runs no worker has seen yet."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from devcluster import Cluster

from .conftest import API

# Its own PostgreSQL whatever --store says: it runs once, in the SQLite pass.
pytestmark = pytest.mark.own_postgres

SCRIPT: dict[str, Any] = {
    "rules": [{"match": "long", "deltas": [f"w{i} " for i in range(600)], "delta_delay": 0.05}],
    "responses": [{"text": "Hello."}],
}
CONFIG: dict[str, Any] = {
    "providers": {"s": {"type": "scripted", "script": SCRIPT}},
    "profiles": {"t": {"chain": [{"provider": "s"}]}},
    "default_profile": "t",
    "runtime": {"tenant_limits": {"limited": 2}, "tenant_overflow": "reject", "cancel_grace": 1.0},
    "security": {"tenants": {"default": {}, "limited": {}}},
    "http": {"requests_per_minute": 100000},
    "logging": {"level": "warning"},
}
CONCURRENCY = 16


class Nodes:
    def __init__(self, cluster: Cluster, key: str, limited_key: str):
        self.cluster = cluster
        self.key = key
        self.limited_key = limited_key

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.cluster.apis[index % len(self.cluster.apis)].port}"

    def http(self, index: int, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.Client(base_url=self.url(index), headers=headers, timeout=60)

    def start(self, index: int, text: str, key: str | None = None) -> httpx.Response:
        """Start a run (its stream is closed at once; the run goes on) and return the answer."""
        with (
            self.http(index, key) as client,
            client.stream("POST", f"{API}/run/stream", json={"input": text}) as answer,
        ):
            answer.read() if answer.status_code != 200 else None
            return answer

    def sql(self, statement: str) -> str:
        return self.cluster.postgres.sql(statement, database="agentstage")

    def cancel(self, run_ids: list[str], key: str | None = None) -> None:
        with self.http(0, key) as client:
            for run_id in run_ids:
                answer = client.delete(f"{API}/cancel/{run_id}")
                assert answer.status_code in (202, 409), answer.text
        deadline = time.monotonic() + 60
        ids = ", ".join(f"'{r}'" for r in run_ids)
        while (
            self.sql(f"SELECT count(*) FROM runs WHERE id IN ({ids}) AND status IN ('queued', 'running')")
            != "0"
        ):
            assert time.monotonic() < deadline, "cancelled runs did not end"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def nodes() -> Iterator[Nodes]:
    cluster = Cluster(config=CONFIG)
    try:
        cluster.start_services()
        key = cluster.agent("keys", "create", "--name", "tests", "--role", "admin").strip()
        limited = cluster.agent(
            "keys", "create", "--name", "limited", "--role", "operator", "--tenant", "limited"
        ).strip()
        for _ in range(2):
            cluster.add_api()
        cluster.wait_ready(timeout=120)
        yield Nodes(cluster, key, limited)
    finally:
        cluster.stop()


def test_reject_mode_admits_no_more_than_the_limit_across_two_nodes_at_once(nodes: Nodes) -> None:
    # No worker runs yet: admitted runs stay queued, so each one holds its slot for the whole test.
    tries = 24
    barrier = threading.Barrier(tries)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def admit(index: int) -> None:
        barrier.wait(timeout=60)
        answer = nodes.start(index, f"long {index}", nodes.limited_key)  # alternately through A and B
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=admit, args=(i,), daemon=True) for i in range(tries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    codes = sorted(answer.status_code for answer in answers)
    assert len(codes) == tries
    admitted = [answer.headers["x-run-id"] for answer in answers if answer.status_code == 200]
    refused = [answer for answer in answers if answer.status_code != 200]
    assert len(admitted) == 2, codes
    for answer in refused:
        assert answer.status_code == 429, answer.text
        assert answer.json()["code"] == "tenant_limit"
        assert float(answer.headers["retry-after"]) > 0
    stored = nodes.sql("SELECT count(*) FROM runs WHERE tenant = 'limited'")
    assert stored == "2"  # a refused run leaves nothing behind
    nodes.cancel(admitted, nodes.limited_key)
    # Cancelled before any worker claimed them: their jobs left the queue with them.
    locks = ", ".join(f"'{r}'" for r in admitted)
    assert nodes.sql(f"SELECT count(*) FROM procrastinate_jobs WHERE queueing_lock IN ({locks})") == "0"
    # A slot freed is a slot admitted again, through either node.
    again = nodes.start(1, "long again", nodes.limited_key)
    assert again.status_code == 200, again.text
    nodes.cancel([again.headers["x-run-id"]], nodes.limited_key)


def test_a_worker_with_free_slots_claims_the_queued_runs_together(nodes: Nodes) -> None:
    run_ids = []
    for index in range(CONCURRENCY):
        answer = nodes.start(index, f"long {index}")
        assert answer.status_code == 200, answer.text
        run_ids.append(answer.headers["x-run-id"])
    ids = ", ".join(f"'{r}'" for r in run_ids)
    assert nodes.sql(f"SELECT count(*) FROM runs WHERE id IN ({ids}) AND status = 'queued'") == str(
        CONCURRENCY
    )
    worker = nodes.cluster.add_worker("--concurrency", str(CONCURRENCY))
    try:
        nodes.cluster.wait_ready(timeout=120)
        # Claimed together: procrastinate marks a job ``doing`` in the transaction that claims it,
        # so jobs claimed in one statement share that transaction (their rows' xmin).
        deadline = time.monotonic() + 60
        while True:
            doing = nodes.sql(
                "SELECT count(*), count(DISTINCT xmin::text) FROM procrastinate_jobs"
                f" WHERE status = 'doing' AND queueing_lock IN ({ids})"
            )
            if doing.split("|")[0] == str(CONCURRENCY):
                break
            assert time.monotonic() < deadline, f"not all claimed: {doing}"
            time.sleep(0.05)
        assert doing == f"{CONCURRENCY}|1", "the runs were claimed one by one, not together"
        # And all of them execute at the same time, before any of them has finished.
        most = 0
        deadline = time.monotonic() + 60
        while most < CONCURRENCY:
            row = nodes.sql(
                f"SELECT count(*) FILTER (WHERE status = 'running'),"
                f" count(*) FILTER (WHERE status NOT IN ('queued', 'running')) FROM runs WHERE id IN ({ids})"
            )
            running, ended = (int(x) for x in row.split("|"))
            assert ended == 0, (
                f"a run ended before all {CONCURRENCY} were running ({running} were): "
                + nodes.sql(f"SELECT status, count(*) FROM runs WHERE id IN ({ids}) GROUP BY status")
                + worker.log()[-2000:]
            )
            most = max(most, running)
            assert time.monotonic() < deadline, f"at most {most} of {CONCURRENCY} ran at once"
            time.sleep(0.05)
        owners = nodes.sql(f"SELECT count(DISTINCT worker_id) FROM runs WHERE id IN ({ids})")
        assert owners == "1"
    finally:
        nodes.cancel(run_ids)
        worker.stop(timeout=30)
        nodes.cluster.workers.remove(worker)
