"""The medium actor under many clients: every client waits inside one ``step`` call
until the virtual clock settles it, so the actor must take them all at once."""

from __future__ import annotations

import pytest

N = 1100  # more than Ray's default async-actor concurrency (1000)


@pytest.fixture(scope="module")
def ray_one_cpu():
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def medium(n: int):
    from raysplit.link.medium import Medium
    from raysplit.link.spec import LinkSpec

    # identical jobs on dedicated links: every event settles all of them at once (fast)
    spec = LinkSpec(up_bps=10e6, down_bps=10e6, delay_s=0.001)
    return Medium(dict.fromkeys(range(n), spec), dict.fromkeys(range(n), 0), shard_work=False)


def steps(ray, actor, n: int, timeout: float):
    refs = [actor.step.remote(c, 0.0, 10_000, 0.001, 1_000, 0.001) for c in range(n)]
    done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    return len(done), refs


@pytest.mark.slow
def test_the_medium_actor_settles_a_step_of_more_clients_than_rays_default_concurrency(ray_one_cpu):
    from raysplit.identity import Identity
    from raysplit.runtime.actors.medium import MediumActor
    from raysplit.runtime.driver import waiting_calls

    ray = ray_one_cpu
    actor = MediumActor.options(max_concurrency=waiting_calls(N)).remote(medium(N), "virtual", Identity("r", "t"))
    n, refs = steps(ray, actor, N, timeout=120)
    assert n == N  # every client's step settled
    ends = {round(t.end, 12) for t in ray.get(refs)}
    assert len(ends) == 1 and ends.pop() > 0  # identical jobs end together
    # with Ray's default the 1,001st call never runs and the 1,000 running wait for it
    stuck = MediumActor.remote(medium(N), "virtual", Identity("r", "t"))
    n, _ = steps(ray, stuck, N, timeout=10)
    assert n == 0
    ray.kill(stuck)
