#!/usr/bin/env bash
# Installs what iotgate's build, tests and dev runner need on Debian 12:
# the servers the integration tests start (PostgreSQL, Prosody, ejabberd),
# the headless browser they drive (chromium), the C toolchain for -race,
# and the Go modules. Idempotent and quiet when everything is there
# already; needs no input (CI runs it without stdin).
#
# The tests start their own throwaway servers (internal/servers), so the
# system services that apt starts on install are stopped and disabled.
set -euo pipefail

cd "$(dirname "$0")/.."

# Debian packages, and a file each one installs that says it is there.
# dpkg-query alone is not enough: a package can be "installed" with its
# files removed.
declare -A PKGS=(
	[prosody]=/usr/bin/prosody
	[ejabberd]=/usr/sbin/ejabberdctl
	[postgresql]=/usr/share/doc/postgresql
	[libxml2-dev]=/usr/include/libxml2/libxml/parser.h
	# xmllint: schemas/xsd's tests compare with it.
	[libxml2-utils]=/usr/bin/xmllint
	[pkg-config]=/usr/bin/pkg-config
	[gcc]=/usr/bin/gcc
	[openssl]=/usr/bin/openssl
	# curl: fetches mod_rest below.
	[curl]=/usr/bin/curl
	[python3-slixmpp]=/usr/share/doc/python3-slixmpp
)
# Installed without their recommended packages: chromium recommends
# fonts, upower, a notification daemon and printer setup, none of which a
# headless test needs (the browser tests in internal/servers/browser.go).
declare -A BARE=(
	[chromium]=/usr/bin/chromium
)

# installed PKG FILE: is PKG installed, with FILE there?
installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' && [ -e "$2" ]
}
missing=()
for pkg in "${!PKGS[@]}"; do
	installed "$pkg" "${PKGS[$pkg]}" || missing+=("$pkg")
done
missing_bare=()
for pkg in "${!BARE[@]}"; do
	installed "$pkg" "${BARE[$pkg]}" || missing_bare+=("$pkg")
done
# The PostgreSQL server binaries (the postgresql package is only a
# dependency on the current version's).
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
	missing+=(postgresql)
fi

if [ $((${#missing[@]} + ${#missing_bare[@]})) -gt 0 ]; then
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		if command -v sudo >/dev/null; then
			sudo=(sudo -n)
		else
			echo "deps: need root (or sudo) to install: ${missing[*]} ${missing_bare[*]}" >&2
			exit 1
		fi
	fi
	echo "deps: installing ${missing[*]} ${missing_bare[*]}"
	# Wait for the dpkg lock rather than fail if another apt runs.
	lock=(-o DPkg::Lock::Timeout=600)
	"${sudo[@]}" apt-get "${lock[@]}" update -q
	# --force-confold: keep config files if a package was installed before.
	install=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -q
		-o Dpkg::Options::=--force-confold)
	if [ ${#missing[@]} -gt 0 ]; then
		"${install[@]}" "${missing[@]}"
	fi
	if [ ${#missing_bare[@]} -gt 0 ]; then
		"${install[@]}" --no-install-recommends "${missing_bare[@]}"
	fi
	# apt starts the system servers on install; they are not used and
	# would hold the default ports (5222, 5269, 5432, ...).
	for svc in prosody ejabberd postgresql; do
		"${sudo[@]}" service "$svc" stop >/dev/null 2>&1 || true
		if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
			"${sudo[@]}" systemctl disable "$svc" >/dev/null 2>&1 || true
		elif command -v update-rc.d >/dev/null; then
			"${sudo[@]}" update-rc.d "$svc" disable >/dev/null 2>&1 || true
		fi
	done
fi

# Prosody's community mod_rest, for the bench's peer row (#17): Debian
# 12's prosody-modules lacks it; trixie's has one that runs on Prosody
# 0.12. That package as a whole depends on Prosody 13, so it is not
# installed: its .deb is fetched from the Debian archive, checked against
# the pinned SHA256 and only mod_rest is extracted, into the directory
# internal/servers.ProsodyModulesDir reads. Any failure stops the script.
MODS_VERSION='0.0~hg20250402.f315edc39f3d+dfsg-2'
MODS_SHA256='f8f0bc7427a31620666cd518b0df40f11a239b40fa9a013ecc7983370c0c1a38'
MODS_URL="http://deb.debian.org/debian/pool/main/p/prosody-modules/prosody-modules_${MODS_VERSION}_all.deb"
mods_dir="${XDG_CACHE_HOME:-$HOME/.cache}/iotgate/prosody-modules-${MODS_VERSION}"
if [ ! -f "$mods_dir/mod_rest/mod_rest.lua" ]; then
	echo "deps: fetching mod_rest from prosody-modules ${MODS_VERSION} (Debian trixie)"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	if ! curl -fsSL --retry 3 --max-time 300 -o "$tmp/mods.deb" "$MODS_URL"; then
		echo "deps: download of $MODS_URL failed" >&2
		exit 1
	fi
	got=$(sha256sum "$tmp/mods.deb" | cut -d' ' -f1)
	if [ "$got" != "$MODS_SHA256" ]; then
		echo "deps: $MODS_URL: SHA256 $got, want $MODS_SHA256" >&2
		exit 1
	fi
	dpkg-deb -x "$tmp/mods.deb" "$tmp/x"
	if [ ! -f "$tmp/x/usr/lib/prosody/modules/mod_rest/mod_rest.lua" ]; then
		echo "deps: $MODS_URL has no mod_rest" >&2
		exit 1
	fi
	mkdir -p "$mods_dir"
	rm -rf "$mods_dir/mod_rest.new"
	cp -r "$tmp/x/usr/lib/prosody/modules/mod_rest" "$mods_dir/mod_rest.new"
	# Moved into place last, so a half-done copy is never taken for one.
	mv "$mods_dir/mod_rest.new" "$mods_dir/mod_rest"
	rm -rf "$tmp"
	trap - EXIT
fi

# Go: the machine's toolchain (/usr/local/go on our machines).
if ! command -v go >/dev/null; then
	if [ -x /usr/local/go/bin/go ]; then
		export PATH="/usr/local/go/bin:$PATH"
	else
		echo "deps: go not found (install Go $(sed -n 's/^go //p' go.mod) into /usr/local/go)" >&2
		exit 1
	fi
fi
go mod download
