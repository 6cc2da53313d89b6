'''Command line and YAML ``--config`` built from frozen config dataclasses: each option is defined once.

A field ``batch_size`` becomes ``--batch-size``; its parser comes from its type, its default from
the dataclass, its help from the class docstring's Google-style ``Args:`` section (or
``option(help=...)``). Precedence: command line > ``--config FILE`` > ``defaults=`` > dataclass::

    @dataclass(frozen=True)
    class Train:
        """One run.

        Args:
            lr: SGD learning rate.
            budgets: channels sent per phase, e.g. 4,128.
            out: run directory.
        """
        lr: float = 0.01
        budgets: tuple[int, ...] = (4, 128)
        out: str | None = field(default=None, metadata=option(none_word="auto"))

    p = ConfigParser("train", "Train a model.", [("training", Train)])
    p.parse()               # {Train: {"lr": 0.01, "budgets": (4, 128), "out": None}}
    train = p.build(Train)  # a bad value, or a ValueError from __post_init__, exits with status 2
'''

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, NoReturn, Union

__all__ = ["ConfigParser", "option", "option_of"]

_META = "cli"  # the key of option()'s dict in a field's metadata
_MISSING = dataclasses.MISSING


def option(*, help: str | None = None, flag: str | None = None, choices=None, parse=None,
           metavar: str | None = None, none_word: str = "none", words: tuple[str, ...] = (), cli: bool = True) -> dict:
    """Metadata for ``dataclasses.field(metadata=option(...))``.

    Args:
        help: the option's help (default: the class docstring's ``Args:`` entry).
        flag: the option's name without dashes (default: the field name with _ -> -).
        choices: the allowed values: a tuple, or a zero-argument callable returning one (called when
            the parser is built, for registries filled at import time).
        parse: value -> field value, raising ValueError/TypeError with a message; it replaces the
            type-based parser and gets the command-line string, or the YAML value as loaded.
        metavar: the value's name in --help.
        none_word: the word that means None for an Optional field (e.g. "all", "auto", "default").
        words: literal words accepted besides the typed value (``int | str`` fields, e.g. "auto").
        cli: False = not an option (the field is set by code, e.g. filled from the data).
    """
    if not none_word:
        raise ValueError("none_word must not be empty")
    return {_META: dict(help=help, flag=flag, choices=choices, parse=parse, metavar=metavar,
                        none_word=none_word, words=tuple(words), cli=cli)}


_PLAIN = option()[_META]


def option_of(f: dataclasses.Field) -> dict:
    """The settings :func:`option` gave a dataclass field (the defaults where it gave none)."""
    return {**_PLAIN, **f.metadata.get(_META, {})}
_NOUNS = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("text", "texts"),
          bool: ("true or false", "booleans")}
_METAVARS = {int: "INT", float: "FLOAT"}
_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
_ENTRY = re.compile(r"^\s*(\w+(?:\s*,\s*\w+)*)\s*(?:\([^)]*\))?\s*:\s*(.*)$")  # "a, b (int): text"


def _arg_docs(cls: type) -> dict[str, str]:
    """{field: text} from the ``Args:`` sections of cls's docstring and its bases' (the subclass wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        section, entry, names = None, None, []
        for line in (klass.__dict__.get("__doc__") or "").expandtabs().splitlines():
            indent, text = len(line) - len(line.lstrip()), line.strip()
            if section is None:
                section = indent if text in ("Args:", "Arguments:") else None
            elif text and indent <= section:
                break  # the next section, or the end of this one
            elif text:
                entry = entry or indent
                m = _ENTRY.match(line) if indent == entry else None
                if m:  # "name: text" or "a, b: text"
                    names = [n.strip() for n in m[1].split(",")]
                    docs.update(dict.fromkeys(names, m[2].strip()))
                else:  # a continuation line
                    for n in names:
                        docs[n] = f"{docs[n]} {text}".strip()
    return docs


def _scalar(tp: type, v: object) -> object:
    """A command-line string or a YAML scalar as tp; raises ValueError/TypeError/KeyError."""
    if isinstance(v, str):
        return v if tp is str else _BOOLS[v.strip().lower()] if tp is bool else tp(v.strip())
    if isinstance(v, bool) != (tp is bool):  # True is an int, but never a number here
        raise TypeError(v)
    if tp is float and isinstance(v, (int, float)):
        return float(v)
    if tp in (int, bool) and isinstance(v, int):
        return v
    if tp is str and isinstance(v, (int, float)):
        return str(v)
    raise TypeError(v)


def _converter(tp, meta: dict):
    """(convert, metavar, is_flag) for a field type, or None if unsupported. convert takes a
    command-line string or a YAML value and raises ValueError naming the value and what is allowed."""
    words, none_word, parse = meta["words"], meta["none_word"], meta["parse"]
    optional = False
    if typing.get_origin(tp) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(rest) < len(typing.get_args(tp))
        if words and str in rest and len(rest) == 2:
            rest.remove(str)  # int | str: the str part is the words
        tp = rest[0] if len(rest) == 1 else None
    choices = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
    many = typing.get_origin(tp) is tuple and typing.get_args(tp)[1:] == (Ellipsis,)
    item = typing.get_args(tp)[0] if many else tp
    if typing.get_origin(item) is Literal:
        choices = choices or typing.get_args(item)
        kinds = {type(c) for c in typing.get_args(item)}
        item = kinds.pop() if len(kinds) == 1 else None
    if parse is None and item not in _NOUNS:
        return None
    choices = tuple(choices) if choices else ()
    specials = words + ((none_word,) if optional else ())
    if choices:
        allowed = ", ".join(map(str, choices))
        desc = f"a comma-separated list of: {allowed}" if many else f"one of: {allowed}"
    else:
        noun = _NOUNS.get(item, ("a value", "values"))
        desc = f"a comma-separated list of {noun[1]}" if many else noun[0]
    desc += "".join(f" or {w!r}" for w in specials)
    metavar = meta["metavar"]  # else {a,b}, INT, FLOAT,..., INT|auto; text keeps argparse's (the option's name)
    if metavar is None and choices:
        metavar = "{" + ",".join(map(str, choices + specials)) + "}" + (",..." if many else "")
    elif metavar is None and parse is None and item in _METAVARS:
        metavar = _METAVARS[item] + (",..." if many else "") + "".join(f"|{w}" for w in specials)

    def one(v):
        out = _scalar(item, v)
        if choices and out not in choices:
            raise ValueError(v)
        return out

    def convert(v):
        if optional and (v is None or v == none_word):
            return None
        if isinstance(v, str) and v in words:
            return v
        if parse is not None:  # its own messages
            try:
                out = parse(v)
            except AttributeError:  # a parser of strings given a YAML list or number
                raise ValueError(f"{v!r}: write it as on the command line ({metavar or 'text'})") from None
            if choices and out not in choices:
                raise ValueError(f"{v!r} is not {desc}")
            return out
        try:
            if not many:
                return one(v)
            if isinstance(v, str):
                parts = [p.strip() for p in v.split(",")]
            else:
                parts = list(v) if isinstance(v, (list, tuple)) else [v]
            if not parts or "" in parts:  # empty, or a stray comma
                raise ValueError(v)
            return tuple(one(p) for p in parts)
        except (ValueError, TypeError, KeyError):
            raise ValueError(f"{v!r} is not {desc}") from None

    is_flag = item is bool and not (many or optional or words or parse)
    return convert, metavar, is_flag


@dataclasses.dataclass(frozen=True)
class _Option:
    """One option this module added: where its value goes and how it is read and shown."""

    cls: type
    name: str  # the field
    flag: str  # the option, without dashes
    convert: Callable[[object], object]
    default: object  # dataclasses.MISSING: required
    text: str  # help, without the default
    none_word: str
    metavar: str | None
    is_flag: bool

    @property
    def dest(self) -> str:
        return self.flag.replace("-", "_")

    def shown_default(self) -> str:
        v = self.default
        if v is None:
            return self.none_word
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, (tuple, list)):
            return ",".join(map(str, v)) or "empty"
        return repr(v) if v == "" else str(v)

    def help(self) -> str:
        return f"{self.text} ({'required' if self.default is _MISSING else 'default: ' + self.shown_default()})"


def _options_of(cls: type) -> list[_Option]:
    """The command-line fields of a dataclass (not cli=False, not init=False, not nested dataclasses)."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints, docs, out = typing.get_type_hints(cls), _arg_docs(cls), []
    for f in dataclasses.fields(cls):
        meta, tp = option_of(f), hints[f.name]
        if not f.init or not meta["cli"] or (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            continue
        where = f"{cls.__qualname__}.{f.name}"
        conv = _converter(tp, meta)
        if conv is None:
            raise TypeError(f"{where}: no command-line parser for type {tp}; "
                            "give option(parse=...) or option(cli=False)")
        text = meta["help"] or docs.get(f.name)
        if not text:
            raise TypeError(f"{where} has no help: document it under Args: in the class docstring, "
                            "or give option(help=...)")
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING else _MISSING)
        flag = meta["flag"] or f.name.replace("_", "-")
        out.append(_Option(cls, f.name, flag, conv[0], default, text, meta["none_word"], conv[1], conv[2]))
    return out


class ConfigParser:
    """An argparse parser (plus ``--config FILE``) whose options are the fields of config dataclasses."""

    def __init__(self, prog: str, description: str, sections: Sequence[tuple[str, type]], *,
                 epilog: str | None = None, defaults: Mapping[str, object] | None = None) -> None:
        self.parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                              formatter_class=argparse.RawDescriptionHelpFormatter)
        self.parser.add_argument("--config", metavar="FILE",
                                 help="YAML file of option: value (keys with - or _); the command line wins over it")
        self.options: dict[str, _Option] = {}  # flag -> option, in --help order
        self.values: dict[type, dict[str, object]] | None = None  # the last parse()
        self.namespace: argparse.Namespace | None = None  # the last parse's --config and hand-written options
        self._classes = [cls for _, cls in sections]
        for _, cls in sections:
            for opt in _options_of(cls):
                if opt.flag in ("config", "help"):
                    raise TypeError(f"{cls.__qualname__}.{opt.name}: --{opt.flag} is reserved")
                if opt.flag in self.options:
                    other = self.options[opt.flag]
                    raise TypeError(f"option --{opt.flag} is declared twice: by {other.cls.__qualname__}.{other.name} "
                                    f"and by {cls.__qualname__}.{opt.name}")
                self.options[opt.flag] = opt
        for key, value in (defaults or {}).items():
            opt = self.options.get(key.replace("_", "-"))
            if opt is None:
                raise TypeError(f"defaults: unknown option {key!r}")
            try:
                self.options[opt.flag] = dataclasses.replace(opt, default=opt.convert(value))
            except (ValueError, TypeError) as e:
                raise ValueError(f"defaults: --{opt.flag}: {e}") from None
        for title, cls in sections:
            group = self.parser.add_argument_group(title)
            for opt in (o for o in self.options.values() if o.cls is cls):
                kw = dict(dest=opt.dest, default=argparse.SUPPRESS, help=opt.help().replace("%", "%%"))
                if opt.is_flag:
                    group.add_argument(f"--{opt.flag}", action=argparse.BooleanOptionalAction, **kw)
                else:
                    group.add_argument(f"--{opt.flag}", metavar=opt.metavar, **kw)

    def parse(self, argv: Sequence[str] | None = None) -> dict[type, dict[str, object]]:
        """{dataclass: {field: value}} for every option: command line > --config > defaults > dataclass."""
        ns = self.parser.parse_args(argv)
        given = vars(ns)  # our options appear only when given (default=SUPPRESS)
        in_file = self._read_config(ns.config) if ns.config is not None else {}
        values: dict[type, dict[str, object]] = {cls: {} for cls in self._classes}
        for flag, opt in self.options.items():
            if opt.dest in given:
                value = self._convert(opt, given.pop(opt.dest), f"--{flag}")
            elif flag in in_file:
                key, raw = in_file[flag]
                value = self._convert(opt, raw, f"--config {ns.config}: {key}")
            else:
                value = opt.default
            if value is _MISSING:
                self.error(f"--{flag} is required (on the command line or in --config)")
            values[opt.cls][opt.name] = value
        self.values, self.namespace = values, ns
        return values

    def build(self, cls, values: Mapping[str, object] | None = None, **extra):
        """cls(**values, **extra) (extra wins; values default to the last parse()); a ValueError or
        TypeError from the constructor exits with status 2 and its message."""
        if values is None:
            if self.values is None or cls not in self.values:
                raise RuntimeError(f"build({cls.__qualname__}): call parse() first, or pass values")
            values = self.values[cls]
        try:
            return cls(**{**values, **extra})
        except (ValueError, TypeError) as e:
            self.error(str(e))

    def error(self, message: str) -> NoReturn:
        self.parser.error(message)

    def options_markdown(self) -> str:
        """A markdown table (option | default | meaning) of every option, for a README."""
        rows = ["| option | default | meaning |", "|---|---|---|"]
        for o in self.options.values():
            cells = (f"`--[no-]{o.flag}`" if o.is_flag else f"`--{o.flag}`",
                     "required" if o.default is _MISSING else f"`{o.shown_default()}`", o.text)
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(rows) + "\n"

    def _convert(self, opt: _Option, raw: object, where: str) -> object:
        try:
            return opt.convert(raw)
        except (ValueError, TypeError) as e:
            self.error(f"{where}: {e}")

    def _read_config(self, path: str) -> dict[str, tuple[str, object]]:
        """{flag: (key as written, value)} from a YAML mapping; a bad file or key exits with status 2."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            self.error(f"--config {path}: no such file")
        except (OSError, UnicodeDecodeError) as e:
            self.error(f"--config {path}: cannot read it: {e}")
        except yaml.YAMLError as e:
            self.error(f"--config {path}: not valid YAML: {e}")
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.error(f"--config {path}: expected a mapping of option: value, got a {type(data).__name__}")
        out = {}
        for key, value in data.items():
            flag = str(key).replace("_", "-")
            if flag not in self.options:
                close = difflib.get_close_matches(flag, list(self.options), n=3)
                hint = f"; did you mean {' or '.join(close)}?" if close else f"; options: {', '.join(self.options)}"
                self.error(f"--config {path}: unknown option {key!r}{hint}")
            out[flag] = (str(key), value)
        return out
