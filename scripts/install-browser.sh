#!/usr/bin/env bash
# Install Debian's chromium (headless browser for tests/test_browser.py) and pdflatex
# (texlive-latex-base, which compiles the LaTeX export in tests/test_export.py) when missing,
# and fetch the JavaScript libraries asv's HTML loads from CDNs (jQuery, flot, bootstrap...)
# from the npm registry into .cache/asv-web/, so `python -m harness.asv_html HTML_DIR`
# can make the published asv pages work without internet access.
#
# Safe to run repeatedly: does nothing that is already done. Needs root (or sudo) and the
# Debian package archive for chromium, npm for the libraries; prints a reason and exits 0 when
# it cannot install, so the browser test then skips with that reason instead of failing set-up.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ASSETS="${HARNESS_ASV_ASSETS:-$ROOT/.cache/asv-web}"

fetch_asv_assets() {
    if [ -f "$ASSETS/.complete" ]; then
        echo "install-browser: asv web libraries already in $ASSETS"
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "install-browser: no npm; asv's HTML will load its libraries from CDNs" >&2
        return 0
    fi
    tmp="$(mktemp -d)"
    echo "install-browser: fetching asv's web libraries from the npm registry"
    if ! (cd "$tmp" && npm pack --silent jquery@3.3.1 flot@0.8.3 flot-orderbars@1.0.0 \
            stupid-table-plugin@1.1.3 blueimp-md5@2.19.0 bootstrap@3.1.1 >/dev/null 2>&1); then
        echo "install-browser: npm pack failed; asv's HTML will load its libraries from CDNs" >&2
        rm -rf "$tmp"
        return 0
    fi
    mkdir -p "$ASSETS/fonts"
    for t in "$tmp"/*.tgz; do
        d="${t%.tgz}"
        mkdir -p "$d" && tar xzf "$t" -C "$d"
    done
    # Named as the CDN files that asv's index.html asks for.
    cp "$tmp"/jquery-3.3.1/package/dist/jquery.min.js "$ASSETS/jquery-3.3.1.min.js"
    for f in "" .time .selection .categories; do
        cp "$tmp/flot-0.8.3/package/jquery.flot$f.js" "$ASSETS/jquery.flot$f.min.js"
    done
    cp "$tmp"/flot-orderbars-1.0.0/package/js/jquery.flot.orderBars.js "$ASSETS/"
    cp "$tmp"/stupid-table-plugin-1.1.3/package/stupidtable.min.js "$ASSETS/"
    cp "$tmp"/blueimp-md5-2.19.0/package/js/md5.min.js "$ASSETS/"
    cp "$tmp"/bootstrap-3.1.1/package/dist/css/bootstrap.min.css "$ASSETS/"
    cp "$tmp"/bootstrap-3.1.1/package/dist/js/bootstrap.min.js "$ASSETS/"
    cp "$tmp"/bootstrap-3.1.1/package/dist/fonts/* "$ASSETS/fonts/"
    touch "$ASSETS/.complete"
    rm -rf "$tmp"
    echo "install-browser: asv web libraries in $ASSETS"
}

fetch_asv_assets

find_browser() {
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

packages=()
if path=$(find_browser); then
    echo "install-browser: found $path"
else
    packages+=(chromium fonts-dejavu-core)
fi
if command -v pdflatex >/dev/null 2>&1; then
    echo "install-browser: found $(command -v pdflatex)"
else
    packages+=(texlive-latex-base)
fi
[ "${#packages[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no apt-get on this machine; install chromium by hand to run the browser test" >&2
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-browser: not root and no password-less sudo; cannot install ${packages[*]}" >&2
        exit 0
    fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-browser: installing ${packages[*]} with apt-get"
if ! $SUDO apt-get update -qq >/dev/null; then
    echo "install-browser: apt-get update failed; ${packages[*]} not installed" >&2
    exit 0
fi
for pkg in "${packages[@]}"; do  # one at a time: a package the archive lacks costs only itself
    $SUDO apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null \
        || echo "install-browser: apt-get install $pkg failed" >&2
done

if path=$(find_browser); then
    echo "install-browser: installed $path"
else
    echo "install-browser: apt-get finished but no chromium binary is on PATH" >&2
fi
exit 0
