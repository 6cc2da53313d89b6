"""Split inference serving: what is served from a run directory, the server's half answering
batches (bad requests fail alone), budgets chosen from a link and a deadline, and the Ray
Serve deployment end to end (slow)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from raysplit import codec, local, nair
from raysplit.config import SplitConfig
from raysplit.config.nair import NairConfig
from raysplit.data import load_dataset
from raysplit.inference import load_model
from raysplit.link.medium import ClientLink
from raysplit.link.spec import parse_link
from raysplit.serving.deadline import prefix_arrivals
from raysplit.serving.client import EdgeClient
from raysplit.serving.model import load_served, recut
from raysplit.serving.tail import TailService

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--dataset", "digits", "--image-size", "16", "--batch-size", "32", "--max-batches", "4",
          "--test-subset", "64", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("serving")
    local.main(COMMON + ["--method", "prune", "--budgets", "128,4", "--epochs-per-budget", "1",
                         "--out", str(base / "prune")])
    local.main(COMMON + ["--method", "none", "--epochs-per-budget", "1", "--save-model", "--out", str(base / "none")])
    local.main(COMMON + ["--method", "deprune", "--budgets", "4,128", "--epochs-per-budget", "1,1", "--save-model",
                         "--out", str(base / "deprune")])
    nair.run(NairConfig(dataset="digits", image_size=16, train_subset=128, test_subset=32, original_epochs=1,
                        epochs=1, batch_size=32, slices=4, variants=("original", "nair"), deadlines=(0.05, 0.2),
                        progress=False, out=str(base / "nair")), SplitConfig(torch_threads=1, use_module=False))
    return base


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "test", image_size=16, seed=0, limit=64)


def test_what_a_run_directory_serves(runs):
    p = load_served(runs / "prune")
    assert p.kind == "channels" and p.budgets() == (4, 128) and p.per_budget
    n = load_served(runs / "nair")
    assert n.kind == "slices" and n.budgets() == (1, 2, 3, 4) and n.model.slices.n_slices == 4
    assert load_served(runs / "nair", variant="original").model.slices.order == tuple(range(128))
    d = load_served(runs / "deprune")  # one model, trained to serve any B
    assert d.kind == "channels" and not d.per_budget and d.budgets() == tuple(range(1, 129))
    svc, x = TailService(d), load_dataset("digits", "test", image_size=16, seed=0, limit=8).x
    edge = EdgeClient(d, "10mbit")
    (a128, a4) = svc.predict([edge.message(x, 128), edge.message(x, 4)])
    np.testing.assert_array_equal(a128.predictions, d.model.predict(x))  # the file's budget: 128
    assert a4.budget == 4 and a4.received == 4 and a4.predictions.shape == (8,)
    c = load_served(runs / "none")
    assert c.kind == "cut" and c.budgets()[:2] == (0, 1)
    with pytest.raises(ValueError, match=r"budget 7 \(channels\) not served .*; allowed: 4, 128"):
        p.check_budget(7)
    with pytest.raises(ValueError, match="no model 'clio'"):
        load_served(runs / "nair", variant="clio")
    with pytest.raises(FileNotFoundError, match="no model file or run directory"):
        load_served(runs / "missing")


def test_served_answers_match_in_process_inference_and_bad_requests_fail_alone(runs, digits):
    svc = TailService(runs / "prune")
    x = digits.x[:8]
    m4 = load_model(runs / "prune" / "models" / "budget_4.pt")
    m128 = load_model(runs / "prune" / "models" / "budget_128.pt")
    edge = EdgeClient(svc.served, "10mbit", 3)
    good4, good128 = edge.message(x, 4), edge.message(x, 128)
    foreign = codec.encode(np.ones((1, 4, 4, 4), np.float32), np.arange(4), (1, 128, 4, 4), "float32",
                           tenant=99, cut=4)
    answers = svc.predict([good4, b"garbage", good128, foreign, good4[:-1]])
    np.testing.assert_array_equal(answers[0].predictions, m4.predict(x))
    np.testing.assert_array_equal(answers[2].predictions, m128.predict(x))
    assert answers[0].budget == 4 and answers[2].budget == 128 and answers[0].received == 4
    assert answers[1].predictions is None and "bad magic" in answers[1].error
    assert answers[3].predictions is None and "tenant key 99" in answers[3].error
    assert answers[4].predictions is None and "truncated" in answers[4].error
    assert svc.requests == 5 and svc.failed == 3


def test_nair_slices_cut_by_the_link_and_zero_padded(runs, digits):
    served = load_served(runs / "nair")
    svc = TailService(served)
    model = served.model
    x = digits.x[:6]
    full = EdgeClient(served, "10mbit").message(x, 4)
    for k in (1, 2, 4):
        (a,) = svc.predict([full[: codec.slice_ends(full)[k]]])
        np.testing.assert_array_equal(a.predictions, model.predict(x, slices=k))
        assert a.budget == k and a.complete == (k == 4) and a.received == sum(model.slices.counts[:k])
    table = json.loads((runs / "nair" / "deadlines.json").read_text())
    assert {r["method"] for r in table} == {"original", "nair"} and len(table) == 2 * 3
    assert "| nair |" in (runs / "nair" / "table.md").read_text()


def test_budget_from_the_link_and_the_deadline(runs, digits):
    x = digits.x[:1]
    prune = load_served(runs / "prune")
    size4 = EdgeClient(prune, "250kbit").message_size(4)
    t4 = (size4 + 40) * 8 / 250e3  # one packet
    tight = EdgeClient(prune, "250kbit", deadline=t4 * 1.01)
    loose = EdgeClient(prune, "250kbit", deadline=10.0)
    assert tight.choose_budget(0.0) == 4 and loose.choose_budget(0.0) == 128
    r = tight.request(x)
    assert r.budget == 4 and r.on_time and r.sent_bytes == size4 == len(r.message)
    assert r.uplink_s == pytest.approx(t4)
    nair = load_served(runs / "nair")
    ends = codec.slice_ends(EdgeClient(nair, "250kbit").message(x, 4))
    arr = prefix_arrivals(ClientLink(0, parse_link("250kbit"), 0), 0.0, ends)
    req = EdgeClient(nair, "250kbit", deadline=float(arr[2]) + 1e-6).request(x)  # two slices fit
    assert req.budget == 2 and req.sent_bytes == ends[2] and req.usable and req.on_time
    assert codec.decode(req.message).slices_received == 2
    late = EdgeClient(nair, "250kbit", deadline=float(arr[1]) * 0.5).request(x)  # not even one
    assert not late.usable and late.budget == 0 and late.message == b""
    with pytest.raises(ValueError, match="not both"):
        EdgeClient(prune, "lte", deadline=0.1, budget=4)


def test_cut_budgets_compute_the_same_function(runs, digits):
    served = load_served(runs / "none")
    svc = TailService(served)
    x = digits.x[:5]
    want = served.model.predict(x)
    edge = EdgeClient(served, "lte")
    for cut in (0, 2, 4, 6):
        (a,) = svc.predict([edge.message(x, cut)])
        np.testing.assert_array_equal(a.predictions, want)
        assert a.budget == cut
    with pytest.raises(ValueError, match="one cut"):
        recut(load_model(runs / "prune" / "models" / "budget_4.pt"), 2)
    assert EdgeClient(served, "250kbit", deadline=10.0).choose_budget(0.0) == 0  # the raw input fits: send it
    tight = EdgeClient(served, "250kbit", deadline=0.0001)
    assert tight.choose_budget(0.0) == min(served.budgets(), key=tight.message_size)


# ----------------------------------------------------------------------------- Ray Serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.mark.slow
def test_serve_a_request_end_to_end_batched_replicas_and_http(runs, digits, ray_local):
    from raysplit.config.serve import ServeConfig
    from raysplit.serving.app import start
    from raysplit.serving.coalesce import Coalescer

    port = _free_port()
    cfg = ServeConfig(model=str(runs / "nair"), name="t-nair", replicas=2, cpus_per_replica=0.5,
                      max_batch_size=8, batch_wait_s=0.05, http_port=port)
    tail = start(cfg)
    try:
        served = load_served(runs / "nair")
        edge = EdgeClient(served, "10mbit")
        msgs = [edge.message(digits.x[i : i + 1], 4) for i in range(16)]
        msgs[3] = msgs[3][: codec.slice_ends(msgs[3])[1]]  # one cut short by its link
        results = [None] * len(msgs)

        def one(i):
            results[i] = tail.infer(msgs[i])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(msgs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        local_ans = TailService(served).predict(msgs)
        for r, a in zip(results, local_ans):
            assert r["error"] is None and r["predictions"] == a.predictions.tolist()
        assert results[3]["budget"] == 1 and not results[3]["complete"]
        stats = tail.stats()
        assert len(stats) == 2 and sum(s["requests"] for s in stats) == 16
        assert max(b for s in stats for b in s["batches"]) > 1  # requests were batched
        # coalesced: the same 16 requests as 2 calls of 8, each request its own answer
        gw = Coalescer(tail, max_batch=8, wait_s=0.05)

        async def coalesced():
            return await asyncio.gather(*(gw.infer_async(m) for m in msgs))

        assert asyncio.run(coalesced()) == results and gw.calls == 2
        assert sum(s["requests"] for s in tail.stats()) == 32
        # any process can be a client: the message as the body of an HTTP POST
        req = urllib.request.Request(f"http://127.0.0.1:{port}/t-nair", data=msgs[0], method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert json.loads(resp.read())["predictions"] == results[0]["predictions"]
    finally:
        tail.shutdown()


@pytest.mark.slow
def test_overload_is_answered_with_a_clear_error(runs, digits, ray_local):
    from raysplit.config.serve import ServeConfig
    from raysplit.serving.app import Overloaded, start

    cfg = ServeConfig(model=str(runs / "prune"), name="t-over", replicas=1, cpus_per_replica=0.5,
                      max_batch_size=1, batch_wait_s=0.5, max_ongoing=1, max_queued=1)
    tail = start(cfg)
    try:
        msg = EdgeClient(load_served(runs / "prune"), "10mbit").message(digits.x[:1], 4)
        errors, ok = [], []

        def one():
            try:
                ok.append(tail.infer(msg))
            except Overloaded as e:
                errors.append(str(e))

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors and ok and len(errors) + len(ok) == 8
        assert "overloaded: more than 1 requests are queued for its 1 replica(s)" in errors[0]
        assert all(r["error"] is None for r in ok)
    finally:
        tail.shutdown()


@pytest.mark.slow
def test_serve_job_with_emulated_clients(runs, tmp_path):
    out = tmp_path / "serve"
    r = subprocess.run([sys.executable, "jobs/serve.py", "--model", str(runs / "nair"), "--replicas", "2",
                        "--cpus-per-replica", "0.5", "--clients", "2", "--requests", "4", "--links",
                        "250kbit;10mbit/5ms", "--deadline", "170ms", "--dataset", "digits", "--interval", "0",
                        "--no-realtime", "--name", "t-job", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["requests"] == 8 and s["answered"] == 8 and s["in_process_agreement"] == 1.0
    assert set(s["by_link"]) == {"250kbit", "10mbit/5ms"}
    assert s["by_link"]["250kbit"]["mean_budget"] == 2 and s["by_link"]["10mbit/5ms"]["mean_budget"] == 4
    assert s["by_link"]["250kbit"]["bytes_per_request"] < s["by_link"]["10mbit/5ms"]["bytes_per_request"]
    assert len(s["replica_stats"]) == 2 and 0 <= s["accuracy"] <= 1
