"""Link configuration as users write it: --link, --devices (YAML file, inline, --config list),
the cell override, and bad values that name themselves and what is allowed."""

from __future__ import annotations

import pytest
import yaml

from raysplit.config.job import job_config, job_parser
from raysplit.config.link import DeviceClass, LinkConfig, assign_devices, parse_devices


def classes_of(config: LinkConfig, clients: int) -> list[str]:
    return [d.name for d in config.classes(clients)]


def test_device_classes_from_a_yaml_file_in_contiguous_blocks(tmp_path):
    f = tmp_path / "devices.yaml"
    f.write_text(yaml.safe_dump({"devices": [{"name": "phone", "fraction": 0.75, "cpu": 0.4, "link": "wifi"},
                                             {"name": "sensor", "fraction": 0.25, "cpu": 0.2,
                                              "link": "nbiot,loss=2%"}]}))
    cfg = LinkConfig(devices=parse_devices(str(f)))
    assert classes_of(cfg, 8) == ["phone"] * 6 + ["sensor"] * 2
    assert cfg.client_cpus(8, default=None) == [0.4] * 6 + [0.2] * 2
    links = cfg.client_links(8)
    assert links[0].cell == "wifi" and links[7].loss == pytest.approx(0.02)
    assert links[7].up_bps == pytest.approx(62e3)  # the nbiot profile's uplink
    assert cfg.enabled


def test_inline_classes_largest_remainder_and_default_cpu():
    classes = parse_devices("fast:0.5:none:ethernet;slow:0.5:0.4:3g")
    assert [c.name for c in assign_devices(classes, 3)] == ["fast", "fast", "slow"]
    cfg = LinkConfig(devices=classes)
    assert cfg.client_cpus(3, default=0.8) == [0.8, 0.8, 0.4]  # a class without a cap keeps --client-cpu
    # a YAML mapping link is written back as a link string
    (c,) = parse_devices([{"name": "x", "fraction": 1, "link": {"profile": "lte", "loss": "1%"}}])
    assert c.link == "lte,loss=1%"


def test_cell_override_and_dedicated_links():
    shared = LinkConfig(link="10mbit/20ms", cell="40mbit").client_links(3)
    assert len({s.cell for s in shared.values()}) == 1 and None not in {s.cell for s in shared.values()}
    dedicated = LinkConfig(link="wifi", cell="none").client_links(2)
    assert all(s.cell is None for s in dedicated.values())
    assert LinkConfig().enabled is False


@pytest.mark.parametrize("value, message", [
    ("phone:0.5:0.4:wifi", "device class fractions must add up to 1, got 0.5"),
    ("phone:0.5:0.4:wifi;phone:0.5:0.4:lte", "device class names must be distinct"),
    ("phone:half:0.4:wifi", "FRACTION and CPU must be numbers"),
    ("phone:0.5", "write NAME:FRACTION:CPU:LINK"),
    ("phone:1:0.4:wfi", "wfi"),
    ("phone:1.5:0.4:wifi", "fraction 1.5 must be in (0, 1]"),
    ("missing.yaml", "device class file 'missing.yaml' not found"),
    ([{"name": "a", "fraction": 1, "speed": 3}], "unknown device class key(s) speed; allowed: name, fraction, cpu, link"),
    ([{"name": "a", "cpu": 0.4}], "needs a fraction"),
])
def test_bad_device_classes_name_the_value(value, message):
    with pytest.raises(ValueError) as e:
        parse_devices(value)
    assert message in str(e.value)


def test_bad_device_class_cpu_is_refused():
    with pytest.raises(ValueError, match="cpu"):
        DeviceClass("a", 1.0, cpu=0.0)


def fails(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        job_config(job_parser("jobs/deprune.py", "test"), argv)
    assert e.value.code == 2
    return " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("argv, message", [
    (["--link", "wfi"], "wfi"),
    (["--link", "10mbit/40ms/150%"], "150%"),
    (["--link-mode", "sometimes"], "sometimes"),
    (["--cell", "fastest"], "fastest"),
    (["--devices", "a:0.3:0.4:wifi"], "add up to 1"),
    (["--target-accuracy", "80"], "target_accuracy 80"),
    (["--policy", "adaptive", "--target-step-s", "0.5"], "give --link (or --devices)"),
])
def test_bad_command_line_values_exit_2_naming_them(argv, message, capsys):
    assert message in fails(argv, capsys)


def test_command_line_and_config_file_give_the_same_link(tmp_path):
    cli = job_config(job_parser("jobs/deprune.py", "test"),
                     ["--link", "10mbit/40ms/1%", "--link-mode", "realtime", "--target-accuracy", "0.8"])
    f = tmp_path / "run.yaml"
    f.write_text(yaml.safe_dump({"link": "10mbit/40ms/1%", "link-mode": "realtime", "target-accuracy": 0.8,
                                 "devices": [{"name": "phone", "fraction": 1.0, "cpu": 0.4, "link": "wifi"}]}))
    cfg = job_config(job_parser("jobs/deprune.py", "test"), ["--config", str(f)])
    assert cli.train.link.link == cfg.train.link.link == "10mbit/40ms/1%"
    assert cli.train.link.link_mode == cfg.train.link.link_mode == "realtime"
    assert cli.train.link.target_accuracy == 0.8
    assert cfg.train.link.devices == (DeviceClass("phone", 1.0, 0.4, "wifi"),)
    spec = cli.train.link.client_links(1)[0]
    assert spec.up_bps == pytest.approx(10e6) and spec.loss == pytest.approx(0.01)


def test_layout_hosts_clients_of_one_cap_together_and_sizes_each_host_by_its_cap():
    from raysplit.config import ClusterConfig, TrainConfig
    from raysplit.runtime.nodes import Inventory, host_groups, layout_for

    assert host_groups(6, 1, 4, by_shard=False, caps=[0.4, 0.4, 0.4, 0.2, 0.2, 0.4]) == [(0, 1, 2), (3, 4), (5,)]
    link = LinkConfig(devices=parse_devices("phone:0.5:0.4:wifi;sensor:0.5:0.2:3g"))
    cc = ClusterConfig(train=TrainConfig(link=link), clients=4, clients_per_actor=4)
    lay = layout_for(cc, Inventory(cpus=16))
    assert lay.hosts == ((0, 1), (2, 3))
    assert [r["CPU"] for r in lay.host_resources] == [pytest.approx(0.8), pytest.approx(0.4)]
    # a tenant plans with its share of the CPUs
    half = layout_for(cc.replace(cpu_share=0.5, train=TrainConfig()), Inventory(cpus=2))
    whole = layout_for(cc.replace(train=TrainConfig()), Inventory(cpus=2))
    assert half.client_num_cpus < whole.client_num_cpus
