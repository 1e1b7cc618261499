"""A step's parameters as the studio's Parameters dialog edits them: each one's schema and value, and a change
written to cdl.yaml only when the whole pipeline still parses (nothing half-written, errors name the field)."""

from __future__ import annotations

from typing import Any

from runtime.domain.errors import ConfigError, did_you_mean
from runtime.domain.text import changes_text
from runtime.workspace.config import parse_config
from runtime.workspace.workspace import Workspace


def step_params(ws: Workspace, step: str) -> list[dict[str, Any]]:
    """[{name, type, help, choices, minimum, maximum, nullable, default, value, set, tuned}] in the step's order;
    `set` says whether cdl.yaml gives the value (else it is the default); `tuned`, that model.train takes it from
    model.tune's best trial instead (use_tuned, and the name is in the search space)."""
    from runtime.steps import get_step

    cfg = ws.config()
    if step not in cfg.steps:
        raise ConfigError(f"step {step!r} is not in this pipeline")
    spec = get_step(step).spec
    given = dict(cfg.steps.get(step) or {})
    values = cfg.params(step)
    tuned: set[str] = set()
    if step == "model.train" and values.get("use_tuned") and "model.tune" in cfg.steps:
        from runtime.ml.tuning import DEFAULT_SPACE

        tuned = set(cfg.params("model.tune").get("search_space") or DEFAULT_SPACE)
    return [{"name": p.name, "type": p.type, "help": p.help, "choices": list(p.choices) if p.choices else None,
             "minimum": p.minimum, "maximum": p.maximum, "nullable": p.nullable or p.default is None,
             "default": p.default, "value": values.get(p.name), "set": p.name in given,
             "tuned": p.name in tuned, "suggestions": _suggestions(ws, cfg, step, p.name)} for p in spec.params]


def _suggestions(ws: Workspace, cfg: Any, step: str, name: str) -> list[str] | None:  # noqa: ANN401
    """Values to offer for a free-text parameter (any other may still be typed): model.train's template, the
    built-in ones for the task and every module in src/ (a user typed "src:net.py" from memory)."""
    if (step, name) != ("model.train", "template"):
        return None
    built_in = ["bbc-net", "mlp"] + (["cnn"] if cfg.task != "text" else [])
    src = ws.root / "src"
    return built_in + [f"src:{f.name}" for f in sorted(src.glob("*.py")) if _builds_a_model(f)] if src.is_dir() \
        else built_in


def _builds_a_model(path: Any) -> bool:  # noqa: ANN401 - a Path
    """Whether a src/ module defines build_model (a helper it imports, src/layers.py, is no template)."""
    import ast

    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return True  # offered all the same: choosing it says what is wrong with it
    return any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == "build_model" for n in tree.body)


def set_step_params(ws: Workspace, step: str, values: dict[str, Any]) -> dict[str, Any]:
    """Write the values that differ from what cdl.yaml gives now. Every value is checked against the step's
    schema and the whole file parsed again before it is replaced (atomically): a bad value changes nothing.
    Returns {"step", "changed": {name: [before, after]}}."""
    from runtime.steps import get_step

    cfg = ws.config()
    if step not in cfg.steps:
        raise ConfigError(f"step {step!r} is not in this pipeline")
    spec = get_step(step).spec
    where = f"{step}"
    known = {p.name for p in spec.params}
    for name in values:
        if name not in known:
            raise ConfigError(f"{where}: unknown parameter {name!r}{did_you_mean(name, sorted(known))} "
                              f"(known: {', '.join(sorted(known))})")
    before = cfg.params(step)
    checked = {name: spec.param(name).check(v, f"{where}.{name}") for name, v in values.items()}
    changed = {name: [before.get(name), v] for name, v in checked.items() if before.get(name) != v}
    if not changed:
        return {"step": step, "changed": {}}
    for name, (_old, new) in changed.items():
        cfg.set_param(step, name, new)
    get_step(step).check_params(cfg.params(step))
    get_step(step).check_in(cfg.params(step), cfg)
    get_step(step).check_here(cfg.params(step), ws)  # a device that is not enrolled, as `cdl run` refuses it
    text = cfg.to_yaml()
    parse_config(text, str(cfg.path))  # the whole pipeline, as `cdl run` will read it
    commit = ws.save_config(cfg, f"{step}: {changes_text(changed, sep=', ')}")
    return {"step": step, "changed": changed, "commit": commit}


def use_run_params(ws: Workspace, step: str, recorded: dict[str, Any]) -> dict[str, Any]:
    """A past run's parameters back into cdl.yaml (the runs dialog's "Use its parameters", as re-running a past
    run in an experiment tracker). A parameter added since that run, which it therefore did not record, gets its
    default: the run ran as the default does, whatever cdl.yaml has set since."""
    from runtime.steps import get_step

    spec = get_step(step).spec
    return set_step_params(ws, step, {**{p.name: p.default for p in spec.params if p.name not in recorded},
                                      **recorded})
