#!/usr/bin/env bash
# Install CDL Studio for this user on Linux: the one-file launcher, a desktop entry and its icon.
# Usage: ./install-desktop.sh [PREFIX]   (default PREFIX: ~/.local). Needs python3.11.
# The first start of the studio (from the menu or `cdl-studio`) installs the wheel into
# $XDG_DATA_HOME/cdl-studio/venv; later starts are immediate.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=${1:-$HOME/.local}
PY=$(command -v python3.11 || true)
[ -n "$PY" ] || { echo "install-desktop.sh: python3.11 is needed (apt install python3.11 python3.11-venv)" >&2; exit 1; }
install -d "$PREFIX/bin" "$PREFIX/share/cdl-studio" "$PREFIX/share/applications" "$PREFIX/share/icons/hicolor/scalable/apps"
install -m 0644 "$HERE/cdl-studio.pyz" "$PREFIX/share/cdl-studio/cdl-studio.pyz"
cat > "$PREFIX/bin/cdl-studio" <<SH
#!/bin/sh
exec "$PY" "$PREFIX/share/cdl-studio/cdl-studio.pyz" "\$@"
SH
chmod 0755 "$PREFIX/bin/cdl-studio"
sed "s|^Exec=.*|Exec=$PREFIX/bin/cdl-studio studio %f|" "$HERE/cdl-studio.desktop" > "$PREFIX/share/applications/cdl-studio.desktop"
install -m 0644 "$HERE/cdl-studio.svg" "$PREFIX/share/icons/hicolor/scalable/apps/cdl-studio.svg"
command -v update-desktop-database >/dev/null && update-desktop-database "$PREFIX/share/applications" || true
echo "installed: $PREFIX/bin/cdl-studio and the desktop entry 'CDL Studio'"
