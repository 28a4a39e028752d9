#!/usr/bin/env bash
# expect_error.sh NP REGEX -- COMMAND...
# Runs COMMAND under mpirun with NP ranks; passes when it exits non-zero,
# and every rank printed an error line matching REGEX ("error (rank R of NP)").
# A check that is removed makes the command succeed or print no such line, so
# this test fails.
set -uo pipefail
np="$1"; regex="$2"; shift 3
flags=(--oversubscribe)
[ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
out=$(timeout 120 mpirun "${flags[@]}" --bind-to none -np "$np" "$@" 2>&1)
rc=$?
echo "$out"
if [ "$rc" = 0 ]; then echo "expect_error: command succeeded, expected a failure"; exit 1; fi
if [ "$rc" = 124 ]; then echo "expect_error: command hung (timeout)"; exit 1; fi
for ((r = 0; r < np; r++)); do
  if ! grep -E "error \(rank $r of $np\)" <<<"$out" | grep -Eq -- "$regex"; then
    echo "expect_error: rank $r printed no error matching: $regex"; exit 1
  fi
done
echo "expect_error: exit $rc, every rank reported: $regex"
