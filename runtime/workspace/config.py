"""cdl.yaml: the pipeline's source (steps, parameters, edges, feedback loops).

Format (version 1):

    cdl: 1
    name: bbc-news
    task: text                 # text | image
    template: text-classification
    labeling:                  # Label Studio names, used for import and export
      from_name: category
      to_name: text
      classes: []              # a fixed class list; empty means "whatever the data has"
    steps:                     # one entry per step in the pipeline; missing params take their defaults
      data.import:
        params: {sources: []}
    edges:                     # the flowchart's arrows; they must form a DAG
      - [data.import, data.split]
    loops:                     # feedback arrows (drawn, never executed as dependencies)
      - [deploy.maintain, data.label]

Every step id must be a registered step and every parameter must be in its schema; errors name the field.
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge_agent.proto.files import as_if_opened
from runtime.domain.errors import ConfigError, did_you_mean

CONFIG_NAME = "cdl.yaml"
TASKS = ("text", "image")
# a model's name: it is the Open Inference Protocol's model name (a REST path segment), part of NAME:VERSION refs
# and of bundle file names, so no spaces, ':' or '/'
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_model_name(name: str, where: str) -> str:
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise ConfigError(f"{where}: {name!r} cannot name a model: letters, digits, '.', '_' and '-', starting with a "
                          "letter or a digit, at most 64 (it is the model's name on devices, in REST paths and in "
                          "NAME:VERSION)")
    return name


def model_name_for(folder: str) -> str:
    """The default name of a workspace (and its model) made in `folder`: the folder's name with what cannot name a
    model replaced by '-' ("my project:v2" gives "my-project-v2"), accented letters by their base letter ("Zürich
    news" gives "Zurich-news", where it gave "Z-rich-news")."""
    import unicodedata

    plain = "".join(c for c in unicodedata.normalize("NFKD", folder) if not unicodedata.combining(c))
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", plain).strip("-._")[:64]
    return name if MODEL_NAME.fullmatch(name) else "workspace"


@dataclass
class PipelineConfig:
    name: str
    task: str
    template: str
    steps: dict[str, dict[str, Any]]  # step id -> raw params from the file
    edges: list[tuple[str, str]]
    loops: list[tuple[str, str]] = field(default_factory=list)
    labeling: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # -- graph --------------------------------------------------------------------------------------------

    def order(self) -> list[str]:
        """Topological order, ties broken by the order steps appear in the file (stable for the flowchart)."""
        pos = {s: i for i, s in enumerate(self.steps)}
        indeg = {s: 0 for s in self.steps}
        for _a, b in self.edges:
            indeg[b] += 1
        ready = sorted((s for s, d in indeg.items() if d == 0), key=pos.__getitem__)
        out: list[str] = []
        while ready:
            s = ready.pop(0)
            out.append(s)
            for a, b in self.edges:
                if a == s:
                    indeg[b] -= 1
                    if indeg[b] == 0:
                        ready.append(b)
                        ready.sort(key=pos.__getitem__)
        if len(out) != len(self.steps):
            cyc = sorted(s for s, d in indeg.items() if d > 0)
            raise ConfigError(f"{self.where('edges')}: the edges form a cycle through {', '.join(cyc)}")
        return out

    def upstream(self, step: str) -> list[str]:
        return [a for a, b in self.edges if b == step]

    def ancestors(self, step: str) -> set[str]:
        seen: set[str] = set()
        todo = [step]
        while todo:
            s = todo.pop()
            for u in self.upstream(s):
                if u not in seen:
                    seen.add(u)
                    todo.append(u)
        return seen

    def where(self, key: str) -> str:
        return f"{self.path or CONFIG_NAME}: {key}"

    # -- params -------------------------------------------------------------------------------------------

    def params(self, step: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        from runtime.steps import get_step

        spec = get_step(step).spec
        raw = dict(self.steps.get(step) or {})
        if overrides:
            raw.update(overrides)
        return spec.resolve_params(raw, self.where(f"steps.{step}.params"))

    def set_param(self, step: str, name: str, value: Any) -> None:
        self.steps.setdefault(step, {})[name] = value

    # -- io -----------------------------------------------------------------------------------------------

    def to_yaml(self) -> str:
        doc: dict[str, Any] = {"cdl": 1, "name": self.name, "task": self.task, "template": self.template}
        if self.labeling:
            doc["labeling"] = self.labeling
        doc.update(self.extra)
        doc["steps"] = {s: ({"params": p} if p else {}) for s, p in self.steps.items()}
        doc["edges"] = [list(e) for e in self.edges]
        if self.loops:
            doc["loops"] = [list(e) for e in self.loops]
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=110)

    def save(self, path: Path | None = None) -> None:
        path = Path(path or self.path or CONFIG_NAME)
        atomic_write_text(path, self.to_yaml())
        self.path = path

    def copy(self) -> PipelineConfig:
        return copy.deepcopy(self)


def yaml_problem(exc: BaseException) -> str:
    """A YAML error in one line: "line 15, column 11: expected ',' or '}', but got ':' (while parsing a flow mapping
    at line 14, column 12)". PyYAML's own text runs over several lines, names the file "<unicode string>" and
    quotes the lines, which an `error: ...` line and the start page's notice printed as they were."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or not problem:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, at = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and at is not None:
        text += f" ({context} at line {at.line + 1}, column {at.column + 1})"
    return text


_FAST_LOADER = getattr(yaml, "CSafeLoader", None)  # libyaml's parser, where PyYAML was built with it


def load_yaml(text: str) -> Any:  # noqa: ANN401 - a YAML document
    """`yaml.safe_load(text)` through libyaml where PyYAML has it: the same documents, about eight times faster
    (Fashion-MNIST's cdl.yaml took 21 ms in pure Python, 2.7 ms in libyaml; every `cdl` command and the studio's
    start read it). A text libyaml refuses is read again in pure Python, whose error says more ("found character
    '\\t' that cannot start any token", where libyaml leaves the character out), at the same line and column."""
    if _FAST_LOADER is None:
        return yaml.safe_load(text)
    try:
        return yaml.load(text, Loader=_FAST_LOADER)  # noqa: S506 - CSafeLoader is the safe loader
    except yaml.YAMLError:
        return yaml.safe_load(text)  # raises, with PyYAML's message (or reads it, should the two ever disagree)


_PARSED: dict[str, Any] = {}  # cdl.yaml's text -> its YAML document, the last few texts read
_PARSED_LOCK = threading.Lock()


def _yaml_doc(text: str) -> Any:  # noqa: ANN401 - a YAML document
    """`yaml.safe_load(text)`, remembered for the texts read last and handed out as a copy (the caller may change
    it). cdl.yaml is read again on every call of Workspace.config(), since the user may edit it, and parsing it
    took 25-60 ms: the labeling panel's classes alone read it four times for each item it showed."""
    doc = _PARSED.get(text)
    if doc is None:
        doc = load_yaml(text)
        with _PARSED_LOCK:  # the studio's threads read it too
            while len(_PARSED) >= 8:
                _PARSED.pop(next(iter(_PARSED)))
            _PARSED[text] = doc
    return copy.deepcopy(doc)


def parse_config(text: str, where: str = CONFIG_NAME, check_params: bool = True) -> PipelineConfig:
    try:
        doc = _yaml_doc(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML at {yaml_problem(exc)}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    if doc.get("cdl") != 1:
        raise ConfigError(f"{where}: cdl: expected format version 1, got {doc.get('cdl')!r}")
    task = doc.get("task")
    if task not in TASKS:
        raise ConfigError(f"{where}: task: must be one of {', '.join(TASKS)}, got {task!r}")
    steps_doc = doc.get("steps") or {}
    if not isinstance(steps_doc, dict):
        raise ConfigError(f"{where}: steps: expected a mapping of step id to settings")
    from runtime.steps import known_steps

    known = known_steps()
    steps: dict[str, dict[str, Any]] = {}
    for sid, body in steps_doc.items():
        if sid not in known:
            raise ConfigError(f"{where}: steps.{sid}: unknown step (known: {', '.join(sorted(known))})")
        body = body or {}
        if not isinstance(body, dict) or set(body) - {"params"}:
            raise ConfigError(f"{where}: steps.{sid}: expected a mapping with 'params'")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: steps.{sid}.params: expected a mapping")
        steps[sid] = dict(params)
    edges = _pairs(doc.get("edges") or [], f"{where}: edges", steps)
    loops = _pairs(doc.get("loops") or [], f"{where}: loops", steps)
    labeling = doc.get("labeling") or {}
    if not isinstance(labeling, dict):
        raise ConfigError(f"{where}: labeling: expected a mapping")
    # a key nothing reads was ignored without a word ("trainig:" for training.distributed, "labeling.clases")
    _known_keys(doc, TOP_KEYS, where, "")
    _known_keys(labeling, LABELING_KEYS, where, "labeling.")
    training = doc.get("training")
    if isinstance(training, dict):
        _known_keys(training, ("distributed",), where, "training.")
    extra = {k: v for k, v in doc.items() if k not in {"cdl", "name", "task", "template", "steps", "edges", "loops", "labeling"}}
    from runtime.ml.distributed import settings as distributed_settings

    distributed_settings(extra, where)  # training.distributed: errors name the field now, not at training time
    cfg = PipelineConfig(
        name=str(doc.get("name") or "workspace"),
        task=task,
        template=str(doc.get("template") or ""),
        steps=steps,
        edges=edges,
        loops=loops,
        labeling=labeling,
        extra=extra,
    )
    cfg.order()
    if check_params:
        for sid in steps:
            cfg.params(sid)
    return cfg


TOP_KEYS = ("cdl", "name", "task", "template", "labeling", "steps", "edges", "loops", "training")
LABELING_KEYS = ("from_name", "to_name", "classes")


def _known_keys(doc: Mapping[str, Any], known: tuple[str, ...], where: str, prefix: str) -> None:
    for key in doc:
        if key not in known:
            raise ConfigError(f"{where}: {prefix}{key}: unknown setting{did_you_mean(key, known)}; known: "
                              f"{', '.join(known)}")


def load_config(path: Path) -> PipelineConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found (is this a CDL workspace? create one with `cdl init`)")
    cfg = parse_config(path.read_text(encoding="utf-8"), str(path))
    cfg.path = path
    return cfg


def _pairs(raw: Any, where: str, steps: Mapping[str, Any]) -> list[tuple[str, str]]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list of [from, to] pairs")
    out = []
    for i, pair in enumerate(raw):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise ConfigError(f"{where}[{i}]: expected [from, to], got {pair!r}")
        a, b = pair
        for s in (a, b):
            if s not in steps:
                raise ConfigError(f"{where}[{i}]: {s!r} is not a step of this pipeline")
        out.append((a, b))
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes, private: bool = False) -> None:
    """Whole or not at all. The file follows the umask, or is owner-only from its first byte when `private`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    if not private:
        as_if_opened(fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
