"""The deployment pipeline (thesis Figure 4.4): export, compress, revise, package, push.

Variants of a model version live in the registry (`cdl models variants NAME:VERSION --json`); each is an ONNX
file (an artifact) that takes the preprocessed tensor and gives class probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runtime.domain.errors import (
    AwaitingPerson,
    CdlError,
    ConfigError,
    NotFoundError,
    StepFailed,
    did_you_mean,
)
from runtime.domain.steps import ParamSpec, Port, Role, StepSpec
from runtime.steps.base import Cancelled, Step, StepContext, StepResult, hash_text, misspelt

METHODS = ("dynamic_int8", "static_int8", "prune", "qat", "distill", "lowrank", "tensorrt")
DEFAULT_METHODS: list[Any] = ["dynamic_int8", "static_int8"]


TARGETS = ("champion", "challenger", "latest")  # deploy.export.model's words (else NAME:VERSION or NAME@ALIAS)


def resolve_target(ctx: StepContext, ref: str):  # noqa: ANN201
    """'champion' / 'latest' (of the pipeline's model), 'NAME@ALIAS' or 'NAME:VERSION'."""
    try:
        return resolve_in(ctx.store, ctx.config, ref)
    except NotFoundError:
        if ref not in ("champion", "challenger"):
            raise
        name = pipeline_model(ctx.config)
        raise StepFailed(ctx.step, f"model {name} has no {ref} yet: review a version "
                         f"(`cdl models review {name}:N --approve`) or set deploy.export.model") from None


def pipeline_model(config: Any) -> str:  # noqa: ANN401 - a PipelineConfig
    """The name model.register registers versions under (the pipeline's name by default)."""
    name = config.params("model.register")["name"] if "model.register" in config.steps else None
    return name or config.name


def resolve_in(store: Any, config: Any, ref: str):  # noqa: ANN201, ANN401
    """resolve_target without a step: 'champion', 'challenger' and 'latest' are the pipeline's model's (the
    compression panel names the version deploy.revise measures)."""
    name = pipeline_model(config)
    if ref == "latest":
        return store.model_version(name)
    if ref in ("champion", "challenger"):
        return store.model_version(name, ref)
    return store.resolve_model(ref)


def exported(ctx: StepContext):  # noqa: ANN201
    run = ctx.store.last_done_runs().get("deploy.export")
    if run is None:
        raise StepFailed(ctx.step, "deploy.export has not run yet")
    return ctx.store.model_version(run.summary["name"], run.summary["version"])


def native_model(ws, mv):  # noqa: ANN001, ANN201
    ckpt = ws.artifacts.get(mv.artifacts["checkpoint"])
    if mv.framework == "torch":
        from runtime.ml import torch_backend

        model, _ = torch_backend.load(ckpt, ws.root)
        return model
    from runtime.ml import keras_backend

    return keras_backend.load(ckpt, ws.root, mv.extra.get("arch"))


def native_predict(mv, model, X: Any) -> np.ndarray:  # noqa: ANN001
    arch = mv.extra["arch"]
    if mv.framework == "torch":
        import torch

        from runtime.ml.torch_backend import _Batches

        data = _Batches(X, None, arch["layout"])
        out = []
        with torch.no_grad():
            for i in range(0, X.shape[0], 256):
                x, _ = data.get(np.arange(i, min(i + 256, X.shape[0])))
                out.append(torch.softmax(model(x), dim=1).numpy())
        return np.concatenate(out)
    from runtime.ml.common import load_tensorflow
    from runtime.ml.keras_backend import _as_input

    tf = load_tensorflow()

    return tf.nn.softmax(model(_as_input(X, None, arch["layout"]), training=False)).numpy()


def export_native(mv, model, example: np.ndarray) -> tuple[Path, str]:  # noqa: ANN001
    from runtime.ml import onnx_tools

    if mv.framework == "torch":
        return onnx_tools.export_torch(model, example)
    return onnx_tools.export_keras(model, example)


def _dense(X: Any, n: int | None = None) -> np.ndarray:
    xb = X[:n] if n is not None else X
    return xb.toarray() if hasattr(xb, "toarray") else np.asarray(xb)


class ExportStep(Step):
    spec = StepSpec(
        id="deploy.export",
        title="Export",
        pipeline="deploy",
        role=Role.SOFTWARE_ENGINEER,
        inputs=(Port("champion", "model_version"),),
        outputs=(Port("onnx", "variant"),),
        params=(
            ParamSpec("model", "str", "champion", "which model version: champion, challenger, latest, NAME:VERSION, "
                      "NAME@ALIAS"),
            ParamSpec("parity_samples", "int", 128, "test samples for the parity check", minimum=1),
            ParamSpec("tolerance", "float", 1e-4, "largest allowed difference of probabilities", minimum=0.0),
        ),
        description="ONNX export (PyTorch's exporter, or tf2onnx for Keras) with a parity check against the "
        "framework on test samples.",
    )

    def needs(self, params: dict[str, Any], config: Any) -> set[str]:
        return set()  # the model is found by its alias (a review through the CLI promotes it directly)

    def check_params(self, params: dict[str, Any]) -> None:
        """"champoin" was looked up as a model of that name ("model 'champoin' does not exist"). A bare NAME (its
        latest version) is taken, unless it is one letter or two from champion, challenger or latest."""
        ref = str(params.get("model") or "").strip()
        if ref in TARGETS:
            return
        if not ref:
            raise ConfigError(f"deploy.export.model: empty; expected {', '.join(TARGETS)}, NAME:VERSION or NAME@ALIAS")
        close = misspelt(ref, TARGETS)
        if close:
            raise ConfigError(f"deploy.export.model: {ref!r}: did you mean {close!r}? (a model of that name: "
                              f"{ref}:VERSION or {ref}@ALIAS)")

    reads = "the model to export"

    def fingerprint(self, ctx: StepContext) -> str:
        try:
            mv = resolve_target(ctx, ctx.params["model"])
        except CdlError:
            return "none"
        return f"{mv.ref}:{mv.artifacts.get('checkpoint')}"

    def run(self, ctx: StepContext) -> StepResult:
        from runtime.ml import onnx_tools
        from runtime.ml.preprocess import load_transform

        mv = resolve_target(ctx, ctx.params["model"])
        prep = load_transform(ctx.workspace, mv.transform, log=ctx.log)
        layout = mv.extra["arch"]["layout"]
        cached = prep.X_test if len(prep.y_test) else prep.X_train  # the cache's layout (NHWC or CSR rows)
        n = min(ctx.params["parity_samples"], cached.shape[0])
        raw = _dense(cached, n)
        sample = np.ascontiguousarray(onnx_tools.layout_input(raw, layout), dtype=np.float32)  # the model's layout
        ctx.progress(0.1, f"loading {mv.ref} ({mv.framework})")
        model = native_model(ctx.workspace, mv)
        ctx.progress(0.3, "exporting to ONNX")
        path, exporter = export_native(mv, model, sample)
        try:  # a parity check that fails to run leaves no exported file in the system's temp folder
            sess = onnx_tools.session(path)
            ort_probs = onnx_tools.predict(sess, sample)
            ref_probs = native_predict(mv, model, raw)
            size = path.stat().st_size
            digest = ctx.workspace.artifacts.put_file(path, move=True)
        finally:
            path.unlink(missing_ok=True)
        diff = float(np.abs(ort_probs - ref_probs).max())
        agree = float((ort_probs.argmax(1) == ref_probs.argmax(1)).mean())
        ctx.log(f"exported with {exporter}; parity on {n} test samples: max |difference| {diff:.2e}, "
                f"same class {agree:.1%}; onnxruntime ran on {sess.get_providers()}")
        if diff > ctx.params["tolerance"]:
            ctx.store.put_variant(mv.name, mv.version, "fp32", method="export", status="failed", artifact=digest,
                                  size_bytes=size, message=f"parity check failed: max difference {diff:.3g}")
            raise StepFailed(ctx.step, f"parity check failed: ONNX and {mv.framework} differ by up to {diff:.3g} "
                             f"(tolerance {ctx.params['tolerance']})")
        ctx.store.put_variant(mv.name, mv.version, "fp32", method="export", status="ok", artifact=digest,
                              size_bytes=size, params={"exporter": exporter},
                              metrics={"parity_max_abs_diff": diff, "parity_samples": n}, message=exporter)
        return StepResult(summary={"name": mv.name, "version": mv.version, "ref": mv.ref, "artifact": digest,
                                   "size_bytes": size, "exporter": exporter, "parity_max_abs_diff": diff,
                                   "parity_samples": n, "providers": sess.get_providers()},
                          # the version too: one trained again with the same seed on the same data exports the same
                          # bytes, and the steps after this one stayed up to date with the version before's variants
                          output_fp=hash_text(mv.ref, digest),
                          message=f"{mv.ref} -> ONNX ({size / 1024:.0f} KiB), parity {diff:.1e}")


def _whole(low: int) -> Callable[[Any], str]:
    return lambda v: "" if not isinstance(v, bool) and isinstance(v, int) and v >= low else \
        f"expected a whole number of at least {low}"


def _number(low: float, high: float | None = None, low_open: bool = True) -> Callable[[Any], str]:
    def check(v: Any) -> str:  # noqa: ANN401
        ok = not isinstance(v, bool) and isinstance(v, int | float) and (v > low if low_open else v >= low) \
            and (high is None or v <= high)
        above = f"above {low}" if low_open else f"at least {low}"
        return "" if ok else f"expected a number {above}{f' and at most {high}' if high is not None else ''}"
    return check


def _rank(v: Any) -> str:  # noqa: ANN401
    if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0 or (v >= 1 and v != int(v)):
        return "expected a share of each layer's smaller side (above 0, below 1) or a whole rank (1 or more)"
    return ""


# each compression method's options: a typo ({prune: {sparsty: 0.8}}) was ignored and the default used
_LR = _number(0)
OPTIONS: dict[str, dict[str, Callable[[Any], str]]] = {
    "dynamic_int8": {},
    "static_int8": {"calibration_samples": _whole(1),
                    "per_channel": lambda v: "" if isinstance(v, bool) else "expected true or false"},
    "prune": {"sparsity": _number(0, 0.99), "finetune_epochs": _whole(0), "lr": _LR},
    "qat": {"finetune_epochs": _whole(1), "lr": _LR},
    "distill": {"student_hidden": _whole(1), "epochs": _whole(1), "temperature": _number(0),
                "alpha": _number(0, 1, low_open=False), "lr": _LR},
    "lowrank": {"rank": _rank, "finetune_epochs": _whole(0), "lr": _LR},
    "tensorrt": {"precision": lambda v: "" if v in ("fp16", "int8") else "expected fp16 or int8"},
}


def _check_options(method: str, opts: dict[str, Any], where: str) -> None:
    known = OPTIONS[method]
    for key, value in opts.items():
        if key == "name":
            if not isinstance(value, str) or not value.strip():
                raise CdlError(f"{where}.name: expected the variant's name, a non-empty string")
            continue
        if key not in known:
            raise CdlError(f"{where}: {method} has no option {key!r}{did_you_mean(key, list(known))}; its options: "
                           f"{', '.join([*known, 'name']) if known else 'name only'}")
        said = known[key](value)
        if said:
            raise CdlError(f"{where}.{key}: {said}, got {value!r}")


def _methods(raw: list[Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """[(variant name, method, options)] from cdl.yaml entries: "dynamic_int8" or {prune: {sparsity: 0.5}}."""
    out = []
    for i, entry in enumerate(raw):
        where = f"cdl.yaml: steps.deploy.compress.params.methods[{i}]"
        if isinstance(entry, str):
            method, opts = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            method, opts = next(iter(entry.items()))
            opts = dict(opts or {})
        else:
            raise CdlError(f"{where}: expected a method name or {{method: {{options}}}}, got {entry!r}")
        if method not in METHODS:
            raise CdlError(f"{where}: unknown method {method!r} (known: {', '.join(METHODS)})")
        _check_options(method, opts, f"{where}.{method}")
        out.append((str(opts.pop("name", method)), method, opts))
    names = [n for n, _, _ in out]
    if len(set(names)) != len(names):
        raise CdlError("cdl.yaml: steps.deploy.compress.params.methods: two variants share a name; give one a 'name'")
    return out


class CompressStep(Step):
    spec = StepSpec(
        id="deploy.compress",
        title="Compress",
        pipeline="deploy",
        role=Role.SOFTWARE_ENGINEER,
        inputs=(Port("onnx", "variant"),),
        outputs=(Port("variants", "variants"),),
        params=(
            ParamSpec("methods", "list", DEFAULT_METHODS,
                      "one variant per entry: dynamic_int8, static_int8 {calibration_samples}, prune {sparsity, "
                      "finetune_epochs}, qat {finetune_epochs} (Keras), distill {student_hidden, epochs, "
                      "temperature, alpha}, lowrank {rank, finetune_epochs}, tensorrt {precision: fp16|int8}"),
            ParamSpec("seed", "int", 42),
        ),
        description="One variant per configured method: INT8 dynamic and static (QDQ) quantization, pruning, "
        "quantization-aware training, distillation, low-rank factorization, TensorRT where available.",
    )

    def check_params(self, params: dict[str, Any]) -> None:
        _methods(params["methods"])

    def running_note(self, ws: Any, run: Any) -> tuple[str, float | None]:  # noqa: ANN401
        """"ws:3: 2 of 7 variants done (dynamic_int8, static_int8); now distill", and 2/7."""
        export = ws.store.last_done_runs().get("deploy.export")
        methods = _methods((run.params or {}).get("methods") or [])
        if export is None or not methods:
            return "", None
        name, version = export.summary["name"], export.summary["version"]
        made = {v.variant: v.status for v in ws.store.variants(name, version) if v.created >= run.started}
        done = [m for m, _method, _opts in methods if m in made]
        shown = ", ".join(m + ("" if made[m] == "ok" else f" {made[m]}") for m in done)
        after = next((m for m, _method, _opts in methods if m not in made), None)
        return (f"{name}:{version}: {len(done)} of {len(methods)} variants done" + (f" ({shown})" if shown else "")
                + (f"; now {after}" if after else ""), len(done) / len(methods))

    def run(self, ctx: StepContext) -> StepResult:
        from runtime.ml import compress_methods

        methods = _methods(ctx.params["methods"])
        mv = exported(ctx)
        fp32 = ctx.store.variant(mv.name, mv.version, "fp32")
        results = []
        failed = []
        for n, (name, method, opts) in enumerate(methods):
            ctx.progress(n / max(1, len(methods)), f"{name}")
            ctx.check_cancelled()
            try:
                out = compress_methods.run(ctx, mv, fp32, method, opts, ctx.params["seed"])
            except compress_methods.Skipped as exc:
                ctx.store.put_variant(mv.name, mv.version, name, method=method, status="skipped", artifact=None,
                                      size_bytes=None, params=opts, message=str(exc))
                ctx.log(f"{name}: skipped: {exc}")
                results.append({"variant": name, "status": "skipped", "message": str(exc)})
                continue
            except Cancelled:  # at an epoch of a method's training: the run stops, no variant is recorded failed
                raise
            except Exception as exc:  # noqa: BLE001 - record, go on with the other methods, fail at the end
                msg = f"{type(exc).__name__}: {exc}"
                ctx.store.put_variant(mv.name, mv.version, name, method=method, status="failed", artifact=None,
                                      size_bytes=None, params=opts, message=msg[:2000])
                ctx.log(f"{name}: failed: {msg[:300]}")
                failed.append(name)
                results.append({"variant": name, "status": "failed", "message": msg[:500]})
                continue
            try:
                size = out.path.stat().st_size
                digest = ctx.workspace.artifacts.put_file(out.path, move=True)
            finally:
                out.path.unlink(missing_ok=True)
            ctx.store.put_variant(mv.name, mv.version, name, method=method, status="ok", artifact=digest,
                                  size_bytes=size, params={**opts, **out.params}, metrics=out.metrics,
                                  message=out.message)
            ctx.log(f"{name}: {size / 1024:.0f} KiB ({size / fp32.size_bytes:.2f} of fp32){'; ' + out.message if out.message else ''}")
            results.append({"variant": name, "status": "ok", "size_bytes": size, **out.metrics})
        summary = {"ref": mv.ref, "variants": results}
        if failed:
            raise _failed(ctx.step, f"{len(failed)} method(s) failed: {', '.join(failed)} (the others are recorded)",
                          summary)
        ok = sum(r["status"] == "ok" for r in results)
        return StepResult(summary=summary, output_fp=hash_text(mv.ref, results),
                          message=f"{ok} variant(s), {len(results) - ok} skipped")


def _failed(step: str, reason: str, summary: dict[str, Any]) -> StepFailed:
    err = StepFailed(step, reason)
    err.summary = summary
    return err


def slower_at(ratios: dict[str, float], margin: float) -> list[str]:
    """The batch sizes ("b1", "b64") at which a variant is slower than FP32: its median latency, timed in turns with
    FP32's (`onnx_tools.interleaved_latency`), above FP32's by more than `margin`. Each timed on its own, a pruned
    model (dense storage: FP32's work exactly) was marked "slower" at 1.054 and at 1.09 of FP32's median, the machine
    busier at the time."""
    return [b for b in ("b1", "b64") if ratios.get(b) is not None and ratios[b] > margin]


def slower_words(where: list[str] | None, ratios: dict[str, float] | None = None) -> str:
    """"SLOWER than fp32 at batch 64 (1.07× its median)": where, and by how much (the mark said neither, and a
    variant faster at batch 1 looked wrongly marked). `where` None (a revision made before it was kept): the mark
    alone."""
    if not where:
        return "SLOWER than fp32"
    parts = [f"{b[1:]}" + (f" ({ratios[b]:.2f}× its median)" if ratios and ratios.get(b) else "") for b in where]
    return "SLOWER than fp32 at batch " + " and ".join(parts)


class ReviseStep(Step):
    spec = StepSpec(
        id="deploy.revise",
        title="Revise",
        pipeline="deploy",
        role=Role.SOFTWARE_ENGINEER,
        inputs=(Port("variants", "variants"),),
        outputs=(Port("revision", "revision"),),
        params=(
            ParamSpec("runs_b1", "int", 200, "timed runs at batch 1", minimum=5),
            ParamSpec("runs_b64", "int", 30, "timed runs at batch 64", minimum=3),
            ParamSpec("slower_margin", "float", 1.05, "a variant is 'slower than FP32' above this ratio of median "
                      "latencies, the two timed in turns", minimum=1.0),
        ),
        description="Every variant against the original on this machine: file size, latency p50/p95 at batch 1 "
        "and 64 in onnxruntime, test accuracy and its change.",
    )

    def run(self, ctx: StepContext) -> StepResult:
        from runtime.ml import onnx_tools
        from runtime.ml.preprocess import load_transform

        mv = exported(ctx)
        prep = load_transform(ctx.workspace, mv.transform, log=ctx.log)
        X = onnx_tools.layout_input(prep.X_test, mv.extra["arch"]["layout"])
        variants = [v for v in ctx.store.variants(mv.name, mv.version) if v.status == "ok"]
        rows: dict[str, dict[str, Any]] = {}
        sessions: dict[str, Any] = {}
        for n, v in enumerate(variants):
            ctx.progress(0.5 * n / max(1, len(variants)), f"testing {v.variant}")
            ctx.check_cancelled()
            path = ctx.workspace.artifacts.get(v.artifact)
            if v.method == "tensorrt":
                sess = onnx_tools.tensorrt_session(path, ctx.workspace.root / ".cdl" / "trt-cache" / v.artifact[:16],
                                                   fp16=v.params.get("precision", "fp16") == "fp16", spinning=False)
            else:
                sess = onnx_tools.session(path, spinning=False)  # timed in turns: see interleaved_latency
            probs = onnx_tools.predict(sess, X)
            acc = float((probs.argmax(1) == prep.y_test).mean()) if len(prep.y_test) else None
            rows[v.variant] = {"size_bytes": v.size_bytes, "test_accuracy": acc, "providers": sess.get_providers()}
            sessions[v.variant] = sess
        if "fp32" not in rows:
            raise StepFailed(ctx.step, "no fp32 variant: run deploy.export")
        # every variant timed in turns with the others, so that the machine's load weighs on all alike
        ctx.progress(0.5, "timing the variants in turns")
        ctx.check_cancelled()
        timed = {b: onnx_tools.interleaved_latency(sessions, X, b, ctx.params[f"runs_b{b}"]) for b in (1, 64)}
        for name, r in rows.items():
            r["latency_ms"] = {f"b{b}_{q}": timed[b][name][q] for b in (1, 64) for q in ("p50", "p95")}
        base = rows["fp32"]
        margin = ctx.params["slower_margin"]
        for name, r in rows.items():
            r["accuracy_delta"] = (r["test_accuracy"] - base["test_accuracy"]) if r["test_accuracy"] is not None else None
            lat = r["latency_ms"]
            r["vs_fp32"] = {f"b{b}": lat[f"b{b}_p50"] / max(base["latency_ms"][f"b{b}_p50"], 1e-9) for b in (1, 64)}
            r["slower_at"] = [] if name == "fp32" else slower_at(r["vs_fp32"], margin)
            r["slower_than_fp32"] = bool(r["slower_at"])
            r["size_ratio"] = base["size_bytes"] / r["size_bytes"] if r["size_bytes"] else None
            ctx.store.put_variant(mv.name, mv.version, name, metrics={
                "test_accuracy": r["test_accuracy"], "accuracy_delta": r["accuracy_delta"],
                "latency_ms": r["latency_ms"], "slower_than_fp32": r["slower_than_fp32"], "slower_at": r["slower_at"],
                "vs_fp32": r["vs_fp32"], "providers": r["providers"], "size_ratio": r["size_ratio"]})
            mark = f"  {slower_words(r['slower_at'], r['vs_fp32'])}" if r["slower_than_fp32"] else ""
            ctx.log(f"{name:<14} {r['size_bytes'] / 1024:8.0f} KiB  acc {r['test_accuracy']:.4f} "
                    f"({r['accuracy_delta']:+.4f})  b1 p50 {lat['b1_p50']:.3f} ms  b64 p50 {lat['b64_p50']:.2f} ms{mark}")
        return StepResult(summary={"ref": mv.ref, "variants": rows}, output_fp=hash_text(mv.ref, sorted(rows)),
                          message=f"{len(rows)} variant(s) measured")


def variants_json(store, ref: str) -> dict[str, Any]:  # noqa: ANN001
    mv = store.resolve_model(ref)
    out = []
    for v in store.variants(mv.name, mv.version):
        m = v.metrics
        out.append({"name": v.variant, "method": v.method, "status": v.status, "size_bytes": v.size_bytes,
                    "latency_ms": m.get("latency_ms"), "test_accuracy": m.get("test_accuracy"),
                    "accuracy_delta": m.get("accuracy_delta"), "slower_than_fp32": m.get("slower_than_fp32"),
                    "providers": m.get("providers"), "message": v.message, "bundle": v.bundle,
                    "details": {k: val for k, val in m.items() if k not in ("latency_ms", "test_accuracy",
                                                                           "accuracy_delta", "slower_than_fp32",
                                                                           "providers")}})
    return {"model": mv.ref, "variants": out}


class PackageStep(Step):
    spec = StepSpec(
        id="deploy.package",
        title="Package",
        pipeline="deploy",
        role=Role.SOFTWARE_ENGINEER,
        inputs=(Port("revision", "revision"),),
        outputs=(Port("bundles", "bundles"),),
        params=(
            ParamSpec("variants", "list", None, "variants to package (empty: every variant that was built)",
                      nullable=True),
            ParamSpec("out_dir", "str", ".cdl/bundles", "where bundles are written (relative to the workspace)"),
        ),
        description="A signed bundle per variant: manifest (signature, preprocessing as data, reference "
        "statistics, metrics, lineage), model.onnx, sha256 of every member, ed25519 signature.",
    )

    def run(self, ctx: StepContext) -> StepResult:
        from runtime.bundles import package

        mv = exported(ctx)
        wanted = ctx.params["variants"]
        variants = [v for v in ctx.store.variants(mv.name, mv.version) if v.status == "ok"
                    and (not wanted or v.variant in wanted)]
        if wanted:
            missing = set(wanted) - {v.variant for v in variants}
            if missing:
                built = [v.variant for v in ctx.store.variants(mv.name, mv.version) if v.status == "ok"]
                raise StepFailed(ctx.step, f"no such built variant of {mv.ref}: {', '.join(sorted(missing))} (built: "
                                 f"{', '.join(built) or 'none'}; deploy.package's variants names them)")
        out_dir = ctx.workspace.root / ctx.params["out_dir"]
        bundles = []
        for n, v in enumerate(variants):
            ctx.progress(n / max(1, len(variants)), f"packaging {v.variant}")
            path = out_dir / f"{mv.name}-v{mv.version}-{v.variant}.cdlb"
            info = package(ctx.workspace, mv.ref, v.variant, path)
            bundles.append(info)
            ctx.log(f"{path.relative_to(ctx.workspace.root)}: {info['size_bytes'] / 1024:.0f} KiB, sha256 "
                    f"{info['sha256'][:12]}")
        return StepResult(summary={"ref": mv.ref, "bundles": bundles},
                          output_fp=hash_text([b["sha256"] for b in bundles]),
                          message=f"{len(bundles)} signed bundle(s)")


NO_DEVICE = "waits for a device: none is enrolled yet"


class PushStep(Step):
    spec = StepSpec(
        id="deploy.push",
        title="Deploy",
        pipeline="deploy",
        role=Role.DEVOPS_ENGINEER,
        inputs=(Port("bundles", "bundles"),),
        outputs=(Port("deployments", "deployments"),),
        params=(
            ParamSpec("devices", "list", [], "enrolled devices to push to (empty: all)"),
            ParamSpec("variant", "str", "fp32", "which variant to deploy; served: the one each device serves now, "
                      "where it was built for this version (else fp32)"),
            ParamSpec("activate", "bool", True, "activate after the push (atomic; the previous model stays for "
                      "rollback)"),
            ParamSpec("canary", "int", 0, "staged rollout: this many devices first, watched; the rest only if "
                      "they do well (0: all at once)", minimum=0),
            ParamSpec("watch_s", "float", 60.0, "how long the canaries are watched", minimum=0.0),
            ParamSpec("max_error_rate", "float", 0.05, "a canary with more failed requests than this rolls back",
                      minimum=0.0, maximum=1.0),
            ParamSpec("min_requests", "int", 0, "a canary that answered fewer requests than this in the watch "
                      "rolls back (too little to judge)", minimum=0),
            ParamSpec("check_drift", "bool", False, "also check the canaries' predictions while watched for drift "
                      "(deploy.monitor's tests and settings); drift rolls them back"),
        ),
        description="Pushes the bundle to every device (resumable, verified on the device), activates it "
        "atomically, and records the deployment.",
    )

    def check_in(self, params: dict[str, Any], config: Any) -> None:  # noqa: ANN401
        """A variant that deploy.compress does not make, or deploy.package does not package, failed on every
        device when the push ran, after export, compression and revision."""
        from runtime.devices import SERVED

        variant = params["variant"]
        if variant in ("fp32", SERVED) or "deploy.compress" not in config.steps:
            return
        made = ["fp32", *(name for name, _, _ in _methods(config.params("deploy.compress")["methods"]))]
        packaged = config.params("deploy.package").get("variants") if "deploy.package" in config.steps else None
        if variant not in made:
            raise ConfigError(f"deploy.push.variant: {variant!r} is no variant deploy.compress makes"
                              f"{did_you_mean(variant, made)}; it makes {', '.join(made)} (or {SERVED}: what each "
                              "device serves now)")
        if packaged and variant not in packaged:
            raise ConfigError(f"deploy.push.variant: {variant!r} is not among deploy.package.variants "
                              f"({', '.join(packaged)}), so it has no bundle to push")

    def check_here(self, params: dict[str, Any], ws: Any) -> None:  # noqa: ANN401
        """A device that is not enrolled failed the push only when the run got there, after export, compression,
        revision and packaging."""
        enrolled = sorted(d.name for d in ws.store.devices())
        for name in params["devices"] or []:
            if name not in enrolled:
                raise ConfigError(f"deploy.push.devices: {name!r} is not enrolled{did_you_mean(name, enrolled)}; "
                                  f"enrolled: {', '.join(enrolled) or 'none'} (`cdl devices enroll {name} --address "
                                  "HOST:PORT`, or the devices panel's Enroll…)")

    def waiting_note(self, ws: Any, run: Any) -> str:  # noqa: ANN401
        # it waited for a device, and one was enrolled since: `cdl status` still said "none is enrolled yet"
        if NO_DEVICE not in (run.error or ""):
            return ""
        names = sorted(d.name for d in ws.store.devices())
        if not names:
            return ""
        return (f"{', '.join(names[:3])}{' …' if len(names) > 3 else ''} enrolled since: `cdl run deploy.push` "
                "pushes to them")

    def run(self, ctx: StepContext) -> StepResult:
        from runtime.devices import deploy

        mv = exported(ctx)
        names = ctx.params["devices"] or sorted(d.name for d in ctx.store.devices())
        if not names:  # a workspace with no device yet waits for one: its first Run all ended red, "failed"
            raise AwaitingPerson(ctx.step, f"{mv.ref} {NO_DEVICE} (`cdl devices enroll "
                                 "NAME --address HOST:PORT`, or the devices panel's Enroll…), then run again")
        variants = self._variants(ctx, mv, names)
        if ctx.params["canary"]:
            return self._staged(ctx, mv, names, variants)
        done, errors = [], []
        for n, name in enumerate(names):
            ctx.progress(n / len(names), f"pushing to {name}")
            try:
                res = deploy(ctx.workspace, f"{mv.ref}", variants[name], name, ctx.params["activate"], log=ctx.log)
                done.append({"device": name, **res})
            except CdlError as exc:
                errors.append(f"{name}: {exc}")
                ctx.log(f"{name}: {exc}")
        if errors:
            raise _failed(ctx.step, "; ".join(errors), {"deployed": done})
        return StepResult(summary={"ref": mv.ref, "variant": ctx.params["variant"], "deployed": done},
                          output_fp=hash_text(done), message=f"{_what(mv, variants)} on {len(done)} device(s)")

    def never_run_note(self, ws) -> str:  # noqa: ANN001
        """Devices given a model by `cdl deploy` or the devices panel, while the pipeline never pushed: the card
        said "never run" and nothing else, as if no device served anything."""
        done = _done_deployments(ws, ("deploy",))
        if not done:
            return ""
        d = done[-1]
        n = len({x.device for x in done})
        return (f"not run by the pipeline, but {n} device{'s' if n > 1 else ''} got models outside it (cdl deploy, "
                f"the devices panel): the last, {d.name}:{d.version}:{d.variant} on {d.device} at "
                f"{d.time:%Y-%m-%d %H:%M}")

    def done_note(self, ws, run) -> str:  # noqa: ANN001
        """Devices given another model (`cdl deploy`, the devices panel, `cdl loop`) or rolled back after the
        pipeline's push: the card said "done" as if they still served what it pushed."""
        if run.finished is None:
            return ""
        later = _done_deployments(ws, ("deploy", "rollback", "sideload"), after=run.finished)
        if not later:
            return ""
        d = later[-1]
        what = f"{d.name}:{d.version}:{d.variant}" if d.name else "its previous model"
        verb = {"deploy": "got", "rollback": "was rolled back to"}.get(d.action, "had installed on it")
        more = f" ({len(later)} changes in all)" if len(later) > 1 else ""
        return (f"devices changed since it ran, outside it: {d.device} {verb} {what} at {d.time:%Y-%m-%d %H:%M}"
                f"{more}")

    @staticmethod
    def _variants(ctx: StepContext, mv, names: list[str]) -> dict[str, str]:  # noqa: ANN001
        """Each device's variant: the configured one, or with `served` the one it serves now where built. A device
        whose variant changes is named in the log (an INT8 device a person chose went to fp32 unremarked)."""
        from runtime.devices import SERVED, variant_for

        out = {}
        for name in names:
            if ctx.params["variant"] == SERVED:
                out[name], note = variant_for(ctx.workspace, name, mv, SERVED)
                if note:
                    ctx.log(f"{note}: it gets {out[name]}")
                continue
            out[name] = ctx.params["variant"]
            try:
                was = ((ctx.store.device(name).last_health or {}).get("active") or {})
            except NotFoundError:  # not enrolled: its push fails and says so, the others go on
                continue
            if was.get("name") == mv.name and was.get("variant") not in (None, out[name]):
                ctx.log(f"{name} served {was['variant']}; it gets {out[name]} (deploy.push's variant; `variant: "
                        f"served` keeps each device's)")
        return out

    def _staged(self, ctx: StepContext, mv, names: list[str], variants: dict[str, str]) -> StepResult:  # noqa: ANN001
        """The staged rollout of `cdl deploy --canary` (runtime.devices.staged_deploy), cancellable in its watch."""
        from runtime.devices import drift_settings, staged_deploy

        p = ctx.params
        if not 1 <= p["canary"] < len(names):
            raise StepFailed(ctx.step, f"canary {p['canary']}: a staged rollout needs more devices than canaries, "
                             f"and there are {len(names)} ({', '.join(names)})")
        ctx.progress(0.0, f"canary {', '.join(names[:p['canary']])}")
        try:
            res = staged_deploy(ctx.workspace, mv.ref, variants, names, p["canary"], p["watch_s"],
                                p["max_error_rate"], p["min_requests"], log=ctx.log, sleep=ctx.sleep,
                                drift=drift_settings(ctx.workspace) if p["check_drift"] else None)
        except CdlError as exc:
            raise StepFailed(ctx.step, str(exc)) from None
        done = [{"device": d, "variant": variants[d], "bundle_id": ctx.store.deployments(d)[-1].bundle,
                 "activated": True} for d in res["deployed"]]
        return StepResult(summary={"ref": mv.ref, "variant": p["variant"], "deployed": done, "canary": res["canary"]},
                          output_fp=hash_text(done),
                          message=f"{_what(mv, variants)} on {len(done)} device(s), canary "
                          f"{', '.join(names[:p['canary']])} first")


def _done_deployments(ws, actions: tuple[str, ...], after=None) -> list:  # noqa: ANN001
    """The deployment history's successful `actions`, oldest first; with `after`, those later than it. A push of
    the bundle a device served already changed nothing there, and is left out."""
    from runtime.devices import ALREADY_ACTIVE

    return [d for d in ws.store.deployments() if d.status == "done" and d.action in actions
            and d.message != ALREADY_ACTIVE and (after is None or d.time > after)]


def _what(mv, variants: dict[str, str]) -> str:  # noqa: ANN001
    """"ws:2:fp32", or "ws:2 (dev1 dynamic_int8, dev2 fp32)" where the devices got different variants."""
    if len(set(variants.values())) == 1:
        return f"{mv.ref}:{next(iter(variants.values()))}"
    return f"{mv.ref} ({', '.join(f'{d} {v}' for d, v in variants.items())})"


STEPS = [ExportStep, CompressStep, ReviseStep, PackageStep, PushStep]
