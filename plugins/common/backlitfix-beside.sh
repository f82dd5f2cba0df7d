#!/bin/sh
# backlitfix-beside.sh FILE... : correct each photo into NAME_backlitfix.EXT beside it.
#
# For hosts that append the selected files to a command as arguments, with no shell parsing them
# (ART user commands, RawTherapee's external editor). Names are only ever expanded inside double
# quotes and handed on after "--", so spaces, quotes, $(...), a leading '-' or newlines are inert.
#
# Settings (environment, else backlitfix's user config): BACKLITFIX (the program), BACKLITFIX_MODEL,
# BACKLITFIX_STRENGTH, BACKLITFIX_SUFFIX (default _backlitfix).
set -u

find_backlitfix() {
    if [ -n "${BACKLITFIX:-}" ]; then return 0; fi
    # GUI apps on macOS do not see the shell's PATH: try the usual pip / Homebrew places too
    for c in backlitfix "$HOME/.local/bin/backlitfix" /opt/homebrew/bin/backlitfix /usr/local/bin/backlitfix; do
        if command -v "$c" >/dev/null 2>&1; then BACKLITFIX=$c; return 0; fi
    done
    echo "backlitfix-beside: backlitfix not found; set BACKLITFIX to its path" >&2
    exit 127
}

# dir_of PATH: sets $dir to the folder of PATH (no $(...): that would eat trailing newlines)
dir_of() {
    case $1 in
        */*) dir=${1%/*}; [ -n "$dir" ] || dir=/ ;;
        *) dir=. ;;
    esac
}

[ $# -gt 0 ] || { echo "usage: backlitfix-beside.sh FILE..." >&2; exit 2; }
find_backlitfix

# run_in DIR FILE...: one backlitfix process for files of one folder (the model loads once)
run_in() {
    out=$1
    shift
    set -- --output "$out" --suffix "${BACKLITFIX_SUFFIX:-_backlitfix}" -- "$@"
    if [ -n "${BACKLITFIX_STRENGTH:-}" ]; then set -- --strength "$BACKLITFIX_STRENGTH" "$@"; fi
    if [ -n "${BACKLITFIX_MODEL:-}" ]; then set -- --model "$BACKLITFIX_MODEL" "$@"; fi
    "$BACKLITFIX" run "$@"
}

dir_of "$1"
first=$dir
same=1
for f in "$@"; do
    dir_of "$f"
    [ "$dir" = "$first" ] || same=0
done

if [ "$same" = 1 ]; then
    run_in "$first" "$@"
    exit $?
fi
status=0
for f in "$@"; do  # files from several folders: each result beside its own photo
    dir_of "$f"
    run_in "$dir" "$f" || status=1
done
exit $status
