"""Serving a split model (``jobs/serve.py``): the tail deployment, and the emulated clients
that load it."""

from __future__ import annotations

from dataclasses import dataclass, field

from raysplit.config.cli import option
from raysplit.data import DATASETS


@dataclass(frozen=True)
class ServeConfig:
    """How the tail is served.

    Args:
        model: model file or run directory to serve (``serving.model.load_served``).
        variant: which model of a run directory (e.g. nair, clio; default: see load_served).
        name: the Serve application's name (and HTTP route).
        replicas: tail replicas (each a Ray actor with its own copy of the tail).
        cpus_per_replica: CPUs Ray reserves for each replica (its torch threads, rounded up).
        gpus_per_replica: GPUs per replica (0: CPU).
        max_batch_size: most requests one replica runs as one batch.
        batch_wait_s: how long a replica waits for a batch to fill.
        max_ongoing: requests one replica holds at once (batched or waiting for its batch).
        max_queued: requests waiting at the handle for a replica before new ones are refused
            with Overloaded (-1: no limit).
        http_port: serve HTTP on this port (None: no HTTP proxy, handles only).
        key_hex: HMAC key (hex) every request must be tagged with (None: not required).
        access_log: replicas log one line per request (Ray Serve's access log; off by default:
            a log line per request is work the tail does not need at hundreds of requests/s).
    """

    model: str = "runs/nair"
    variant: str | None = None
    name: str = "raysplit-tail"
    replicas: int = 2
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    max_batch_size: int = 32
    batch_wait_s: float = 0.005
    max_ongoing: int = 64
    max_queued: int = 256
    http_port: int | None = None
    key_hex: str | None = None
    access_log: bool = False

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if not self.cpus_per_replica > 0 or self.gpus_per_replica < 0:
            raise ValueError(f"need cpus_per_replica > 0 and gpus_per_replica >= 0, got {self.cpus_per_replica}, "
                             f"{self.gpus_per_replica}")
        if self.max_batch_size < 1 or self.max_ongoing < 1:
            raise ValueError(f"max_batch_size and max_ongoing must be >= 1, got {self.max_batch_size}, "
                             f"{self.max_ongoing}")
        if self.max_queued < -1 or self.max_queued == 0:
            raise ValueError(f"max_queued must be >= 1, or -1 for no limit, got {self.max_queued}")
        if not self.batch_wait_s >= 0:
            raise ValueError(f"batch_wait_s must be >= 0, got {self.batch_wait_s}")
        if self.http_port is not None and not 1 <= self.http_port <= 65535:
            raise ValueError(f"http_port must be in 1..65535, got {self.http_port}")
        if self.key_hex is not None:
            bytes.fromhex(self.key_hex)  # raises naming the bad text


def _links(text) -> tuple[str, ...]:
    from raysplit.link.spec import parse_link

    items = [s.strip() for s in (text.split(";") if isinstance(text, str) else text) if str(s).strip()]
    if not items:
        raise ValueError("links: give at least one link, e.g. 250kbit;lte;wifi (separated by ';')")
    for s in items:
        parse_link(s)
    return tuple(items)


def _time_or_none(text):
    from raysplit.link.units import parse_time

    if text is None or str(text).strip().lower() == "none":
        return None
    return parse_time(text, "deadline", allow_zero=False)


@dataclass(frozen=True)
class ClientsConfig:
    """Emulated edge clients that send requests to the served tail.

    Args:
        clients: emulated clients (Ray actors, each with the model's head and its own link); 0: only
            serve, until interrupted.
        requests: requests per client.
        links: each client's uplink, ';'-separated and assigned in turn (``raysplit.link``: a
            profile such as lte or wifi, RATE[/DELAY[/LOSS]], settings such as trace=FILE).
        deadline: the uplink deadline each request's budget is chosen for (none: a fixed budget).
        budget: the fixed budget (slices, channels or cut layer; default: the largest).
        interval: seconds between a client's requests on its link's clock.
        realtime: clients wait out their link's emulated time before a request reaches the server.
        dataset: where the clients' inputs come from (the test split).
        data_dir: data set folder (default: $RAYSPLIT_DATA, then the system folder).
        image_size: square image side in px (default: the one the model was trained with).
        link_seed: seed of the links' random draws.
        out: directory for the requests' records and the summary.
    """

    clients: int = 4
    requests: int = 50
    links: tuple[str, ...] = field(default=("250kbit", "lte", "wifi"), metadata=option(parse=_links))
    deadline: float | None = field(default=None, metadata=option(parse=_time_or_none))
    budget: int | None = field(default=None, metadata=option(none_word="largest"))
    interval: float = 0.05
    realtime: bool = True
    dataset: str = field(default="fashion-mnist", metadata=option(choices=lambda: tuple(DATASETS)))
    data_dir: str | None = field(default=None, metadata=option(none_word="default"))
    image_size: int | None = field(default=None, metadata=option(none_word="model"))
    link_seed: int = 0
    out: str = "runs/serve"

    def __post_init__(self) -> None:
        if self.clients < 0 or self.requests < 1:
            raise ValueError(f"need clients >= 0 and requests >= 1, got {self.clients}, {self.requests}")
        object.__setattr__(self, "links", _links(self.links))
        if self.deadline is not None:
            object.__setattr__(self, "deadline", _time_or_none(self.deadline))
        if self.deadline is not None and self.budget is not None:
            raise ValueError("give a deadline (budgets chosen per request) or a fixed budget, not both")
        if not self.interval >= 0:
            raise ValueError(f"interval must be >= 0 s, got {self.interval}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown data set {self.dataset!r}; choose one of {', '.join(DATASETS)}")
