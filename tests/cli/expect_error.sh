#!/usr/bin/env bash
# expect_error.sh NP REGEX -- BIN ARGS...
# Runs BIN ARGS on NP ranks the way a user does, through ./launch/ringattn
# (mpirun -q and the flags this machine needs), and passes when the job
#  - ends within 120 s (no hang) with exit code $EXPECT_CODE (default 2),
#  - printed exactly one error line, and it matches REGEX (each error is
#    printed once, by rank 0, naming the failing rank when not all failed),
#  - printed none of mpirun's boilerplate,
#  - and, when $EXPECT_ABSENT is set, printed nothing matching it (e.g. the
#    header of a computation that should never have started).
set -uo pipefail
np="$1"; regex="$2"; shift 3
bin="$1"; shift
code="${EXPECT_CODE:-2}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out=$(RINGATTN_BIN="$bin" timeout -k 5 120 "$root/launch/ringattn" -np "$np" "$@" 2>&1)
rc=$?
echo "$out"
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then echo "expect_error: command hung (timeout)"; exit 1; fi
if [ "$rc" != "$code" ]; then echo "expect_error: exit code $rc, expected $code"; exit 1; fi
errors=$(grep -ci "error" <<<"$out")
if [ "$errors" != 1 ]; then echo "expect_error: $errors lines mention an error, expected exactly 1"; exit 1; fi
if ! grep -i "error" <<<"$out" | grep -Eq -- "$regex"; then echo "expect_error: the error line does not match: $regex"; exit 1; fi
if grep -Eq "Primary job|mpirun detected|MPI_ABORT was invoked|^-{20,}" <<<"$out"; then
  echo "expect_error: mpirun's boilerplate was printed"; exit 1
fi
if [ -n "${EXPECT_ABSENT:-}" ] && grep -Eq -- "$EXPECT_ABSENT" <<<"$out"; then
  echo "expect_error: output matches '$EXPECT_ABSENT', which must not appear"; exit 1
fi
echo "expect_error: exit $rc, one error line: $regex"
