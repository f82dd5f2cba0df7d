#!/bin/sh
# backlitfix-lightroom.sh FILE... : correct Lightroom Classic's files in place.
#
# Lightroom launches its External Editor with the -Edit.tif it has just rendered and already put
# in the catalog, and a post-export action with the exported files; both wait for the correction
# in that very file. This hands the paths, untouched and after "--", to `backlitfix-lightroom`
# (= `backlitfix plugins lightroom`), which replaces each file atomically, only on success.
# macOS: the droplet app built from backlitfix-lightroom.applescript runs this script.
# Settings (environment, else backlitfix's user config): BACKLITFIX_LIGHTROOM (the program),
# BACKLITFIX_MODEL, BACKLITFIX_STRENGTH.
set -u

if [ -z "${BACKLITFIX_LIGHTROOM:-}" ]; then
    # Apps started from the Finder do not see the shell's PATH: try the usual pip / Homebrew places
    for c in backlitfix-lightroom "$HOME/.local/bin/backlitfix-lightroom" /opt/homebrew/bin/backlitfix-lightroom \
             /usr/local/bin/backlitfix-lightroom; do
        if command -v "$c" >/dev/null 2>&1; then BACKLITFIX_LIGHTROOM=$c; break; fi
    done
fi
if [ -z "${BACKLITFIX_LIGHTROOM:-}" ]; then
    echo "backlitfix-lightroom.sh: backlitfix-lightroom not found; set BACKLITFIX_LIGHTROOM to its path" >&2
    exit 127
fi

set -- -- "$@"
if [ -n "${BACKLITFIX_STRENGTH:-}" ]; then set -- --strength "$BACKLITFIX_STRENGTH" "$@"; fi
if [ -n "${BACKLITFIX_MODEL:-}" ]; then set -- --model "$BACKLITFIX_MODEL" "$@"; fi
exec "$BACKLITFIX_LIGHTROOM" "$@"
