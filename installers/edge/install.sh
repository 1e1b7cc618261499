#!/usr/bin/env bash
# Install the edge agent on a device (Debian/Ubuntu): a venv with only the agent's dependencies, a system
# user, the enrolled folder and the systemd unit.  Usage: sudo ./install.sh /path/to/enrolled-folder [SRC]
set -euo pipefail
ENROLLED=${1:?usage: install.sh ENROLLED_FOLDER [SOURCE_DIR_OR_WHEEL]}
SRC=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
id cdl-edge >/dev/null 2>&1 || useradd --system --home /var/lib/cdl-edge --shell /usr/sbin/nologin cdl-edge
python3 -m venv /opt/cdl-edge/venv
/opt/cdl-edge/venv/bin/pip install --upgrade pip
/opt/cdl-edge/venv/bin/pip install "${SRC}[edge]"
install -d -o cdl-edge -g cdl-edge -m 0700 /var/lib/cdl-edge
cp -r "$ENROLLED"/. /var/lib/cdl-edge/
chown -R cdl-edge:cdl-edge /var/lib/cdl-edge
install -m 0644 "$(dirname "$0")/cdl-edge.service" /etc/systemd/system/cdl-edge.service
systemctl daemon-reload
systemctl enable --now cdl-edge
echo "cdl-edge is running; check with: systemctl status cdl-edge, or what its folder holds (active model, journal):"
echo "  sudo -u cdl-edge /opt/cdl-edge/venv/bin/cdl-edge status --data-dir /var/lib/cdl-edge"
