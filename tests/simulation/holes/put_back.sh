#!/bin/sh
# Run the simulation with one hole of issue 26 put back, on a copy of this checkout (the checkout itself is
# not touched): tests/simulation/holes/N.patch applied to bot/services, then `python -m tests.simulation ARGS`.
#
#   tests/simulation/holes/put_back.sh 2 --seeds 2000 --db sqlite --keep-going
#
# 1: a scheduled grant inherits the membership of a grant that ends before it starts
# 2: the ownership hand-off races the completion of the heir's IdP add (ownership as before the call)
# 3: break-glass access can be extended
# 4: an approved grant that has not started cannot be stopped, and is carried out after its eligibility left
set -eu
root=$(cd "$(dirname "$0")/../../.." && pwd)
n=$1
shift
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
(cd "$root" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$dir"
(cd "$dir" && patch -s -p1 < "$root/tests/simulation/holes/$n.patch")
cd "$dir"
"$root/.venv/bin/python" -m tests.simulation "$@"
