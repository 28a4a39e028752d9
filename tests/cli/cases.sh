#!/usr/bin/env bash
# cases.sh CASE RINGATTN VARLEN WORKDIR: command-line cases that need more
# than one command or a check beyond expect_error.sh (files written first,
# outputs compared, JSON read back). Each case runs the exact commands of
# issue 12 through ./launch/ringattn, as a user does, and exits non-zero with
# a message on the first check that fails.
set -uo pipefail
case_name="$1"; RA="$2"; VARLEN="$3"; work="$4/$case_name"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

CASES_LAUNCH=launch/ringattn CASES_ENV="RINGATTN_BIN=$RA" CASES_TIMEOUT=120 CASES_LABEL=cases.sh
source "$root/tests/common/cases_lib.sh"
expect_error() { bash "$here/expect_error.sh" "$@" || fail "expect_error.sh $*"; }

# npy PATH SHAPE N [INDEX VALUE]: a float32 .npy of header shape SHAPE
# ("(1, 8, 1, 4)") holding N elements of 0.5, element INDEX set to VALUE
# (nan, inf or big = 1e5), written with printf (no numpy needed).
npy() {
  local path="$1" shape="$2" n="$3" index="${4:--1}" value="${5:-}"
  local dict="{'descr': '<f4', 'fortran_order': False, 'shape': $shape, }"
  local pad=$(( (64 - (10 + ${#dict} + 1) % 64) % 64 ))
  dict="$dict$(printf '%*s' "$pad" '')"$'\n'
  local len=${#dict}
  {
    printf '\x93NUMPY\x01\x00'
    printf "\\x$(printf '%02x' $((len & 255)))\\x$(printf '%02x' $((len >> 8)))"
    printf '%s' "$dict"
    if [ "$index" -ge 0 ]; then
      [ "$index" -gt 0 ] && printf '\x00\x00\x00\x3f%.0s' $(seq "$index")
      case "$value" in
        nan) printf '\x00\x00\xc0\x7f' ;;
        inf) printf '\x00\x00\x80\x7f' ;;
        big) printf '\x00\x50\xc3\x47' ;;  # 1e5, beyond float16
      esac
      [ $((n - index - 1)) -gt 0 ] && printf '\x00\x00\x00\x3f%.0s' $(seq $((n - index - 1)))
    elif [ "$n" -gt 0 ]; then
      printf '\x00\x00\x00\x3f%.0s' $(seq "$n")
    fi
  } > "$path"
}

small=(--heads 1 --head-dim 8 --iters 1 --warmup 0)

case "$case_name" in
  files_define_shape)  # issue 12.1: named configs resolve against the files' N; H and D come from the files
    npy q.npy "(1, 4096, 2, 4)" $((4096 * 8))
    run 2 run --config geometric --q q.npy --k q.npy --v q.npy --iters 1 --warmup 0
    expect_rc 0
    expect_out "# config geometric \(2048:1,4096:2\)"
    expect_out "# batch 1, tokens 4096 \(2048 per rank\), heads 2, head_dim 4"
    run 2 run --config geometric --q q.npy --k q.npy --v q.npy --seq 4k --heads 2 --head-dim 4 --batch 1 --iters 1 --warmup 0
    expect_rc 0  # flags that agree with the files are accepted
    ;;
  file_contradicts_flag)  # issue 12.1: a flag contradicting the file names both values
    npy q.npy "(4096, 2, 4)" $((4096 * 8))
    npy k.npy "(1, 4096, 2, 4)" $((4096 * 8))
    npy v.npy "(2048, 2, 4)" $((2048 * 8))
    expect_error 2 "'q.npy' has shape \(4096, 2, 4\) but --seq 8192 \(the files define N, B, H and D: N = 4096" -- \
      "$RA" run --config geometric --q q.npy --k k.npy --v q.npy --seq 8192
    expect_error 2 "but --batch 2 \(.*B = 1" -- "$RA" run --q q.npy --k k.npy --v q.npy --batch 2
    expect_error 2 "but --head-dim 8 \(.*D = 4" -- "$RA" run --q q.npy --k k.npy --v q.npy --head-dim 8
    expect_error 2 "'v.npy' has shape \(2048, 2, 4\) but --q 'q.npy' has shape \(4096, 2, 4\)" -- \
      "$RA" run --q q.npy --k k.npy --v v.npy
    ;;
  causal_false)  # issue 12.2: --causal=false leaves causal masking off; other values are errors
    run 2 run --branches 256:1 --seq 1024 "${small[@]}" --causal=false
    expect_rc 0
    expect_out "# config custom \(256:1\), head offsets"
    run 2 run --branches 256:1 --seq 1024 "${small[@]}" --causal=true
    expect_rc 0
    expect_out "# config custom \(256:1\) causal, head offsets"
    expect_error 2 "--causal=yes \(allowed: --causal, --causal=true or --causal=false\)" -- \
      "$RA" run --branches 256:1 --seq 1024 --causal=yes
    ;;
  npy_nonfinite)  # issue 12.6: NaN/Inf in inputs name the tensor and the first bad index
    # N=1024, H=1, D=4 on 2 ranks: element (t=600, d=2) lies in rank 1's shard.
    npy q.npy "(1, 1024, 1, 4)" 4096 $((600 * 4 + 2)) nan
    npy k.npy "(1024, 1, 4)" 4096 7 inf
    npy v.npy "(1024, 1, 4)" 4096
    npy big.npy "(1024, 1, 4)" 4096 9 big
    expect_error 2 "rank 1 of 2: --q 'q.npy' holds nan at \[b=0, t=600, h=0, d=2\] \(inputs must be finite; --allow-nonfinite" -- \
      "$RA" run --branches 64:1 --q q.npy --k v.npy --v v.npy
    expect_error 2 "rank 0 of 2: --k 'k.npy' holds inf at \[b=0, t=1, h=0, d=3\]" -- "$RA" run --branches 64:1 --q v.npy --k k.npy --v v.npy
    expect_error 2 "--v 'big.npy' holds 100000 at \[b=0, t=2, h=0, d=1\], beyond the range of f16" -- \
      "$RA" run --branches 64:1 --q v.npy --k v.npy --v big.npy --dtype f16
    run 2 run --branches 64:1 --q q.npy --k k.npy --v v.npy --allow-nonfinite --iters 1 --warmup 0
    expect_rc 0
    ;;
  backward_files)  # issue 14: run --backward with --q/--k/--v/--dout files, --dq/--dk/--dv gathered to rank 0
    # Constant inputs (0.5 everywhere), dense, not causal: P = 1/N, O = 0.5, dP = <dO, V> =
    # Delta = <dO, O>, so dS = 0 and dQ = dK = 0 exactly, and dV = 0.5 * sum_t P = 0.5.
    npy q.npy "(1, 512, 2, 8)" $((512 * 16))
    npy short.npy "(1, 256, 2, 8)" $((256 * 16))
    expect_error 2 "'short.npy' has shape \(1, 256, 2, 8\) but --q 'q.npy' has shape \(1, 512, 2, 8\) \(q, k, v and dout must have one shape\)" -- \
      "$RA" run --backward --q q.npy --k q.npy --v q.npy --dout short.npy --config dense
    for np in 1 2; do
      run $np run --backward --config dense --q q.npy --k q.npy --v q.npy --dout q.npy --iters 1 --warmup 0 \
        --out o$np.npy --dq dq$np.npy --dk dk$np.npy --dv dv$np.npy
      expect_rc 0
      expect_out "# forward .* backward .* forward\+backward"
      for f in o dq dk dv; do
        [ -s $f$np.npy ] || fail "$f$np.npy not written"
        want=0.5; [ $f = dq ] || [ $f = dk ] && want=0
        # the data after the 128-byte header: 512 x 2 x 8 floats
        bad=$(tail -c $((512 * 16 * 4)) $f$np.npy | od -A n -v -t f4 | tr -s ' ' '\n' | grep -v '^$' |
              awk -v w=$want 'BEGIN{n=0; bad=0} {n++; d=$1-w; if (d<0) d=-d; if (d>1e-5 || $1!=$1) bad++} END{print n, bad}')
        [ "$bad" = "8192 0" ] || fail "$f$np.npy: $bad (elements, wrong), expected every element $want"
      done
    done
    # dO from the seed when --dout is not given: dV = sum_t P dO[t] then varies over the head dim
    # (dQ and dK stay 0 for constant q, k, v whatever dO is).
    run 2 run --backward --config dense --q q.npy --k q.npy --v q.npy --iters 1 --warmup 0 --dv dvs.npy
    expect_rc 0
    distinct=$(tail -c $((512 * 16 * 4)) dvs.npy | od -A n -v -t f4 | tr -s ' ' '\n' | grep -v '^$' | sort -u | wc -l)
    [ "$distinct" -gt 1 ] || fail "dV from a seeded dO has $distinct distinct value(s); the seed's dO did not arrive"
    true
    ;;
  npy_huge_dimension)  # issue 12.4: a dimension beyond int64 in a .npy header is a clear error
    npy huge.npy "(99999999999999999999999,2,32)" 64
    expect_error 2 "'huge.npy': shape \\(99999999999999999999999,2,32\\) has a dimension above" -- \
      "$RA" run --q huge.npy --k huge.npy --v huge.npy
    npy big.npy "(4294967296, 4294967296, 2, 32)" 64
    expect_error 2 "'big.npy': shape \\(4294967296, 4294967296, 2, 32\\) holds more than" -- "$RA" run --q big.npy --k big.npy --v big.npy
    ;;
  out_lse_same_file)  # issue 12.5: two outputs naming one file, refused before any computation
    touch o.npy
    EXPECT_ABSENT="# ringattn run" expect_error 2 "--lse './o.npy' is the file of --out too" -- \
      "$RA" run --branches 256:1 --seq 1024 "${small[@]}" --out o.npy --lse ./o.npy
    EXPECT_ABSENT="# ringattn run" expect_error 2 "--json 'new.json' is the file of --out too" -- \
      "$RA" run --branches 256:1 --seq 1024 "${small[@]}" --out "$work/new.json" --json new.json
    ;;
  json_path_checked)  # issue 12.5: --json to a directory or a missing folder is an error, before any computation
    mkdir -p adir
    EXPECT_ABSENT="# ringattn" expect_error 2 "--json 'adir': is a directory" -- \
      "$RA" run --branches 256:1 --seq 1024 "${small[@]}" --json adir
    EXPECT_ABSENT="# ringattn" expect_error 2 "--json 'no/such/dir/r.json': folder 'no/such/dir' does not exist" -- \
      "$RA" verify --branches 256:1 --seq 1024 --heads 1 --head-dim 8 --json no/such/dir/r.json
    EXPECT_ABSENT="# ringattn" expect_error 2 "--out 'adir/': is a directory" -- \
      "$RA" run --branches 256:1 --seq 1024 "${small[@]}" --out adir/
    ;;
  writes_checked)  # issue 12.5: every write and close is checked (/dev/full fails with a non-zero exit)
    EXPECT_CODE=1 expect_error 2 "'/dev/full': write failed" -- "$RA" run --branches 256:1 --seq 1024 "${small[@]}" --out /dev/full
    EXPECT_CODE=1 expect_error 2 "'/dev/full': write failed" -- "$RA" run --branches 256:1 --seq 1024 "${small[@]}" --lse /dev/full
    EXPECT_CODE=1 expect_error 1 "'/dev/full': write failed" -- "$RA" verify --branches 256:1 --seq 1024 --heads 1 --head-dim 8 --json /dev/full
    EXPECT_CODE=1 expect_error 2 "'/dev/full': write failed" -- "$RA" bench --branches 256:1 --seq 1024 "${small[@]}" --json /dev/full
    ;;
  amplitude_range)  # issue 12.7: amplitudes beyond SPEC's range are refused; no inf in JSON
    EXPECT_ABSENT="# ringattn" expect_error 1 "--amplitude '1e30' is not a number in \[0, 100\] \(SPEC.md's tolerances hold up to logits ~1e4" -- \
      "$RA" verify --branches 256:1 --seq 1024 --heads 1 --head-dim 8 --amplitude 1e30 --json f.json
    [ ! -e f.json ] || fail "f.json was written"
    expect_error 2 "--amplitude '1e10' is not a number in \[0, 100\]" -- "$RA" verify --branches 256:1 --seq 1024 --heads 1 --head-dim 8 --amplitude 1e10
    run 2 verify --branches 256:1,512:4 --seq 2048 --heads 2 --head-dim 32 --amplitude 100 --dtype bf16 --json ok.json
    expect_rc 0
    expect_out "verify: .*: OK"
    ! grep -Eiq "inf|nan" ok.json || fail "ok.json holds inf or nan: $(cat ok.json)"
    if command -v python3 >/dev/null; then  # strict JSON: NaN/Infinity refused
      python3 -c "import json,sys; json.load(open(sys.argv[1]), parse_constant=lambda c: sys.exit('not JSON: ' + c))" ok.json || fail "ok.json is not JSON"
    fi
    ;;
  warmup_by_time)  # bench --warmup-ms: untimed runs until the time has passed, the same count on every rank, reported
    run 2 bench --branches 256:1 --seq 1024 --heads 1 --head-dim 8 --iters 2 --warmup 0 --warmup-ms 300 --json w.json
    expect_rc 0
    expect_out "# median of 2 \(after [1-9][0-9]* warm-up in 0\.[3-9][0-9] s: --warmup 0, --warmup-ms 300\)"
    python3 -c "import json,sys; j=json.load(open('w.json')); sys.exit(0 if j['warmup_runs'] >= 1 and j['warmup_s'] >= 0.3 and j['warmup_ms'] == 300 else 'warm-up not by time: %s' % j)" || fail "w.json"
    run 2 bench --branches 256:1 --seq 1024 --heads 1 --head-dim 8 --iters 2 --warmup 1
    expect_rc 0
    expect_out "# median of 2 \(after 1 warm-up in [0-9.]+ s: --warmup 1, --warmup-ms 0\)"  # cpu: no time-based warm-up by default
    expect_error 2 "--warmup-ms '-5' is not a number in \[0, 600000\] \(10 minutes at most\)" -- \
      "$RA" bench --branches 256:1 --seq 1024 --heads 1 --head-dim 8 --warmup-ms -5
    ;;
  count_suffixes)  # issue 12.4: k/M suffixes wherever a count is, overflow refused
    run 2 run --branches 1k:1,2k:2 --seq 4k --heads 1 --head-dim 8 --iters 1 --warmup 0 --cache-device-mb 1k
    expect_rc 0
    expect_out "# config custom \(1024:1,2048:2\)"
    expect_error 2 "--branches w '40000000000000000000' is not an integer" -- "$RA" run --branches 40000000000000000000:1
    ;;
  varlen_suffix)  # issue 12.4/12.8: the varlen example parses counts like the CLI (k/M suffixes)
    out=$(RINGATTN_BIN="$VARLEN" timeout -k 5 120 "$root/launch/ringattn" -np 2 --steps 1 --warm 0 --cache-device-mb 1k 2>&1); rc=$?
    echo "$out"
    expect_rc 0
    expect_out "device bytes [0-9]+ of 1073741824"
    ;;
  no_command)  # issue 12.12: no command prints usage and exits 2
    run 2
    expect_rc 2
    expect_out "usage: ringattn \[-np N\] <command>"
    [ "$(grep -c '^usage:' <<<"$out")" = 1 ] || fail "usage printed more than once"
    ;;
  last_ms_own)  # issue 12.12: the per-rank table shows each rank's own last_ms
    # Causal dense attention: rank 1 computes three times rank 0's work.
    run 2 run --config dense --seq 2048 --heads 2 --head-dim 16 --causal --iters 1 --warmup 0
    expect_rc 0
    ms=$(awk '$1 ~ /^[01]$/ && NF == 7 { print $3 }' <<<"$out" | sort -u | wc -l)
    [ "$ms" = 2 ] || fail "both ranks show the same last_ms"
    ;;
  plot_scaling_table)  # issue 12.12 (and 12.3's good path): scaling JSON, table without matplotlib
    run 2 bench --scaling --branches 256:1 --seq 1024 "${small[@]}" --json scaling.json
    expect_rc 0
    expect_out "^  strong      2 "
    mkdir -p nompl/matplotlib && echo 'raise ImportError("hidden by the test")' > nompl/matplotlib/__init__.py
    out=$(PYTHONPATH="$work/nompl" python3 "$root/examples/plot_scaling.py" scaling.json s.png 2>&1); rc=$?
    echo "$out"
    expect_rc 0
    expect_out "matplotlib"
    expect_out "^ *weak +1 +512 "
    expect_out "^ *strong +2 +1024 "
    ;;
  verify_progress)  # issue 12.12: verify prints the reference's progress every --progress seconds (default 3)
    run 1 verify --config dense --seq 4096 --heads 2 --head-dim 32 --threads 1 --progress 0.05
    expect_rc 0
    expect_out "\[ringattn\] verify: float64 reference +[0-9]+% of rank 0's 4096 rows \(1 thread, [0-9.]+ s\)"
    [ "$(grep -c 'float64 reference' <<<"$out")" -ge 2 ] || fail "fewer than two progress lines"
    expect_out "verify: .*: OK"
    run 2 verify --config dense --seq 4096 --heads 2 --head-dim 32 --threads 2 --progress 0
    expect_rc 0
    expect_no_out "float64 reference"
    expect_out "verify: .*: OK"
    ;;
  *)
    fail "unknown case"
    ;;
esac
echo "cases.sh $case_name: OK"
