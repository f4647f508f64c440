#!/bin/sh
# sjq.sh: a dependency-free sjq client for scripts: POSIX sh plus `nc -U` or socat.
# Submits, lists, kills, holds and releases jobs, and pauses the queue, over the daemon's UNIX socket; see README.md for the raw
# protocol recipes it is built on.

set -u

prog=sjq.sh

usage() {
    cat <<'EOF'
usage: sjq.sh [-S SOCKET] COMMAND [ARGS...]

A client of the sjq daemon that needs only POSIX sh and `nc -U` (Debian: netcat-openbsd)
or socat. The socket is -S SOCKET, else $SJQ_SOCKET, else ~/.sjq.sock. This client never
starts a daemon: use `sjq server -d` (or `sjq submit`) for that.

commands:
  submit [-m MEM] [-p PROCS] [-d DEPS] [-n NAME] [-o FILE] [-e FILE] [-H] [-x NAMES] SCRIPT|-
        queue SCRIPT (or standard input: -) and print its id. -m memory (2G), -p CPUs,
        -d ids that must succeed first (3:4), -n name, -o/-e stdout/stderr files as
        patterns, as in sbatch -o (%j job id, %x name, %A/%a array, %% a %), -H hold,
        -x comma-separated names of variables to pass on (the job otherwise gets the
        daemon's minimal environment). The job runs in the current directory.
  status [ID]   list jobs (id, name, state, dependencies)
  kill ID...    kill jobs
  hold ID...    keep queued jobs from starting
  release ID... let held jobs run
  pause         start no more jobs (running ones carry on) until resume
  resume        start jobs again
  ping          check that the daemon answers; job counts by state letter

environment: SJQ_SOCKET the socket; SJQ_TRANSPORT=nc or socat to choose (default: socat if
installed, else nc).

examples:
  id=$(sjq.sh submit -m 2G -p 4 job.sh)
  sjq.sh submit -d "$id" -n report report.sh
  printf '#!/bin/sh\necho hi\n' | sjq.sh submit -
  sjq.sh status "$id"
  sjq.sh submit -o 'logs/%x.%j.out' -e 'logs/%x.%j.err' job.sh
  sjq.sh kill "$id"
  sjq.sh pause; sjq.sh resume
EOF
}

die() {
    printf '%s: %s\n' "$prog" "$*" >&2
    exit 1
}

usage_error() {
    printf '%s: %s (see `sjq.sh -h`)\n' "$prog" "$*" >&2
    exit 2
}

sock=${SJQ_SOCKET:-${HOME:-}/.sjq.sock}

# Send standard input to the daemon and copy its replies to standard output, without CRs.
# Every request block ends with an empty line: the daemon answers everything before it, then
# closes the connection, so nc and socat exit at once instead of waiting for a timeout.
talk() {
    [ -S "$sock" ] || die "no sjq daemon is running on $sock; start one with \`sjq server -d\`"
    transport=${SJQ_TRANSPORT:-}
    if [ -z "$transport" ]; then
        if command -v socat >/dev/null 2>&1; then transport=socat; else transport=nc; fi
    fi
    case $transport in
        socat) socat - "UNIX-CONNECT:$sock" ;;
        nc) nc -U "$sock" ;;
        *) die "SJQ_TRANSPORT must be nc or socat, not '$transport'" ;;
    esac | tr -d '\r'
}

is_id() {
    case $1 in '' | *[!0-9]* | 0) return 1 ;; esac
}

# A value sent on an option line must not hold a line break: it would end the line early.
one_line() {
    case $2 in *'
'*) usage_error "$1 must not contain a line break" ;; esac
}

# The first line of $1 is a reply; "OK ..." -> the rest on stdout, "ERROR ..." -> die.
ok_or_die() {
    first=${1%%
*}
    case $first in
        OK) return 0 ;;
        'OK '*) printf '%s\n' "${first#OK }" ;;
        'ERROR '*) die "the daemon said: ${first#ERROR }" ;;
        '') die "no reply from the daemon on $sock (is it an sjq daemon?)" ;;
        *) die "unexpected reply: $first" ;;
    esac
}

cmd_submit() {
    mem='' procs='' deps='' name='' out='' err='' hold='' vars=''
    OPTIND=1
    while getopts m:p:d:n:o:e:Hx:h opt; do
        case $opt in
            m) mem=$OPTARG ;;
            p) procs=$OPTARG ;;
            d) deps=$OPTARG ;;
            n) name=$OPTARG ;;
            o) out=$OPTARG ;;
            e) err=$OPTARG ;;
            H) hold=1 ;;
            x) vars=$OPTARG ;;
            h) usage; exit 0 ;;
            *) usage_error "submit: unknown option" ;;
        esac
    done
    shift $((OPTIND - 1))
    [ $# -eq 1 ] || usage_error "submit takes one SCRIPT (or - for standard input)"
    script=$1
    if [ "$script" = - ]; then
        tmp=$(mktemp) || die "cannot make a temporary file"
        trap 'rm -f "$tmp"' EXIT
        cat >"$tmp"
        script=$tmp
    else
        [ -n "$name" ] || name=$(basename "$script")
    fi
    [ -f "$script" ] && [ -r "$script" ] || usage_error "cannot read $script"
    for pair in "mem:$mem" "procs:$procs" "deps:$deps" "name:$name" "out:$out" "err:$err"; do
        one_line "-${pair%%:*}" "${pair#*:}"
    done
    cwd=$(pwd) || die "cannot tell the current directory"
    len=$(wc -c <"$script" | tr -d ' ')
    reply=$(
        {
            printf 'SUBMIT\n'
            [ -z "$mem" ] || printf 'MEM %s\n' "$mem"
            [ -z "$procs" ] || printf 'PROCS %s\n' "$procs"
            [ -z "$deps" ] || printf 'DEPENDS %s\n' "$deps"
            [ -z "$name" ] || printf 'NAME %s\n' "$name"
            [ -z "$out" ] || printf 'STDOUT %s\n' "$out"
            [ -z "$err" ] || printf 'STDERR %s\n' "$err"
            # Patterns, as `sjq submit` sends them: %j is the job id, not a file named %j.
            [ -z "$out$err" ] || printf 'PATTERNS\n'
            [ -z "$hold" ] || printf 'HOLD\n'
            printf 'CWD %s\n' "$cwd"
            if [ -n "$vars" ]; then
                old_ifs=$IFS
                IFS=,
                for var in $vars; do
                    case $var in '' | [0-9]* | *[!A-Za-z0-9_]*) continue ;; esac
                    eval "isset=\${$var+set}"
                    [ "$isset" = set ] || continue
                    eval "value=\$$var"
                    case $value in *'
'*) continue ;; esac
                    # SETENV (not ENV) when the value has a comma: ENV would split "a=1,b=2".
                    case $value in *,*) printf 'SETENV %s=%s\n' "$var" "$value" ;;
                        *) printf 'ENV %s=%s\n' "$var" "$value" ;; esac
                done
                IFS=$old_ifs
            fi
            printf 'SRC %s\n' "$len"
            cat "$script"
            printf '\n'
        } | talk
    ) || exit 1
    ok_or_die "$reply"
}

cmd_status() {
    [ $# -le 1 ] || usage_error "status takes at most one id"
    if [ $# -eq 1 ]; then
        is_id "$1" || usage_error "not a job id: $1"
        request="STATUS $1"
    else
        request=STATUS
    fi
    reply=$(printf '%s\n\n' "$request" | talk) || exit 1
    case $reply in 'OK '[0-9]*) ;; *) ok_or_die "$reply" ;; esac
    printf '%s\n' "$reply" | awk -F '\t' '
        BEGIN {
            word["Q"] = "queued"; word["H"] = "waiting"; word["U"] = "held"
            word["R"] = "running"; word["S"] = "done"; word["F"] = "failed"
            word["A"] = "aborted"; word["K"] = "killed"; word["E"] = "error"
        }
        NR == 1 { next }
        NF >= 3 {
            if (!shown) { printf "%-7s %-24s %-8s %s\n", "ID", "NAME", "STATE", "DEPENDS"; shown = 1 }
            state = ($3 in word) ? word[$3] : $3
            printf "%-7s %-24s %-8s %s\n", $1, $2, state, ($4 == "" ? "-" : $4)
        }'
}

# KILL, HOLD or RELEASE ($1) of each id that follows; $2 is the command's name.
cmd_each() {
    verb=$1 what=$2
    shift 2
    [ $# -ge 1 ] || usage_error "$what needs at least one job id"
    for id in "$@"; do
        is_id "$id" || usage_error "not a job id: $id"
    done
    reply=$({
        for id in "$@"; do printf '%s %s\n' "$verb" "$id"; done
        printf '\n'
    } | talk) || exit 1
    # Each request is answered by one line; any that is not OK stops here with its message.
    printf '%s\n' "$reply" | while IFS= read -r line; do
        case $line in OK*) ;; *) ok_or_die "$line" ;; esac
    done || exit 1
}

# PAUSE or RESUME ($1): no argument, one OK.
cmd_queue() {
    verb=$1 what=$2
    shift 2
    [ $# -eq 0 ] || usage_error "$what takes no arguments"
    reply=$(printf '%s\n\n' "$verb" | talk) || exit 1
    ok_or_die "$reply"
}

cmd_ping() {
    [ $# -eq 0 ] || usage_error "ping takes no arguments"
    reply=$(printf 'PING\n\n' | talk) || exit 1
    case $reply in 'OK '*) printf '%s\n' "${reply#OK }" ;; *) ok_or_die "$reply" ;; esac
}

while [ $# -gt 0 ]; do
    case $1 in
        -S) [ $# -ge 2 ] || usage_error "-S needs a socket path"; sock=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        -*) usage_error "unknown option $1" ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || usage_error "give a command: submit, status, kill, hold, release, pause, resume or ping"
command=$1
shift
case $command in
    submit) cmd_submit "$@" ;;
    status) cmd_status "$@" ;;
    kill) cmd_each KILL kill "$@" ;;
    hold) cmd_each HOLD hold "$@" ;;
    release) cmd_each RELEASE release "$@" ;;
    pause) cmd_queue PAUSE pause "$@" ;;
    resume) cmd_queue RESUME resume "$@" ;;
    ping) cmd_ping "$@" ;;
    help) usage ;;
    *) usage_error "unknown command $command" ;;
esac
