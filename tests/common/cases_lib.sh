# Sourced by the command-line case scripts (tests/cli/cases.sh, tests/train/cases.sh):
# run a launcher as a user does and check what it printed. Set before sourcing:
#   case_name, root        the case and the checkout
#   CASES_LAUNCH           the launcher, relative to root (launch/ringattn, launch/train)
#   CASES_ENV              VAR=value telling it which binary to run
#   CASES_TIMEOUT          seconds before a run counts as hung
#   CASES_LABEL            how failures name the script
fail() { echo "$CASES_LABEL $case_name: FAILED: $*"; exit 1; }
# run NP ARGS...: the launcher on NP ranks; sets $out (stdout and stderr) and $rc.
run() {
  local np="$1"; shift
  out=$(env "$CASES_ENV" timeout -k 5 "$CASES_TIMEOUT" "$root/$CASES_LAUNCH" -np "$np" "$@" 2>&1)
  rc=$?
  printf '$ ./%s -np %s %s\n%s\n(exit %s)\n' "$CASES_LAUNCH" "$np" "$*" "$out" "$rc"
  [ "$rc" != 124 ] && [ "$rc" != 137 ] || fail "hung: $*"
}
expect_rc() { [ "$rc" = "$1" ] || fail "exit code $rc, expected $1"; }
expect_out() { grep -Eq -- "$1" <<<"$out" || fail "output does not match: $1"; }
expect_no_out() { ! grep -Eq -- "$1" <<<"$out" || fail "output matches, but must not: $1"; }
