"""The emulated network of a run: links, device classes, shared cells, the clock.

On the command line::

    --link wifi                       every client on the built-in Wi-Fi profile (one shared cell)
    --link 10mbit/40ms/1%             a dedicated 10 Mbit/s link per client, 40 ms, 1 % loss
    --link lte,trace=lte.csv,stride=30 --link-mode realtime
    --devices devices.yaml            device classes (fractions of the clients)

A device class file (or the same list under ``devices:`` in ``--config run.yaml``)::

    devices:
      - {name: phone,  fraction: 0.75, cpu: 0.4, link: wifi}
      - {name: sensor, fraction: 0.25, cpu: 0.2, link: "nbiot,loss=2%"}

Clients get classes in the order listed, in contiguous blocks of ids, by largest
remainder (8 clients at 0.75 / 0.25: 0-5 phones, 6-7 sensors).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysplit.config.cli import option
from raysplit.link.compute import SIM_COMPUTE
from raysplit.link.spec import CellSpec, LinkSpec, parse_cell, parse_link
from raysplit.runtime.cpu_cap import check_cap

LINK_MODES = ("virtual", "realtime")


@dataclass(frozen=True)
class DeviceClass:
    """One kind of emulated device.

    Args:
        name: its name (records, messages).
        fraction: the share of the clients that are of this class, in (0, 1].
        cpu: its CPU cap, a fraction of one core (None: the run's --client-cpu).
        link: its link (see ``raysplit.link.spec``: a profile, RATE/DELAY/LOSS, key=value settings).
    """

    name: str
    fraction: float
    cpu: float | None = None
    link: str = "none"

    def __post_init__(self) -> None:
        if not self.name or not str(self.name).replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"device class name {self.name!r} must be letters, digits, '-' or '_'")
        if not (isinstance(self.fraction, (int, float)) and 0 < self.fraction <= 1):
            raise ValueError(f"device class {self.name}: fraction {self.fraction!r} must be in (0, 1]")
        if self.cpu is not None:
            check_cap(self.cpu)
        if self.link != "none":
            parse_link(self.link)  # a bad link names itself


def _device(item: Any, where: str, index: int) -> DeviceClass:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: a device class is a mapping with name, fraction, cpu, link; got {item!r}")
    unknown = set(item) - {"name", "fraction", "cpu", "link"}
    if unknown:
        raise ValueError(f"{where}: unknown device class key(s) {', '.join(map(str, sorted(unknown)))}; "
                         "allowed: name, fraction, cpu, link")
    try:
        frac = float(item["fraction"])
        cpu = None if item.get("cpu") in (None, "none") else float(item["cpu"])
    except KeyError:
        raise ValueError(f"{where}: device class {item!r} needs a fraction") from None
    except (TypeError, ValueError):
        raise ValueError(f"{where}: device class {item!r}: fraction and cpu must be numbers") from None
    link = item.get("link", "none")
    return DeviceClass(str(item.get("name", f"class{index}")), frac, cpu,
                       link if isinstance(link, str) else _link_text(link))


def _link_text(link: Any) -> str:
    """A YAML mapping link written back as a link string (configs stay plain text)."""
    if not isinstance(link, dict):
        raise ValueError(f"link {link!r}: expected a string or a mapping")
    items = dict(link)
    base = items.pop("profile", None) or items.pop("base", None) or items.pop("rate", None)
    if base is None:
        raise ValueError(f"link {link!r}: give a profile (or base, or rate)")
    text = ",".join([str(base), *(f"{k}={v}" for k, v in items.items())])
    parse_link(text)
    return text


def parse_devices(value: Any) -> tuple[DeviceClass, ...]:
    """Device classes from a YAML list (``--config``), a YAML file's path, or inline
    ``NAME:FRACTION:CPU:LINK;...`` (CPU may be ``none``)."""
    if isinstance(value, (list, tuple)):
        classes = tuple(v if isinstance(v, DeviceClass) else _device(v, f"device class {i}", i)
                        for i, v in enumerate(value))
    elif isinstance(value, str) and value.strip().lower() in ("", "none"):
        return ()
    elif isinstance(value, str) and (value.endswith((".yaml", ".yml")) or Path(value).is_file()):
        import yaml

        p = Path(value)
        if not p.is_file():
            raise ValueError(f"device class file {value!r} not found")
        data = yaml.safe_load(p.read_text())
        if isinstance(data, dict):
            data = data.get("devices")
        if not isinstance(data, list):
            raise ValueError(f"{value}: expected a list of device classes (or one under 'devices:')")
        classes = tuple(_device(v, f"{value}: device class {i}", i) for i, v in enumerate(data))
    elif isinstance(value, str):
        classes = []
        for i, part in enumerate(p for p in value.split(";") if p.strip()):
            bits = part.split(":", 3)
            if len(bits) != 4:
                raise ValueError(f"device class {part!r}: write NAME:FRACTION:CPU:LINK (e.g. phone:0.5:0.4:wifi), "
                                 "classes separated by ';', or give a YAML file")
            name, frac, cpu, link = (b.strip() for b in bits)
            try:
                classes.append(DeviceClass(name, float(frac), None if cpu.lower() == "none" else float(cpu), link))
            except ValueError as e:
                if "could not convert" in str(e):
                    raise ValueError(f"device class {part!r}: FRACTION and CPU must be numbers") from None
                raise
        classes = tuple(classes)
    else:
        raise ValueError(f"devices {value!r}: expected a YAML list, a YAML file or NAME:FRACTION:CPU:LINK;...")
    if classes:
        total = sum(c.fraction for c in classes)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"device class fractions must add up to 1, got {total:g} "
                             f"({', '.join(f'{c.name} {c.fraction:g}' for c in classes)})")
        names = [c.name for c in classes]
        if len(set(names)) != len(names):
            raise ValueError(f"device class names must be distinct, got {names}")
    return classes


def assign_devices(classes: tuple[DeviceClass, ...], clients: int) -> list[DeviceClass]:
    """Each client's class: contiguous blocks in the order listed, sizes by largest remainder."""
    quotas = [c.fraction * clients for c in classes]
    counts = [math.floor(q) for q in quotas]
    for i in sorted(range(len(classes)), key=lambda i: (-(quotas[i] - counts[i]), i))[: clients - sum(counts)]:
        counts[i] += 1
    return [c for c, n in zip(classes, counts) for _ in range(n)]


def _link_spec(text: str) -> str:
    if text != "none":
        parse_link(text)
    return text


def _cell_spec(text: str) -> str:
    if text not in ("auto", "none"):
        parse_cell(text)
    return text


def _backhaul_spec(text: str) -> str:
    parse_link(text)
    return text


@dataclass(frozen=True)
class LinkConfig:
    """How the network between the clients and the shards is emulated (nothing by default).

    Args:
        link: every client's link: a profile (ethernet, wifi, lte, 3g, nbiot), RATE/DELAY/LOSS (e.g.
            10mbit/40ms/1%), optionally with ,key=value settings (see raysplit.link.spec); none = no
            emulation.
        devices: device classes, each a fraction of the clients with its CPU cap and link: a YAML file,
            a YAML list in --config, or NAME:FRACTION:CPU:LINK;... (they replace --link and --client-cpu).
        link_mode: virtual (a simulated clock per client; nothing sleeps; deterministic for a seed with
            --sim-compute model) or realtime (transfers really wait: wall clock, dashboard and
            Prometheus see the link).
        cell: the shared medium: auto (each wireless profile's own cell, shared by the clients on it;
            dedicated links otherwise), none (every link dedicated), or one cell all clients share: a cell
            profile, a rate (half duplex, e.g. 40mbit) or up=RATE,down=RATE (full duplex).
        backhaul: each shard's own wired link, RATE/DELAY.
        sim_compute: virtual mode's compute times: model (FLOPs / speed: deterministic), scaled
            (measured without a real cap, divided by the cap) or measured (under the real cap).
        device_gflops: speed of one full core of an emulated device, GFLOP/s (sim_compute model; 50 is
            this machine's core on vgg_small).
        server_gflops: speed of a shard, GFLOP/s (sim_compute model).
        link_seed: seed of loss, jitter and fading draws (default: the run's seed).
        target_accuracy: test accuracy (0-1) whose first reaching is reported as time_to_accuracy (on the
            simulated clock with a link, else the wall clock since the start); none = not reported.
    """

    link: str = field(default="none", metadata=option(parse=_link_spec, metavar="LINK"))
    devices: tuple[DeviceClass, ...] = field(default=(), metadata=option(parse=parse_devices, metavar="DEVICES"))
    link_mode: str = field(default="virtual", metadata=option(choices=LINK_MODES))
    cell: str = field(default="auto", metadata=option(parse=_cell_spec, metavar="CELL"))
    backhaul: str = field(default="10gbit/0.5ms", metadata=option(parse=_backhaul_spec, metavar="LINK"))
    sim_compute: str = field(default="model", metadata=option(choices=SIM_COMPUTE))
    device_gflops: float = 50.0
    server_gflops: float = 100.0
    link_seed: int | None = field(default=None, metadata=option(none_word="default"))
    target_accuracy: float | None = None

    def __post_init__(self) -> None:
        _link_spec(self.link)
        _cell_spec(self.cell)
        _backhaul_spec(self.backhaul)
        object.__setattr__(self, "devices", parse_devices(list(self.devices)) if self.devices else ())
        if self.link_mode not in LINK_MODES:
            raise ValueError(f"unknown link_mode {self.link_mode!r}; choose one of {', '.join(LINK_MODES)}")
        if self.sim_compute not in SIM_COMPUTE:
            raise ValueError(f"unknown sim_compute {self.sim_compute!r}; choose one of {', '.join(SIM_COMPUTE)}")
        for name in ("device_gflops", "server_gflops"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ValueError(f"target_accuracy {self.target_accuracy} must be in (0, 1] (e.g. 0.8 for 80 %)")
        if self.link_seed is not None and self.link_seed < 0:
            raise ValueError(f"link_seed must be >= 0, got {self.link_seed}")

    @property
    def enabled(self) -> bool:
        return self.link != "none" or any(d.link != "none" for d in self.devices)

    def replace(self, **changes) -> "LinkConfig":
        return dataclasses.replace(self, **changes)

    # -- per client -------------------------------------------------------------
    def classes(self, clients: int) -> list[DeviceClass | None]:
        return list(assign_devices(self.devices, clients)) if self.devices else [None] * clients

    def client_cpus(self, clients: int, default: float | None) -> list[float | None]:
        """Each client's CPU cap: its class's, else ``default`` (the run's --client-cpu)."""
        return [default if d is None or d.cpu is None else d.cpu for d in self.classes(clients)]

    def client_links(self, clients: int) -> dict[int, LinkSpec]:
        """Each client's link, attached to the cell this configuration says."""
        out = {}
        override = None if self.cell in ("auto", "none") else parse_cell(self.cell)
        for c, d in enumerate(self.classes(clients)):
            text = d.link if d is not None and d.link != "none" else self.link
            if text == "none":
                raise ValueError(f"client {c} has no link: give --link, or a link for its device class "
                                 f"{d.name if d else ''}".rstrip())
            spec = parse_link(text)
            if self.cell == "none":
                spec = spec.replace(cell=None)
            elif override is not None:
                spec = spec.replace(cell=override.name)
            out[c] = spec
        return out

    def cells(self) -> dict[str, CellSpec]:
        from raysplit.link.profiles import CELLS

        if self.cell == "none":
            return {}
        if self.cell == "auto":
            return dict(CELLS)
        cell = parse_cell(self.cell)
        return {cell.name: cell}

    def backhaul_spec(self) -> LinkSpec:
        return parse_link(self.backhaul).replace(name="backhaul", cell=None)

    def build_medium(self, shard_of: dict[int, int], seed: int):
        """The run's :class:`~raysplit.link.medium.Medium` for clients ``shard_of``."""
        from raysplit.link.medium import Medium

        links = self.client_links(max(shard_of) + 1)
        return Medium({c: links[c] for c in shard_of}, shard_of, self.cells(), backhaul=self.backhaul_spec(),
                      seed=self.link_seed if self.link_seed is not None else seed,
                      shard_work=self.link_mode == "virtual")

    def compute_model(self, split, cpu: float | None):
        """The virtual clock's :class:`~raysplit.link.compute.ComputeModel` for a device of
        ``cpu`` cores on network ``split`` (with its input shape known)."""
        from raysplit.link.compute import ComputeModel, split_flops

        flops = split_flops(split) if self.sim_compute == "model" else None
        return ComputeModel(self.sim_compute, cpu, flops, self.device_gflops, self.server_gflops)

    def summary_fields(self, writer, clients: int) -> dict:
        """The Summary's link fields from a finished run's writer."""
        return {"sim_seconds": writer.sim_seconds, "target_accuracy": self.target_accuracy,
                "time_to_accuracy": writer.time_to_accuracy(self.target_accuracy),
                "link_mode": self.link_mode if self.enabled else None,
                "links": self.describe(clients) if self.enabled else None}

    def describe(self, clients: int) -> list[str]:
        """One line per distinct link (for the summary and messages)."""
        links = self.client_links(clients)
        seen: dict[str, list[int]] = {}
        for c, s in links.items():
            seen.setdefault(s.describe(), []).append(c)
        return [f"clients {_ranges(cs)}: {d}" for d, cs in seen.items()]


def _ranges(ids: list[int]) -> str:
    out, start = [], ids[0]
    for a, b in zip(ids, ids[1:] + [None]):
        if b != a + 1:
            out.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ",".join(out)
