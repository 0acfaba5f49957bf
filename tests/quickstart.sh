#!/usr/bin/env bash
# README.md's quickstart, run as written (scripts/test runs this after
# `cargo test`; alone: tests/quickstart.sh, with the debug binary built).
#
# 1. The command between <!-- quickstart:serve:begin --> and its :end marker
#    runs in the background with an empty state directory
#    (CHROMA_SYNCD_STATE_DIR) and CHROMA_SYNCD_BIN naming the debug binary, so
#    nothing is built. No Chroma answers at 127.0.0.1:8000, so scripts/serve
#    starts one. The commands between <!-- quickstart:begin --> and
#    <!-- quickstart:end --> then run with bash (-e, pipefail), `chroma-syncd`
#    being the debug binary, and their output must hold every line README
#    shows between <!-- quickstart:output:begin --> and its :end marker.
#    Then SIGTERM to scripts/serve's process group (as Ctrl-C in its terminal
#    would do with SIGINT): the Chroma it started must be gone, both ports free.
# 2. scripts/serve again on the same state directory: the collection is still
#    there (Chroma's data lives in <state_dir>/chroma). SIGTERM to
#    scripts/serve alone: it stops the daemon, then Chroma, and exits 0.
# 3. Again, and the daemon is killed (SIGKILL) behind scripts/serve's back:
#    scripts/serve exits non-zero and leaves no Chroma behind.
#
# It needs README's addresses 127.0.0.1:8000 and :8420 free and says so at
# once if they are not. Every wait is bounded; everything is on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$HOME/.cache/chroma-syncd/target}
bin=${CHROMA_SYNCD_BIN:-$target/debug/chroma-syncd}
venv="${CHROMA_SYNCD_TEST_VENV:-$HOME/.cache/chroma-syncd/venv}"
# Settings that would point the daemon, the CLI or scripts/serve elsewhere.
unset CHROMA_URL CHROMA_SYNCD_CONFIG CHROMA_SYNCD_LISTEN CHROMA_SYNCD_API_URL \
    CHROMA_SYNCD_QUEUE_URL CHROMA_SYNCD_API_TOKENS CHROMA_SYNCD_TOKEN \
    CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS

fail() {
    echo "tests/quickstart.sh: FAILED: $*" >&2
    exit 1
}
note() { echo "tests/quickstart.sh: $*" >&2; }

[ -x "$bin" ] || fail "no binary at $bin (build it: cargo test --no-run, or set CHROMA_SYNCD_BIN)"
command -v setsid >/dev/null || fail "setsid (util-linux) is needed"

port_in_use() {
    # shellcheck disable=SC2016 # $0 is the inner shell's
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null
}
for port in 8000 8420; do
    if port_in_use "$port"; then
        fail "something already listens on 127.0.0.1:$port; the quickstart needs it free"
    fi
done

# The lines between <!-- quickstart:$1:begin --> (or <!-- quickstart:begin -->
# for "") and its end marker, without the code fence lines.
block() {
    local begin end
    if [ -n "$1" ]; then
        begin="<!-- quickstart:$1:begin -->" end="<!-- quickstart:$1:end -->"
    else
        begin="<!-- quickstart:begin -->" end="<!-- quickstart:end -->"
    fi
    awk -v begin="$begin" -v end="$end" '
        $0 == begin { inside = 1; next }
        $0 == end { inside = 0 }
        inside && !/^```/ { print }
    ' README.md
}
serve_block=$(block serve)
quickstart_block=$(block "")
expected=$(block output)
[ -n "$serve_block" ] || fail "README.md has no <!-- quickstart:serve:begin --> block"
[ -n "$quickstart_block" ] || fail "README.md has no <!-- quickstart:begin --> block"
[ -n "$expected" ] || fail "README.md has no <!-- quickstart:output:begin --> block"

tmp=$(mktemp -d)
state="$tmp/state"
# `chroma-syncd` in README's commands is the binary under test.
mkdir "$tmp/bin"
ln -s "$bin" "$tmp/bin/chroma-syncd"

group=     # process group of a scripts/serve started from README's command
serve_pid= # a scripts/serve started directly
chroma_pid=
# Only what this test started: the process group, the pids it was told.
cleanup() {
    local pid
    if [ -n "$group" ]; then kill -TERM -- "-$group" 2>/dev/null || true; fi
    if [ -n "$serve_pid" ]; then kill -TERM "$serve_pid" 2>/dev/null || true; fi
    for _ in $(seq 1 60); do
        { [ -n "$group" ] && pgrep -g "$group" >/dev/null; } ||
            { [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; } ||
            break
        sleep 0.5
    done
    if [ -n "$group" ]; then kill -KILL -- "-$group" 2>/dev/null || true; fi
    for pid in $serve_pid $chroma_pid; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# Waits (bounded) for the daemon's /health; $1 is the log of the scripts/serve
# whose liveness `alive` checks.
wait_healthy() {
    local log=$1
    for _ in $(seq 1 240); do
        if curl -sf --max-time 2 -o /dev/null http://127.0.0.1:8420/health; then
            return 0
        fi
        alive || { cat "$log" >&2; fail "scripts/serve exited before the daemon was healthy"; }
        sleep 0.5
    done
    cat "$log" >&2
    fail "no healthy /health at 127.0.0.1:8420 within 120 s"
}

# The pid scripts/serve's log line gives its Chroma; checks the line is there.
started_chroma() {
    local log=$1 line
    line=$(grep -m1 'scripts/serve: Chroma: started a local server' "$log") ||
        { cat "$log" >&2; fail "scripts/serve did not say it started a local Chroma"; }
    [[ $line == *"data in $state/chroma,"* ]] || fail "Chroma's data is not under the state directory: $line"
    [[ $line =~ pid\ ([0-9]+) ]] || fail "no pid in: $line"
    echo "${BASH_REMATCH[1]}"
}

# After scripts/serve ended: its Chroma is gone (by pid, and no `chroma run`
# on this state directory), and both ports are free (bounded waits).
assert_cleaned_up() {
    local what=$1
    for _ in $(seq 1 40); do
        kill -0 "$chroma_pid" 2>/dev/null || break
        sleep 0.5
    done
    ! kill -0 "$chroma_pid" 2>/dev/null || fail "$what: Chroma (pid $chroma_pid) is still running"
    ! pgrep -f -- "--path $state/chroma" >/dev/null ||
        fail "$what: a chroma process on $state/chroma is left: $(pgrep -af -- "--path $state/chroma")"
    chroma_pid=
    for port in 8000 8420; do
        for _ in $(seq 1 20); do
            port_in_use "$port" || break
            sleep 0.5
        done
        ! port_in_use "$port" || fail "$what: 127.0.0.1:$port still answers"
    done
    note "$what: no Chroma left, ports 8000 and 8420 free"
}

# --- 1. README's commands
note "1. README's quickstart: $serve_block"
setsid env CHROMA_SYNCD_BIN="$bin" CHROMA_SYNCD_STATE_DIR="$state" \
    bash -c "$serve_block" >"$tmp/serve1.log" 2>&1 </dev/null &
group=$!
alive() { pgrep -g "$group" >/dev/null; }
wait_healthy "$tmp/serve1.log"
chroma_pid=$(started_chroma "$tmp/serve1.log")
note "the daemon is healthy; Chroma pid $chroma_pid; running README's quickstart commands"
if ! output=$(PATH="$tmp/bin:$PATH" timeout 300 bash -e -o pipefail -c "$quickstart_block" 2>"$tmp/quickstart.err"); then
    cat "$tmp/quickstart.err" >&2
    echo "$output" >&2
    fail "README's quickstart commands failed"
fi
sed 's/^/  | /' "$tmp/quickstart.err" >&2
while IFS= read -r line; do echo "  > $line"; done <<<"$output" >&2
while IFS= read -r line; do
    [ -z "$line" ] && continue
    grep -qxF -- "$line" <<<"$output" || {
        cat "$tmp/quickstart.err" >&2
        fail "the quickstart's output lacks README's line: $line"
    }
done <<<"$expected"
note "the quickstart's output holds README's $(grep -c . <<<"$expected") expected lines"
kill -TERM -- "-$group"
for _ in $(seq 1 120); do
    alive || break
    sleep 0.5
done
alive && fail "scripts/serve's processes still run 60 s after SIGTERM"
group=
grep -q 'scripts/serve: Chroma: stopped the local server' "$tmp/serve1.log" ||
    { cat "$tmp/serve1.log" >&2; fail "scripts/serve did not say it stopped Chroma"; }
assert_cleaned_up "1. after SIGTERM to scripts/serve's process group"

# --- 2. again on the same state directory; SIGTERM to scripts/serve alone
note "2. scripts/serve on the same state directory, then SIGTERM to it alone"
CHROMA_SYNCD_BIN="$bin" CHROMA_SYNCD_STATE_DIR="$state" scripts/serve >"$tmp/serve2.log" 2>&1 </dev/null &
serve_pid=$!
alive() { kill -0 "$serve_pid" 2>/dev/null; }
wait_healthy "$tmp/serve2.log"
chroma_pid=$(started_chroma "$tmp/serve2.log")
count=$("$venv/bin/python" -c '
import chromadb
client = chromadb.HttpClient(host="127.0.0.1", port=8000, database="quickstart")
print(client.get_collection("docs").count())')
[ "$count" -gt 0 ] || fail "the collection is empty after a restart"
note "the collection kept its $count chunks across the restart"
kill -TERM "$serve_pid"
status=0
for _ in $(seq 1 120); do
    alive || break
    sleep 0.5
done
alive && fail "scripts/serve still runs 60 s after SIGTERM"
wait "$serve_pid" || status=$?
serve_pid=
[ "$status" -eq 0 ] || { cat "$tmp/serve2.log" >&2; fail "scripts/serve exited with $status after SIGTERM"; }
assert_cleaned_up "2. after SIGTERM to scripts/serve"

# --- 3. the daemon dies on its own
note "3. scripts/serve, then the daemon is killed"
CHROMA_SYNCD_BIN="$bin" CHROMA_SYNCD_STATE_DIR="$state" scripts/serve >"$tmp/serve3.log" 2>&1 </dev/null &
serve_pid=$!
wait_healthy "$tmp/serve3.log"
chroma_pid=$(started_chroma "$tmp/serve3.log")
daemon=$(pgrep -P "$serve_pid" | grep -vx "$chroma_pid" || true)
[[ $daemon =~ ^[0-9]+$ ]] || fail "cannot tell the daemon among scripts/serve's children: $daemon"
kill -KILL "$daemon"
for _ in $(seq 1 60); do
    alive || break
    sleep 0.5
done
alive && fail "scripts/serve still runs 30 s after its daemon died"
status=0
wait "$serve_pid" || status=$?
serve_pid=
[ "$status" -ne 0 ] || fail "scripts/serve exited 0 although its daemon was killed"
assert_cleaned_up "3. after the daemon died (scripts/serve exited $status)"
note "passed"
