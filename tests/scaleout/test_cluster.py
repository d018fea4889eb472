"""The scale-out checks through real processes: 2 API processes + 2 workers behind nginx, a
private PostgreSQL and Redis, the scripted provider streaming slowly."""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import threading
import time
from typing import Any

import httpx
import pytest

from .conftest import API, Client, Running, in_thread

# Its own PostgreSQL whatever --store says: it runs once, in the SQLite pass.
pytestmark = pytest.mark.own_postgres


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [int(event["id"]) for event in events]


def test_a_run_started_on_one_node_streams_and_resumes_exactly_on_the_other(cluster: Running) -> None:
    a, b = cluster.api(0), cluster.api(1)
    run_id = a.start("slow, please")
    first = b.events(run_id, until=5)
    assert seqs(first) == [1, 2, 3, 4, 5]
    second = b.events(run_id, last_event_id=5, until=12)  # reconnect with Last-Event-ID
    rest = a.events(run_id, after=12)  # and once more, through the other node
    whole = first + second + rest
    assert seqs(whole) == list(range(1, len(whole) + 1))
    assert whole[-1]["event"] == "run.completed"
    assert [s for s, _ in cluster.log_of(run_id)] == seqs(whole)
    assert b.status(run_id)["output"].startswith("s0 s1 s2")


def test_a_finished_run_replays_identically_from_every_node(cluster: Running) -> None:
    run_id = cluster.api(0).start("brief")
    cluster.api(0).wait(run_id)
    logs = [client.events(run_id) for client in (cluster.api(0), cluster.api(1), cluster.nginx)]
    assert logs[0] == logs[1] == logs[2] and logs[0][-1]["event"] == "run.completed"


def test_cancel_on_one_node_stops_the_run_on_whichever_worker_runs_it(cluster: Running) -> None:
    a, b = cluster.api(0), cluster.api(1)
    latencies = []
    for _ in range(20):
        run_id = b.start("long")
        cluster.worker_of(run_id)
        stream, got = in_thread(lambda rid=run_id: b.events(rid))
        time.sleep(0.1)
        sent = time.perf_counter()
        with a.http() as client:
            answer = client.delete(f"{API}/cancel/{run_id}")
        assert answer.status_code == 202, answer.text
        stream.join(timeout=30)
        latencies.append(time.perf_counter() - sent)
        events = got[0]
        assert events[-1]["event"] == "run.cancelled"
        # The user's own reason: the cancel reached the worker by notification at once, not by
        # the durable flag its heartbeat reads ("cancelled by request from another process").
        assert events[-1]["data"]["data"]["reason"] == "cancelled by the user"
        assert seqs(events) == list(range(1, len(events) + 1))
        assert b.status(run_id)["status"] == "cancelled"
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    # The aim (p99 < 100 ms) is measured by benchmarks/scale_out.py on a quiet machine; a test
    # cannot time it on shared cores. Here: every one of the 20 ended, and none waited for a sweep.
    print(f"cancel across nodes: p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert p99 < 10.0


def test_a_cancel_whose_signal_is_lost_is_still_honoured_from_the_durable_flag(cluster: Running) -> None:
    # The flag set with no notification at all: what a worker sees when the signal never
    # reaches it (a listener reconnecting, a notification dropped). Its heartbeat reads the flag.
    client = cluster.api(0)
    run_id = client.start("long")
    cluster.worker_of(run_id)
    stream, got = in_thread(lambda: client.events(run_id))
    cluster.sql(f"UPDATE runs SET cancel_requested = true WHERE id = '{run_id}'")
    stream.join(timeout=60)
    assert got, "the run did not end within 60 s of its durable cancel flag"
    events = got[0]
    assert events[-1]["event"] == "run.cancelled"
    assert events[-1]["data"]["data"]["reason"] == "cancelled by request from another process"
    assert seqs(events) == list(range(1, len(events) + 1))
    assert client.status(run_id)["status"] == "cancelled"


def test_a_cancelled_queued_run_never_starts(cluster: Running) -> None:
    client = Client(cluster.nginx.url, cluster.limited_key)
    holders = [client.start("long") for _ in range(2)]  # the tenant's 2 slots are taken
    queued = client.start("brief")
    time.sleep(0.5)
    assert client.status(queued)["status"] == "queued"
    with client.http() as http:
        assert http.delete(f"{API}/cancel/{queued}").status_code == 202
        for run_id in holders:
            http.delete(f"{API}/cancel/{run_id}")
    assert client.wait(queued)["status"] == "cancelled"
    assert [kind for _, kind in cluster.log_of(queued)] == ["run.queued", "run.cancelled"]
    for run_id in holders:
        assert client.wait(run_id)["status"] == "cancelled"


def test_a_tenant_limited_to_two_never_has_more_than_two_running(cluster: Running) -> None:
    client = Client(cluster.nginx.url, cluster.limited_key)
    with client.http() as http:
        answer = http.post(f"{API}/batch", json={"inputs": ["brief"] * 50, "parallel": 32})
    assert answer.status_code == 202, answer.text
    run_ids = answer.json()["run_ids"]
    most = 0
    deadline = time.monotonic() + 180
    while True:
        row = cluster.sql(
            "SELECT count(*) FILTER (WHERE status = 'running' OR (status = 'queued' AND worker_id IS NOT NULL)),"
            " count(*) FILTER (WHERE status IN ('queued', 'running')) FROM runs WHERE tenant = 'limited'"
        )
        executing, unfinished = (int(x) for x in row.split("|"))
        most = max(most, executing)
        if unfinished == 0:
            break
        assert time.monotonic() < deadline, f"{unfinished} runs still unfinished"
        time.sleep(0.02)
    assert most == 2
    statuses = {client.status(run_id)["status"] for run_id in run_ids}
    assert statuses == {"completed"}


def test_two_messages_at_once_to_one_conversation_through_two_nodes_run_in_order(cluster: Running) -> None:
    a, b = cluster.api(0), cluster.api(1)
    with a.http() as client:
        conversation = client.post("/api/v1/conversations", json={"title": "two at once"}).json()["id"]

    def send(node: Client, text: str) -> dict[str, Any]:
        with node.http() as client:
            answer = client.post(f"/api/v1/conversations/{conversation}/messages", json={"input": text})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    first, got_first = in_thread(send, a, "slow: first message")
    time.sleep(0.05)
    second, got_second = in_thread(send, b, "brief: second message")
    first.join(60)
    second.join(60)
    assert got_first[0]["status"] == got_second[0]["status"] == "completed"
    # "In order": one run after the other, and the conversation in the order they ran — usually the
    # order they were sent, but a loaded machine may queue the second one first.
    sent = {got_first[0]["run_id"]: "slow: first message", got_second[0]["run_id"]: "brief: second message"}
    runs = sorted(sent, key=lambda r: cluster.sql(f"SELECT started_at FROM runs WHERE id = '{r}'"))
    with b.http() as client:
        history = client.get(f"/api/v1/conversations/{conversation}/history").json()["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == [sent[r] for r in runs]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    finished_first = cluster.sql(f"SELECT finished_at FROM runs WHERE id = '{runs[0]}'")
    started_second = cluster.sql(f"SELECT started_at FROM runs WHERE id = '{runs[1]}'")
    assert finished_first <= started_second  # one after the other, never overlapping


def test_redis_restart_and_a_database_crash_mid_stream_lose_nothing(cluster: Running) -> None:
    b = cluster.api(1)
    for disrupt in (cluster.cluster.redis.restart, cluster.cluster.postgres.restart_immediate):
        run_id = cluster.api(0).start("long" if disrupt is not cluster.cluster.redis.restart else "slow")
        head = b.events(run_id, until=4)
        opened = threading.Event()
        stream, got = in_thread(lambda rid=run_id, o=opened: b.events(rid, after=4, opened=o))
        assert opened.wait(30)  # the stream is open before the disruption: it must ride it out
        time.sleep(0.2)
        disrupt()
        stream.join(timeout=90)
        events = head + got[0]
        assert seqs(events) == list(range(1, len(events) + 1)), disrupt
        assert events[-1]["event"] == "run.completed", events[-1]["data"]["data"]
        assert [s for s, _ in cluster.log_of(run_id)] == seqs(events)


def test_a_killed_worker_fails_its_run_worker_lost_or_requeues_an_idempotent_one(cluster: Running) -> None:
    a = cluster.api(0)
    plain = a.start("long")
    victim = cluster.worker_of(plain)
    idempotent = a.start("long", options={"idempotent": True})
    deadline = time.monotonic() + 30
    while cluster.sql(f"SELECT worker_id FROM runs WHERE id = '{idempotent}'").rpartition(":")[2] != str(
        victim.pid
    ):
        # put the idempotent run on the same worker: cancel it and try again until it lands there
        assert time.monotonic() < deadline
        if cluster.sql(f"SELECT status FROM runs WHERE id = '{idempotent}'") == "running":
            with a.http() as client:
                client.delete(f"{API}/cancel/{idempotent}")
            idempotent = a.start("long", options={"idempotent": True})
        time.sleep(0.05)
    cluster.worker_of(idempotent)
    os.kill(victim.pid, signal.SIGKILL)
    ended = a.wait(plain, timeout=60)
    assert ended["status"] == "failed" and ended["error"]["code"] == "worker_lost"
    log = cluster.log_of(plain)
    assert [s for s, _ in log] == list(range(1, len(log) + 1)) and log[-1][1] == "run.failed"
    again = a.wait(idempotent, timeout=90)
    assert again["status"] == "completed", again
    assert cluster.sql(f"SELECT attempt FROM runs WHERE id = '{idempotent}'") == "2"
    log = cluster.log_of(idempotent)
    assert [s for s, _ in log] == list(range(1, len(log) + 1))
    assert [kind for _, kind in log].count("run.started") == 2 and log[-1][1] == "run.completed"
    cluster.replace(victim)


def test_a_paused_worker_cannot_write_into_a_run_that_moved_on(cluster: Running) -> None:
    a = cluster.api(0)
    run_id = a.start("long", options={"idempotent": True})
    paused = cluster.worker_of(run_id)
    time.sleep(0.5)
    before = cluster.log_of(run_id)
    paused.signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 60
        while cluster.sql(f"SELECT attempt FROM runs WHERE id = '{run_id}'") != "2":
            assert time.monotonic() < deadline, "the paused worker's run was never requeued"
            time.sleep(0.1)
        resumed_log = cluster.log_of(run_id)
        paused.signal(signal.SIGCONT)
        ended = a.wait(run_id, timeout=90)
    finally:
        paused.signal(signal.SIGCONT)
    assert ended["status"] == "completed"
    log = cluster.log_of(run_id)
    assert [s for s, _ in log] == list(range(1, len(log) + 1))
    assert log[: len(resumed_log)] == resumed_log and len(before) <= len(resumed_log)
    assert [kind for _, kind in log].count("run.started") == 2
    deadline = time.monotonic() + 20
    while "was refused because it is at attempt" not in paused.log():
        assert time.monotonic() < deadline, paused.log()[-3000:]
        time.sleep(0.1)
    cluster.replace(paused)


def test_a_client_whose_api_node_dies_reconnects_through_nginx_without_a_gap(cluster: Running) -> None:
    run_id = cluster.nginx.start("long")
    cluster.worker_of(run_id)
    collected: list[list[dict[str, Any]]] = [[] for _ in range(4)]
    broken = [False] * 4

    def follow(index: int) -> None:
        headers = dict(cluster.nginx.headers)
        try:
            with httpx.Client(base_url=cluster.nginx.url, headers=headers, timeout=60) as client:
                with client.stream("GET", f"{API}/runs/{run_id}/events") as answer:
                    from .conftest import sse

                    for event in sse(answer.iter_lines()):
                        collected[index].append(event)
                        if event["event"] == "run.completed":
                            return
        except httpx.HTTPError:
            pass
        broken[index] = True
        last = int(collected[index][-1]["id"]) if collected[index] else 0
        collected[index] += cluster.nginx.events(run_id, last_event_id=last)

    threads = []
    for index in range(4):  # round-robin: two on each API node
        threads.append(in_thread(follow, index)[0])
        time.sleep(0.2)
    time.sleep(1.0)
    victim = cluster.cluster.apis[0]
    os.kill(victim.pid, signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=90)
    assert any(broken)
    for events in collected:
        assert seqs(events) == list(range(1, len(events) + 1))
        assert events[-1]["event"] == "run.completed"
    assert victim.process is not None
    victim.process.wait(timeout=30)  # reap it: the node is started again below
    victim.process = None
    victim.start()
    cluster.cluster.wait_ready()


def test_a_stopping_worker_drains_then_cancels_with_reason_shutdown(cluster: Running) -> None:
    run_id = cluster.api(1).start("long")
    worker = cluster.worker_of(run_id)
    worker.signal(signal.SIGTERM)
    ended = cluster.api(1).wait(run_id, timeout=60)
    assert ended["status"] == "cancelled"
    events = cluster.api(0).events(run_id)
    assert events[-1]["data"]["data"]["reason"] == "shutdown"
    assert worker.process is not None and worker.process.wait(timeout=30) == 0
    cluster.replace(worker)


def ready(client: Client) -> httpx.Response:
    return httpx.get(f"{client.url}/health/ready", timeout=30)


def test_readiness_names_redis_and_postgresql_problems(cluster: Running) -> None:
    node = cluster.api(0)
    assert ready(node).json()["checks"]["redis"] == "ok"
    redis = cluster.cluster.redis
    redis.stop()
    try:
        answer = ready(node)  # streams still work without Redis (polled): degraded, still ready
        assert answer.status_code == 200, answer.text
        check = answer.json()["checks"]["redis"]
        assert check.startswith("degraded: Redis at redis://127.0.0.1:") and "polled" in check, check
    finally:
        redis.start()
    postgres = cluster.cluster.postgres
    postgres.stop_server()
    try:
        answer = ready(node)
        assert answer.status_code == 503, answer.text
        check = answer.json()["checks"]["store"]
        assert check.startswith("unavailable (store_unavailable)") and str(postgres.port) in check, check
    finally:
        postgres.start_server()
    deadline = time.monotonic() + 30
    while (answer := ready(node)).status_code != 200 or answer.json()["checks"]["redis"] != "ok":
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)
    run_id = node.start("brief")  # and the cluster works again
    assert node.wait(run_id)["status"] == "completed"


def test_workers_ride_out_a_database_outage(cluster: Running) -> None:
    """A database away for several heartbeats, claims and polls stops no worker: each keeps its
    place and executes runs again once the database is back."""
    workers = list(cluster.cluster.workers)
    logged = {worker.pid: len(worker.log()) for worker in workers}
    postgres = cluster.cluster.postgres
    postgres.stop_server()
    try:
        time.sleep(3)  # a heartbeat every 0.75 s, a claim poll every 0.5 s: all of them fail
    finally:
        postgres.start_server()
    node = cluster.api(0)
    run_ids = [node.start("brief") for _ in range(6)]
    assert [node.wait(run_id)["status"] for run_id in run_ids] == ["completed"] * 6
    for worker in workers:
        # "back" is said at the worker's first heartbeat that succeeds (every 0.75 s), which may
        # come after the runs above have ended.
        deadline = time.monotonic() + 10
        while (
            "the database is back" not in worker.log()[logged[worker.pid] :] and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        since = worker.log()[logged[worker.pid] :]
        assert worker.process is not None and worker.process.poll() is None, since
        assert "worker stopping" not in since and "the database is back" in since, since
    owners = {cluster.sql(f"SELECT worker_id FROM runs WHERE id = '{r}'").rpartition(":")[2] for r in run_ids}
    assert owners <= {str(worker.pid) for worker in workers}  # executed by the workers that were there


def wait_until(check: Any, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def on_one_worker(cluster: Running, index: int, client: Client, body: dict[str, Any]) -> dict[str, Any]:
    """Run ``body`` through ``client`` while only worker ``index`` may claim it (the others are
    paused); its final status."""
    others = [w for i, w in enumerate(cluster.cluster.workers) if i != index]
    for worker in others:
        worker.signal(signal.SIGSTOP)
    try:
        with client.http() as http:
            answer = http.post(f"{API}/run", json=body)
        assert answer.status_code == 200, answer.text
        return client.wait(answer.json()["run_id"])
    finally:
        for worker in others:
            worker.signal(signal.SIGCONT)


def once_the_worker_has_it(
    cluster: Running, index: int, client: Client, body: dict[str, Any], has_it: Any, what: str
) -> dict[str, Any]:
    """Run ``body`` on worker ``index`` again until ``has_it(status)``: a worker applies a change in
    its own time (an MCP server takes a second or more to start), with no signal a test can wait for."""
    deadline = time.monotonic() + 30
    while True:
        status = on_one_worker(cluster, index, client, body)
        if has_it(status):
            return status
        assert time.monotonic() < deadline, f"worker {index} never {what}: {status}"
        time.sleep(0.2)


def test_a_config_change_on_one_node_reaches_the_other_and_every_worker_without_a_restart(
    cluster: Running,
) -> None:
    a, b = cluster.api(0), cluster.api(1)
    # A profile added through node A: node B lists it and admits runs for it, and each worker runs them.
    with a.http() as http:
        added = http.post(
            "/api/v1/config/profiles",
            json={"name": "shared-p", "chain": [{"provider": "s"}], "description": "added on A"},
        )
    assert added.status_code == 201, added.text

    def b_lists_profile() -> bool:
        with b.http() as http:
            return "shared-p" in {p["name"] for p in http.get("/api/v1/config/profiles").json()}

    wait_until(b_lists_profile, "node B lists the profile added on node A")
    for index in range(len(cluster.cluster.workers)):  # the workers hear of it through the store too
        status = once_the_worker_has_it(
            cluster, index, b, {"input": "brief", "profile": "shared-p"},
            lambda status: status["status"] == "completed", "ran a run of the shared profile",
        )  # fmt: skip
        assert status["profile"] == "shared-p", status

    # An MCP server registered through node A: node B lists its tools, each worker calls them in runs.
    with a.http() as http:
        registered = http.post(
            "/api/v1/tools/register",
            json={"name": "time", "command": sys.executable, "args": ["-m", "mcp_server_time"]},
        )
    assert registered.status_code == 201, registered.text

    def b_lists_tool() -> bool:
        with b.http() as http:
            return "time.get_current_time:mcp" in {t["id"] for t in http.get("/api/v1/tools").json()}

    wait_until(b_lists_tool, "node B lists the MCP tools registered on node A")
    body = {"input": "what time is it?", "mode": "react", "options": {"max_steps": 2}}

    def tool_result(status: dict[str, Any]) -> dict[str, Any]:
        return dict(
            next(e for e in b.events(status["run_id"]) if e["event"] == "tool.result")["data"]["data"]
        )

    for index in range(len(cluster.cluster.workers)):  # each worker starts the server too
        # The script calls the tool at every step (its rule matches the question), so the run
        # ends at max_steps; what matters is the tool's result, produced on this worker.
        status = once_the_worker_has_it(
            cluster, index, b, body,
            lambda status: (tool_result(status).get("error") or {}).get("code") != "tool_not_found",
            "started the registered MCP server",
        )  # fmt: skip
        result = tool_result(status)
        assert result["tool"] == "time.get_current_time:mcp" and result["output"]["timezone"] == "UTC", result

    # Removed through node B: node A drops it too.
    with b.http() as http:
        assert http.delete("/api/v1/tools/time").status_code == 204

    def a_dropped_tool() -> bool:
        with a.http() as http:
            return not [t for t in http.get("/api/v1/tools").json() if t["category"] == "mcp:time"]

    wait_until(a_dropped_tool, "node A drops the MCP server removed on node B")


def profiles_of(client: Client) -> set[str]:
    with client.http() as http:
        answer = http.get("/api/v1/config/profiles")
    assert answer.status_code == 200, answer.text
    return {profile["name"] for profile in answer.json()}


def test_a_config_change_the_database_refuses_is_applied_nowhere_and_the_next_spreads_after_a_crash(
    cluster: Running,
) -> None:
    a, b = cluster.api(0), cluster.api(1)
    config_file = cluster.cluster.home / "config.json"
    # A real refusal by the database (not a mock): a trigger that fails every write of the document.
    cluster.sql(
        "CREATE FUNCTION refuse_config() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'configuration changes are frozen'; END $$; "
        "CREATE TRIGGER refuse_config BEFORE INSERT OR UPDATE ON shared_config "
        "FOR EACH ROW EXECUTE FUNCTION refuse_config()"
    )
    try:
        with a.http() as http:
            refused = http.post(
                "/api/v1/config/profiles", json={"name": "refused-p", "chain": [{"provider": "s"}]}
            )
        assert refused.status_code == 500, refused.text
        problem = refused.json()
        assert problem["code"] == "store_write_failed", problem
        assert "not applied" in problem["detail"] and "configuration changes are frozen" in problem["detail"]
    finally:
        cluster.sql("DROP TRIGGER refuse_config ON shared_config; DROP FUNCTION refuse_config()")
    assert "refused-p" not in profiles_of(a) and "refused-p" not in profiles_of(b)
    assert "refused-p" not in config_file.read_text(encoding="utf-8")

    # A database crash cuts every process's listening connection; each listens again, so the next
    # change still reaches the other node and both workers.
    cluster.cluster.postgres.restart_immediate()
    deadline = time.monotonic() + 30
    while True:
        with a.http() as http:
            added = http.post(
                "/api/v1/config/profiles", json={"name": "after-p", "chain": [{"provider": "s"}]}
            )
        if added.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert added.status_code == 201, added.text
    wait_until(
        lambda: "after-p" in profiles_of(b), "node B lists the profile added on node A after the crash"
    )
    assert "refused-p" not in profiles_of(b)
    for index in range(len(cluster.cluster.workers)):  # the workers hear of it the same way
        status = once_the_worker_has_it(
            cluster, index, b, {"input": "brief", "profile": "after-p"},
            lambda status: status["status"] == "completed", "ran a run of the profile added after the crash",
        )  # fmt: skip
        assert status["profile"] == "after-p", status


def test_a_config_change_is_checked_against_the_shared_document_as_it_is_when_written(
    cluster: Running,
) -> None:
    """Two nodes change the configuration at once: the later change is checked, under the
    document's lock, against the document that already holds the earlier one (not against the copy
    it read before), and a change its check refuses leaves the document as it was."""
    import asyncio

    from agentstage.distributed.queue import libpq_url
    from agentstage.distributed.shared_config import SharedConfig
    from agentstage.errors import ConfigError
    from agentstage.store.sql import SqlRunStore

    url = cluster.cluster.postgres.url
    profile = {"chain": [{"provider": "s"}]}

    async def two_nodes() -> None:
        store = SqlRunStore(url)
        await store.open()
        try:
            node_a, node_b = SharedConfig(store, libpq_url(url)), SharedConfig(store, libpq_url(url))
            read_by_a = (await node_a.current())[1]
            await node_b.publish({"profiles": {"race-b": profile}})  # lands after A read
            seen: list[dict[str, Any]] = []
            merged = await node_a.publish({"profiles": {"race-a": profile}}, seen.append)
            assert "race-b" not in read_by_a.get("profiles", {})
            assert "race-b" in seen[0]["profiles"] and "race-a" not in seen[0]["profiles"]
            assert {"race-a", "race-b"} <= set(merged["profiles"])

            revision, _ = await node_a.current()

            def refuse(document: dict[str, Any]) -> None:
                raise ConfigError("race-c would not work with " + ", ".join(sorted(document["profiles"])))

            with pytest.raises(ConfigError, match=r"race-c would not work with .*race-b"):
                await node_a.publish({"profiles": {"race-c": profile}}, refuse)
            after, document = await node_a.current()
            assert after == revision and "race-c" not in document["profiles"]
        finally:
            await store.close()

    asyncio.run(two_nodes())
    wait_until(lambda: {"race-a", "race-b"} <= profiles_of(cluster.api(1)), "node B applies both changes")


def test_a_shared_document_a_process_cannot_use_leaves_its_configuration_as_it_was(cluster: Running) -> None:
    """A document every process but the one that wrote it would refuse (written here by hand, as a
    node with other local layers could): each process says so in its log and keeps serving with
    what it had; a change made on top of it is refused as invalid; a fixed document is applied."""
    a = cluster.api(0)
    processes = [*cluster.cluster.apis, *cluster.cluster.workers]
    logged = {process.pid: len(process.log()) for process in processes}
    before = cluster.sql("SELECT revision || '|' || document FROM shared_config WHERE id = 1")
    revision, _, document = before.partition("|")
    revision, document = revision or "0", document or "{}"  # no change made before this test
    broken = {**json.loads(document), "default_profile": "no-such-profile"}

    def share(body: dict[str, Any], at: int) -> None:
        text = json.dumps(body).replace("'", "''")
        cluster.sql(
            "INSERT INTO shared_config (id, revision, document, updated_at) "
            f"VALUES (1, {at}, '{text}', now()) ON CONFLICT (id) DO UPDATE SET "
            "revision = EXCLUDED.revision, document = EXCLUDED.document, updated_at = EXCLUDED.updated_at; "
            f"SELECT pg_notify('agentstage_config', '{at}')"
        )

    share(broken, int(revision) + 1)
    try:
        for process in processes:
            wait_until(
                lambda process=process: "not applied here" in process.log()[logged[process.pid] :],
                f"{process.name} logs that it cannot apply the shared configuration",
            )
        assert "no-such-profile" in cluster.cluster.apis[0].log()[logged[cluster.cluster.apis[0].pid] :]
        run_id = a.start("brief")  # still the default profile it had
        assert a.wait(run_id)["status"] == "completed"
        with a.http() as http:
            change = http.post(
                "/api/v1/config/profiles", json={"name": "on-top", "chain": [{"provider": "s"}]}
            )
        assert change.status_code == 422 and change.json()["code"] == "config_invalid", change.text
        assert "no-such-profile" in change.json()["detail"]
    finally:
        share(json.loads(document), int(revision) + 2)
    with a.http() as http:
        fixed = http.post("/api/v1/config/profiles", json={"name": "on-top", "chain": [{"provider": "s"}]})
    assert fixed.status_code == 201, fixed.text
    wait_until(lambda: "on-top" in profiles_of(cluster.api(1)), "node B applies the fixed document")
