#!/usr/bin/env bash
# Coverage-guided fuzzing of the file parsers with libFuzzer (swiftc -sanitize=fuzzer,address).
#
#   scripts/fuzz.sh TARGET SECONDS [libFuzzer options...]   build TARGET and fuzz it for SECONDS
#   scripts/fuzz.sh all SECONDS                              build every target, fuzz each in turn
#   scripts/fuzz.sh build [TARGET...]                        only build
#   scripts/fuzz.sh list                                     list the targets
#   scripts/fuzz.sh report [LOG...]                          Markdown rows of the figures of runs
#
# Targets (Fuzz/Targets/TARGET.swift): idx gzip cifar10 csv safetensors json checkpoint.
# Everything is built in .build-fuzz/ with swiftc directly, apart from the main package's
# SwiftPM build: Fuzz/ is not part of Package.swift. One fuzzing process runs at a time
# (-jobs=1 -workers=1). A finding (trap, ASan report, leak, one input taking more than
# -timeout=1 s, one allocation over -malloc_limit_mb=512, RSS over 2 GB) stops the run with a
# non-zero status and leaves the input in .build-fuzz/artifacts/TARGET/; minimise it with
#   .build-fuzz/bin/fuzz-TARGET -minimize_crash=1 -runs=100000 FILE
# and add it to Tests/LFPDataTests/Corpus as fuzz-TARGET-NAME (replayed by `swift test`).
# The growing corpus lives in .build-fuzz/corpus/TARGET (seeded from Fuzz/Seeds/TARGET and
# the committed corrupt corpus); logs in .build-fuzz/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/.build-fuzz
TARGETS=(idx gzip cifar10 csv safetensors json checkpoint)

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; }

find_swiftc() {
  if command -v swiftc >/dev/null 2>&1; then command -v swiftc; return; fi
  for candidate in /opt/swift/usr/bin/swiftc /usr/bin/swiftc; do
    [ -x "$candidate" ] && { echo "$candidate"; return; }
  done
  echo "fuzz.sh: swiftc not found (install the Swift toolchain)" >&2; exit 1
}
SWIFTC=$(find_swiftc)

check_runtime() {
  # libFuzzer and ASan ship with the Swift toolchain (lib/clang/*/lib/linux); zlib and OpenBLAS
  # come from Debian (scripts/install-deps.sh).
  local toolchain
  toolchain=$(dirname "$(dirname "$(readlink -f "$SWIFTC")")")
  if ! ls "$toolchain"/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1 \
     && ! ls "$toolchain"/lib/swift/clang/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1; then
    echo "fuzz.sh: this Swift toolchain ($toolchain) has no libFuzzer runtime (libclang_rt.fuzzer); use the swift.org Linux toolchain" >&2
    exit 1
  fi
  if ! pkg-config --exists zlib 2>/dev/null || ! pkg-config --exists openblas 2>/dev/null; then
    LFP_NO_MPI=1 bash scripts/install-deps.sh
  fi
}

# The newest modification time of the files given, as seconds (0 if none).
newest() { local t=0 f m; for f in "$@"; do m=$(stat -c %Y "$f"); [ "$m" -gt "$t" ] && t=$m; done; echo "$t"; }
stale() { local out=$1; shift; [ ! -e "$out" ] || [ "$(newest "$@")" -gt "$(stat -c %Y "$out")" ]; }

SANITIZE=(-sanitize=fuzzer,address)
COMMON=(-parse-as-library -O -g -swift-version 6 -Xcc -fmodule-map-file="$ROOT/Sources/CZlib/module.modulemap"
        -Xcc -fmodule-map-file="$ROOT/Sources/CBLAS/module.modulemap"
        -Xcc -fmodule-map-file="$ROOT/Sources/CLFPKernels/include/module.modulemap" -I "$OUT/modules")

# The C kernels of LFPTensor (Sources/CLFPKernels), with the toolchain's clang and ASan.
build_c_kernels() {
  local sources=("$ROOT"/Sources/CLFPKernels/*.c "$ROOT"/Sources/CLFPKernels/*.h "$ROOT"/Sources/CLFPKernels/include/*.h)
  if stale "$OUT/obj/CLFPKernels.o" "${sources[@]}"; then
    echo "fuzz.sh: compiling CLFPKernels" >&2
    local clang objects=() file
    clang="$(dirname "$(readlink -f "$SWIFTC")")/clang"
    # Every C file of the target, then one relocatable object of them all.
    for file in "$ROOT"/Sources/CLFPKernels/*.c; do
      "$clang" -O2 -g -fsanitize=address -I "$ROOT/Sources/CLFPKernels/include" \
        -c "$file" -o "$OUT/obj/CLFPKernels-$(basename "$file" .c).o"
      objects+=("$OUT/obj/CLFPKernels-$(basename "$file" .c).o")
    done
    "$clang" -r "${objects[@]}" -o "$OUT/obj/CLFPKernels.o"
  fi
}

# Builds one library module of the main package (all its sources, whole-module) into .build-fuzz.
build_module() {
  local name=$1; shift
  local sources=("$ROOT"/Sources/"$name"/*.swift)
  if [ "$name" = LFP ]; then mapfile -t sources < <(find "$ROOT/Sources/LFP" -name '*.swift' | sort); fi
  if stale "$OUT/obj/$name.o" "${sources[@]}" "$@"; then
    echo "fuzz.sh: compiling module $name" >&2
    local blas=()
    [ "$name" = LFPTensor ] && blas=($(pkg-config --cflags-only-I openblas 2>/dev/null | sed 's/-I/-Xcc -I/g'))
    "$SWIFTC" "${SANITIZE[@]}" "${COMMON[@]}" "${blas[@]}" -enable-testing -wmo -module-name "$name" \
      -emit-module -emit-module-path "$OUT/modules/$name.swiftmodule" -c "${sources[@]}" -o "$OUT/obj/$name.o" \
      2> >(grep -v 'Cannot export local symbol' >&2)
  fi
}

build_target() {
  local target=$1
  local source=$ROOT/Fuzz/Targets/$target.swift
  [ -f "$source" ] || { echo "fuzz.sh: unknown target '$target' (targets: ${TARGETS[*]})" >&2; exit 64; }
  mkdir -p "$OUT/modules" "$OUT/obj" "$OUT/bin"
  build_module LFPData
  local objects=("$OUT/obj/LFPData.o") libs=(-lz)
  if [ "$target" = checkpoint ]; then
    build_c_kernels
    build_module LFPTensor "$OUT/obj/CLFPKernels.o"
    build_module LFP "$OUT/obj/LFPTensor.o" "$OUT/obj/LFPData.o"
    objects+=("$OUT/obj/CLFPKernels.o" "$OUT/obj/LFPTensor.o" "$OUT/obj/LFP.o")
    libs+=(-lopenblas -lm)
  fi
  if stale "$OUT/bin/fuzz-$target" "$source" "$ROOT/Fuzz/Support.swift" "${objects[@]}"; then
    echo "fuzz.sh: linking fuzz-$target" >&2
    "$SWIFTC" "${SANITIZE[@]}" "${COMMON[@]}" -module-name "Fuzz_$target" "$source" "$ROOT/Fuzz/Support.swift" \
      "${objects[@]}" "${libs[@]}" -o "$OUT/bin/fuzz-$target" 2> >(grep -v 'Cannot export local symbol' >&2)
  fi
}

max_len() {
  case $1 in
    cifar10) echo 16384 ;;  # a record is 3073 bytes
    *) echo 4096 ;;
  esac
}

run_target() {
  local target=$1 seconds=$2; shift 2
  local corpus=$OUT/corpus/$target artifacts=$OUT/artifacts/$target/ seeds=()
  mkdir -p "$corpus" "$artifacts" "$OUT/logs"
  [ -d "$ROOT/Fuzz/Seeds/$target" ] && seeds+=("$ROOT/Fuzz/Seeds/$target")
  # Seed with the committed corrupt corpus and earlier findings of the same format.
  local prefix=$target
  case $target in gzip) prefix=idx-gzip ;; json|checkpoint) prefix=safetensors ;; cifar10) prefix=cifar ;; esac
  if [ -n "$prefix" ]; then
    local regression=$OUT/regression/$target
    rm -rf "$regression"; mkdir -p "$regression"
    find "$ROOT/Tests/LFPDataTests/Corpus" -maxdepth 1 -type f \( -name "$prefix-*" -o -name "fuzz-$target-*" \) \
      -exec cp {} "$regression/" \;
    seeds+=("$regression")
  fi
  local dict=()
  [ -f "$ROOT/Fuzz/Dictionaries/$target.dict" ] && dict=(-dict="$ROOT/Fuzz/Dictionaries/$target.dict")
  local log
  log=$OUT/logs/$target-$(date -u +%Y%m%dT%H%M%SZ).log
  echo "fuzz.sh: fuzzing $target for ${seconds}s (log: ${log#"$ROOT"/})" >&2
  local status=0
  # -jobs=1 runs exactly one fuzzing process, which writes fuzz-0.log into its directory.
  mkdir -p "$OUT/work/$target"
  (cd "$OUT/work/$target" && SWIFT_BACKTRACE=enable=no \
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0:handle_abort=1} \
    "$OUT/bin/fuzz-$target" -max_total_time="$seconds" -timeout=1 -rss_limit_mb=2048 -malloc_limit_mb=512 \
      -max_len="$(max_len "$target")" -jobs=1 -workers=1 -print_final_stats=1 -artifact_prefix="$artifacts" \
      "${dict[@]}" "$@" "$corpus" "${seeds[@]}") >"$log" 2>&1 || status=$?
  summarise "$target" "$seconds" "$log" "$status"
  return "$status"
}

summarise() {
  local target=$1 seconds=$2 log=$3 status=$4
  local execs rate cov ft corpus
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corpus=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  if [ "$status" -eq 0 ]; then
    echo "fuzz.sh: $target: ${seconds}s, ${execs:-?} executions (${rate:-?}/s), cov ${cov:-?} edges, ft ${ft:-?}, corpus ${corpus:-?}, no findings"
  else
    echo "fuzz.sh: $target: FINDING (status $status) after ${execs:-?} executions; see $log and $OUT/artifacts/$target/" >&2
    grep -m5 -E 'ERROR|Fatal error|fatal error|SUMMARY|Test unit written' "$log" >&2 || tail -20 "$log" >&2
  fi
}

# One Markdown table row per log: target, start, seconds, executions, executions/s, coverage
# (libFuzzer's cov: at start -> end, of the instrumented edges), features, corpus, and the
# execution that last found new coverage.
report() {
  local log t start secs execs rate done_line cov ft corp init counters last
  for log in "$@"; do
    t=$(basename "$log" | sed 's/-[0-9]\{8\}T[0-9]*Z\.log$//')
    start=$(basename "$log" .log | sed 's/.*-\([0-9]\{8\}T[0-9]*Z\)$/\1/')
    secs=$(grep -o -- '-max_total_time=[0-9]*' "$log" | head -1 | cut -d= -f2)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
    if [ -z "$done_line" ]; then
      # Stopped by a finding: the last status line, and the time from executions / rate.
      done_line=$(grep -E '^#[0-9]+[[:space:]].*cov: ' "$log" | tail -1 || true)
      if [ -n "${execs:-}" ] && [ -n "${rate:-}" ] && [ "$rate" -gt 0 ]; then
        secs="≈$((execs / rate)) (stopped by a finding)"
      else
        secs="? (stopped by a finding)"
      fi
    fi
    cov=$(echo "$done_line" | grep -o 'cov: [0-9]*' | cut -d' ' -f2 || true)
    ft=$(echo "$done_line" | grep -o 'ft: [0-9]*' | cut -d' ' -f2 || true)
    corp=$(echo "$done_line" | grep -o 'corp: [0-9]*/[0-9A-Za-z]*' | cut -d' ' -f2 || true)
    init=$(grep -E '^#[0-9]+[[:space:]]+INITED' "$log" | tail -1 | grep -o 'cov: [0-9]*' | cut -d' ' -f2 || true)
    counters=$(sed -n 's/.*Loaded 1 modules *(\([0-9]*\) inline.*/\1/p' "$log" | head -1)
    last=$(awk '/^#[0-9]+/ { match($0, /cov: [0-9]+/); c = substr($0, RSTART + 5, RLENGTH - 5) + 0; if (c > l) { l = c; at = $1 } } END { print at }' "$log")
    echo "| \`$t\` | $start | ${secs:-?} | ${execs:-?} | ${rate:-?} | ${init:-?} → ${cov:-?} (of ${counters:-?}) | ${ft:-?} | ${corp:-?} | ${last:-?} |"
  done
}

[ $# -ge 1 ] || usage
case $1 in
  list) printf '%s\n' "${TARGETS[@]}" ;;
  report)
    shift
    if [ $# -eq 0 ]; then set -- "$OUT"/logs/*.log; fi
    echo "| Target | Started (UTC) | Seconds | Executions | Exec/s | Coverage (edges) | Features | Corpus | Last new coverage at |"
    echo "|---|---|---|---|---|---|---|---|---|"
    report "$@" ;;
  build)
    check_runtime; shift
    for t in "${@:-${TARGETS[@]}}"; do build_target "$t"; done ;;
  all)
    [ $# -ge 2 ] || usage
    check_runtime
    for t in "${TARGETS[@]}"; do build_target "$t"; done
    failed=()
    for t in "${TARGETS[@]}"; do run_target "$t" "$2" "${@:3}" || failed+=("$t"); done
    if [ ${#failed[@]} -gt 0 ]; then echo "fuzz.sh: findings in: ${failed[*]}" >&2; exit 1; fi ;;
  -h|--help) usage ;;
  *)
    [ $# -ge 2 ] || usage
    check_runtime
    build_target "$1"
    run_target "$@" ;;
esac
