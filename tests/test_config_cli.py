"""raysplit.config.cli: command line and YAML --config generated from config dataclasses.

Fast and self-contained: small dataclasses defined here, no Ray, no torch.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest


def _load_cli():
    """The module under test. Loaded by path unless already imported: importing it through the package
    runs raysplit/config/__init__.py, which imports every project config (and with them torch)."""
    if "raysplit.config.cli" in sys.modules:
        return sys.modules["raysplit.config.cli"]
    path = Path(__file__).resolve().parents[1] / "raysplit" / "config" / "cli.py"
    spec = importlib.util.spec_from_file_location("_raysplit_config_cli_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while processing the class
    spec.loader.exec_module(module)
    return module


cli = _load_cli()
ConfigParser, option = cli.ConfigParser, cli.option

BACKENDS: dict[str, object] = {}  # a registry filled after the dataclass below is defined


def _pair(text: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"{text!r}: expected A:B, e.g. 3:1") from None
    return a, b


def _fraction(text) -> float:
    num, _, den = str(text).partition("/")
    try:
        value = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{text!r} is not a fraction like 1/2") from None
    return value


@dataclass(frozen=True)
class Inner:
    """Nested.

    Args:
        depth: layers.
    """

    depth: int = 2


@dataclass(frozen=True)
class Net:
    """A network.

    Args:
        width, depth: size of the network, in
            channels and layers.
        lr: learning rate (100% = 1).
        budgets: channels sent per phase.
        scales: scale factors.
        tags: labels.
        mask: the mask function.
        backend: a registered backend.
        codec: the wire codec.
        threads: intra-op threads.
        image_size: image side in px.
        workers: how many workers.
        shuffle: shuffle the data.
        ratio: a fraction.
        name: overridden by the metadata.
    """

    width: int = 8
    depth: int = 3
    lr: float = 0.01
    budgets: tuple[int, ...] = (4, 128)
    scales: tuple[float, ...] = (0.5,)
    tags: tuple[str, ...] = ("a", "b")
    mask: Literal["sigmoid", "sigmoid2"] = "sigmoid2"
    backend: str = field(default="gloo", metadata=option(choices=lambda: tuple(BACKENDS)))
    codec: str = field(default="float32", metadata=option(choices=("float32", "int8")))
    threads: int | None = field(default=None, metadata=option(flag="torch-threads", none_word="default"))
    image_size: int | None = field(default=None, metadata=option(none_word="auto"))
    workers: int | str = field(default="auto", metadata=option(words=("auto",)))
    shuffle: bool = True
    ratio: float = field(default=0.5, metadata=option(parse=_fraction))
    name: str = field(default="run", metadata=option(help="the run's name"))
    classes: int = field(default=10, metadata=option(cli=False))
    inner: Inner = field(default_factory=Inner)


BACKENDS.update(gloo=1, nccl=2)


@dataclass(frozen=True)
class Run:
    """A run.

    Args:
        seed: random seed; must be >= 0.
        out: run directory.
        verbose: print more.
        fault: testing: inject a fault at A:B.
    """

    seed: int = 0
    out: str | None = None
    verbose: bool = False
    fault: tuple[int, int] | None = field(default=None, metadata=option(parse=_pair, metavar="A:B"))

    def __post_init__(self):
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


NET_DEFAULTS = dict(width=8, depth=3, lr=0.01, budgets=(4, 128), scales=(0.5,), tags=("a", "b"), mask="sigmoid2",
                    backend="gloo", codec="float32", threads=None, image_size=None, workers="auto", shuffle=True,
                    ratio=0.5, name="run")


def make(**kw) -> ConfigParser:
    return ConfigParser("prog", "Test program.", [("network", Net), ("run", Run)], **kw)


def fails(p: ConfigParser, argv, capsys) -> str:
    """parse(argv) exits with status 2; its stderr, whitespace-normalised."""
    with pytest.raises(SystemExit) as e:
        p.parse(argv)
    assert e.value.code == 2
    return " ".join(capsys.readouterr().err.split())


def yaml_file(tmp_path, text: str) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_round_trip():
    p = make()
    values = p.parse([])
    assert values == {Net: NET_DEFAULTS, Run: dict(seed=0, out=None, verbose=False, fault=None)}
    assert p.build(Net) == Net()
    assert p.build(Run) == Run()


def test_types_from_the_command_line():
    v = make().parse(["--width", "16", "--lr", "1e-3", "--budgets", "8, 64", "--scales", "1,2.5", "--tags", "x",
                      "--no-shuffle", "--verbose", "--name", "r1", "--seed", "-3", "--out", "runs/x", "--fault", "3:1"])
    assert v[Net] == {**NET_DEFAULTS, "width": 16, "lr": 1e-3, "budgets": (8, 64), "scales": (1.0, 2.5),
                      "tags": ("x",), "shuffle": False, "name": "r1"}
    assert v[Run] == dict(seed=-3, out="runs/x", verbose=True, fault=(3, 1))
    assert isinstance(v[Net]["lr"], float) and isinstance(v[Net]["scales"][0], float)


@pytest.mark.parametrize("argv, message", [
    (["--lr", "abc"], "--lr: 'abc' is not a number"),
    (["--width", "1.5"], "--width: '1.5' is not an integer"),
    (["--budgets", ""], "--budgets: '' is not a comma-separated list of integers"),
    (["--budgets", "4,,8"], "--budgets: '4,,8' is not a comma-separated list of integers"),
    (["--budgets", "4,128,"], "--budgets: '4,128,' is not a comma-separated list of integers"),
    (["--budgets", "4,x"], "--budgets: '4,x' is not a comma-separated list of integers"),
    (["--scales", "1,y"], "--scales: '1,y' is not a comma-separated list of numbers"),
    (["--torch-threads", "many"], "--torch-threads: 'many' is not an integer or 'default'"),
    (["--workers", "many"], "--workers: 'many' is not an integer or 'auto'"),
    (["--ratio", "1/x"], "--ratio: '1/x' is not a fraction like 1/2"),
    (["--fault", "3"], "--fault: '3': expected A:B, e.g. 3:1"),
])
def test_bad_values_name_option_value_and_what_is_allowed(argv, message, capsys):
    assert message in fails(make(), argv, capsys)


def test_none_word_and_words():
    p = make()
    v = p.parse(["--torch-threads", "default", "--image-size", "auto", "--workers", "auto", "--out", "none"])
    assert (v[Net]["threads"], v[Net]["image_size"], v[Net]["workers"], v[Run]["out"]) == (None, None, "auto", None)
    v = p.parse(["--torch-threads", "4", "--image-size", "32", "--workers", "3", "--ratio", "3/4"])
    assert (v[Net]["threads"], v[Net]["image_size"], v[Net]["workers"], v[Net]["ratio"]) == (4, 32, 3, 0.75)
    help_text = " ".join(p.parser.format_help().split())
    assert "intra-op threads. (default: default)" in help_text
    assert "image side in px. (default: auto)" in help_text
    assert "run directory. (default: none)" in help_text
    assert "how many workers. (default: auto)" in help_text


def test_choices_from_literal_tuple_and_callable(capsys):
    p = make()
    v = p.parse(["--mask", "sigmoid", "--codec", "int8", "--backend", "nccl"])
    assert (v[Net]["mask"], v[Net]["codec"], v[Net]["backend"]) == ("sigmoid", "int8", "nccl")
    help_text = p.parser.format_help()
    assert "--mask {sigmoid,sigmoid2}" in help_text and "--backend {gloo,nccl}" in help_text
    assert "--mask: 'relu' is not one of: sigmoid, sigmoid2" in fails(p, ["--mask", "relu"], capsys)
    assert "--codec: 'lz4' is not one of: float32, int8" in fails(p, ["--codec", "lz4"], capsys)
    assert "--backend: 'mpi' is not one of: gloo, nccl" in fails(p, ["--backend", "mpi"], capsys)


def test_flag_rename_cli_false_and_nested_dataclasses(capsys):
    p = make()
    assert p.parse(["--torch-threads", "2"])[Net]["threads"] == 2
    help_text = p.parser.format_help()
    assert "--torch-threads" in help_text and "--threads" not in help_text
    assert "--classes" not in help_text and "--inner" not in help_text and "--depth" in help_text
    assert "classes" not in p.parse([])[Net] and "inner" not in p.parse([])[Net]
    assert "unrecognized arguments: --classes" in fails(p, ["--classes", "3"], capsys)
    assert "unrecognized arguments: --threads" in fails(p, ["--threads", "3"], capsys)
    # the caller composes nested configs: extra keyword arguments go to the constructor
    p.parse(["--width", "4"])
    assert p.build(Net, inner=Inner(depth=5)) == Net(width=4, inner=Inner(depth=5))


@dataclass(frozen=True)
class Clash:
    """Args:
        rate: a rate.
    """

    rate: float = field(default=0.1, metadata=option(flag="lr"))


def test_the_same_option_in_two_sections_is_rejected():
    with pytest.raises(TypeError, match=r"--lr.*Net\.lr.*Clash\.rate"):
        ConfigParser("prog", "x", [("network", Net), ("clash", Clash)])
    with pytest.raises(TypeError, match="--seed"):
        ConfigParser("prog", "x", [("run", Run), ("again", Run)])


def test_help_from_args_section():
    p = make()
    help_text = " ".join(p.parser.format_help().split())
    # the shared "a, b:" form, with its continuation line, for both fields
    assert "--width INT size of the network, in channels and layers. (default: 8)" in help_text
    assert "--depth INT size of the network, in channels and layers. (default: 3)" in help_text
    assert "learning rate (100% = 1). (default: 0.01)" in help_text  # % is escaped for argparse
    assert "--budgets INT,... channels sent per phase. (default: 4,128)" in help_text
    assert "--torch-threads INT|default" in help_text and "--workers INT|auto" in help_text
    assert "--ratio RATIO" in help_text and "--fault A:B" in help_text  # parse: no type-based metavar
    assert "labels. (default: a,b)" in help_text
    assert "--shuffle, --no-shuffle shuffle the data. (default: true)" in help_text
    assert "--verbose, --no-verbose print more. (default: false)" in help_text
    assert "the run's name (default: run)" in help_text and "overridden by the metadata" not in help_text
    assert "network:" in help_text and "run:" in help_text and "--config FILE" in help_text


@dataclass(frozen=True)
class Undocumented:
    """Args:
        documented: yes.
    """

    documented: int = 0
    forgotten: int = 0


@dataclass(frozen=True)
class Unsupported:
    """Args:
        table: a mapping.
    """

    table: dict[str, int] = field(default_factory=dict)


def test_missing_help_and_unsupported_types_are_rejected():
    with pytest.raises(TypeError, match=r"Undocumented\.forgotten has no help"):
        ConfigParser("prog", "x", [("s", Undocumented)])
    with pytest.raises(TypeError, match=r"Unsupported\.table.*dict\[str, int\]"):
        ConfigParser("prog", "x", [("s", Unsupported)])


def test_yaml_precedence_cli_over_file_over_defaults(tmp_path):
    p = make(defaults={"width": 32, "seed": 5, "image_size": "auto"})
    path = yaml_file(tmp_path, "width: 64\nlr: 0.5\nimage-size: 48\n")
    v = p.parse(["--config", path, "--lr", "0.25"])
    assert (v[Net]["width"], v[Net]["lr"], v[Net]["image_size"], v[Run]["seed"]) == (64, 0.25, 48, 5)
    assert make(defaults={"width": 32}).parse([])[Net]["width"] == 32
    help_text = " ".join(p.parser.format_help().split())
    assert "(default: 32)" in help_text  # a job's documented defaults show in its --help


def test_yaml_keys_with_dashes_or_underscores_and_native_values(tmp_path):
    path = yaml_file(tmp_path, "torch_threads: 2\nimage-size: auto\nbudgets: [1, 2]\nscales: 3\ntags: [x, y]\n"
                               "shuffle: false\nworkers: auto\nout: null\nlr: 1\nname: 42\ncodec: int8\n"
                               "ratio: 1/4\nfault: '2:5'\n")
    v = make().parse(["--config", path])
    assert v[Net] == {**NET_DEFAULTS, "threads": 2, "image_size": None, "budgets": (1, 2), "scales": (3.0,),
                      "tags": ("x", "y"), "shuffle": False, "workers": "auto", "lr": 1.0, "name": "42",
                      "codec": "int8", "ratio": 0.25}
    assert v[Run]["out"] is None and v[Run]["fault"] == (2, 5)
    path = yaml_file(tmp_path, "budgets: '8,16'\nworkers: 7\nseed: '3'\n")  # strings go through the CLI parser
    v = make().parse(["--config", path])
    assert (v[Net]["budgets"], v[Net]["workers"], v[Run]["seed"]) == ((8, 16), 7, 3)
    assert make().parse(["--config", yaml_file(tmp_path, "")])[Net] == NET_DEFAULTS  # an empty file is fine


def test_yaml_unknown_key_suggests_close_matches(tmp_path, capsys):
    err = fails(make(), ["--config", yaml_file(tmp_path, "budget: [1, 2]\n")], capsys)
    assert "unknown option 'budget'" in err and "did you mean budgets" in err


@pytest.mark.parametrize("text, message", [
    ("lr: [1, 2]\n", "lr: [1, 2] is not a number"),
    ("width: 1.5\n", "width: 1.5 is not an integer"),
    ("shuffle: maybe\n", "shuffle: 'maybe' is not true or false"),
    ("budgets: []\n", "budgets: [] is not a comma-separated list of integers"),
    ("budgets: [1, x]\n", "budgets: [1, 'x'] is not a comma-separated list of integers"),
    ("seed: true\n", "seed: True is not an integer"),
    ("mask: relu\n", "mask: 'relu' is not one of: sigmoid, sigmoid2"),
    ("fault: [3, 1]\n", "fault: [3, 1]: write it as on the command line (A:B)"),  # parse gets strings
    ("- lr\n- width\n", "expected a mapping of option: value, got a list"),
    ("lr: [1\n", "not valid YAML"),
])
def test_yaml_bad_values_and_files_are_errors(tmp_path, capsys, text, message):
    path = yaml_file(tmp_path, text)
    err = fails(make(), ["--config", path], capsys)
    assert f"--config {path}" in err and message in err


def test_yaml_missing_file(tmp_path, capsys):
    assert "no such file" in fails(make(), ["--config", str(tmp_path / "absent.yaml")], capsys)


def test_defaults_mapping_is_checked():
    with pytest.raises(TypeError, match="unknown option 'widht'"):
        make(defaults={"widht": 3})
    with pytest.raises(ValueError, match="--width"):
        make(defaults={"width": "wide"})


def test_build_turns_post_init_errors_into_exit_2(capsys):
    p = make()
    p.parse(["--seed", "-1"])
    with pytest.raises(SystemExit) as e:
        p.build(Run)
    assert e.value.code == 2
    assert "seed must be >= 0, got -1" in capsys.readouterr().err
    assert p.build(Run, {"seed": 4}) == Run(seed=4)
    assert p.build(Run, seed=7) == Run(seed=7)  # extra wins over the parsed values


def test_hand_written_options_live_beside_the_generated_ones():
    p = make()
    p.parser.add_argument("--dry-run", action="store_true", help="only print the plan")
    v = p.parse(["--dry-run", "--width", "2"])
    assert p.namespace.dry_run is True and v[Net]["width"] == 2


def test_options_markdown_lists_every_option():
    p = make()
    md = p.options_markdown()
    lines = md.strip().splitlines()
    assert lines[0] == "| option | default | meaning |"
    for flag in ("width", "depth", "lr", "budgets", "scales", "tags", "mask", "backend", "codec", "torch-threads",
                 "image-size", "workers", "ratio", "name", "seed", "out", "fault"):
        assert f"`--{flag}`" in md
    assert "| `--[no-]shuffle` | `true` | shuffle the data. |" in md
    assert "| `--budgets` | `4,128` | channels sent per phase. |" in md
    assert "| `--torch-threads` | `default` | intra-op threads. |" in md
    assert len(lines) == 2 + len(p.options) == 2 + 19


@dataclass(frozen=True)
class Required:
    """Args:
        steps: how many steps.
    """

    steps: int


@dataclass(frozen=True)
class Reserved:
    """Args:
        config: clashes with --config.
    """

    config: str = "x"


def test_a_field_without_default_is_required_and_config_is_reserved(tmp_path, capsys):
    p = ConfigParser("prog", "x", [("s", Required)])
    assert "how many steps. (required)" in " ".join(p.parser.format_help().split())
    assert "--steps is required" in fails(p, [], capsys)
    assert p.parse(["--config", yaml_file(tmp_path, "steps: 3\n")]) == {Required: {"steps": 3}}
    with pytest.raises(TypeError, match="--config is reserved"):
        ConfigParser("prog", "x", [("s", Reserved)])
