#!/usr/bin/env bash
# Fetch Triton's perf_analyzer (the C++ load generator Triton's docs measure throughput with) into
# .cache/perf_analyzer/, for the agent throughput benchmark (`make bench` runs this first).
#
# tritonclient 2.34.0 is the last wheel on PyPI that carries the binary (later ones do not, and the
# `perf-analyzer` package there is a placeholder). It links libcudart.so.12 (from NVIDIA's
# nvidia-cuda-runtime-cu12 wheel; it needs no GPU to load) and libb64.so.0d (Debian's libb64-0d, taken with
# `apt-get download`, no root needed). Nothing is installed system-wide. Exits 1, saying what is missing,
# where one of them cannot be fetched; the benchmark then measures with its Python load generator only.
set -euo pipefail
DEST="${1:-.cache/perf_analyzer}"
PY="${PY:-.venv/bin/python}"
starts() {  # it has no --version: its usage (exit 99) shows it loads; a missing library is 127
    local rc=0
    LD_LIBRARY_PATH="$DEST/lib" "$DEST/bin/perf_analyzer" >/dev/null 2>&1 || rc=$?
    [[ -x "$DEST/bin/perf_analyzer" && $rc -eq 99 ]]
}
if starts; then
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$DEST/bin" "$DEST/lib"
say() { echo "perf_analyzer: $*" >&2; }
"$PY" -m pip download -q --no-deps -d "$work" "tritonclient==2.34.0" --only-binary=:all: \
    --platform manylinux1_x86_64 || { say "cannot download the tritonclient 2.34.0 wheel"; exit 1; }
"$PY" -m pip download -q --no-deps -d "$work" "nvidia-cuda-runtime-cu12==12.9.79" --only-binary=:all: \
    || { say "cannot download nvidia-cuda-runtime-cu12 (libcudart.so.12)"; exit 1; }
"$PY" - "$work" "$DEST" <<'EOF'
import pathlib, stat, sys, zipfile
work, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for wheel, member, out in ((next(work.glob("tritonclient-2.34.0-*.whl")),
                            "tritonclient-2.34.0.data/data/bin/perf_analyzer", dest / "bin" / "perf_analyzer"),
                           (next(work.glob("nvidia_cuda_runtime_cu12-*.whl")),
                            "nvidia/cuda_runtime/lib/libcudart.so.12", dest / "lib" / "libcudart.so.12")):
    with zipfile.ZipFile(wheel) as zf:
        tmp = out.with_suffix(".part")
        tmp.write_bytes(zf.read(member))
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR)
        tmp.replace(out)
EOF
if ! ldconfig -p 2>/dev/null | grep -q "libb64.so.0d"; then
    (cd "$work" && apt-get download libb64-0d >/dev/null 2>&1) || { say "cannot download Debian's libb64-0d (apt-get download libb64-0d)"; exit 1; }
    dpkg-deb -x "$work"/libb64-0d_*.deb "$work/b64"
    cp "$work"/b64/usr/lib/*/libb64.so.0d "$DEST/lib/"
fi
if ! starts; then
    say "fetched, but it does not start: $(LD_LIBRARY_PATH="$DEST/lib" "$DEST/bin/perf_analyzer" 2>&1 | head -1)"
    exit 1
fi
say "ready in $DEST"
