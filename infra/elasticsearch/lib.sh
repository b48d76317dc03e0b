# shellcheck shell=bash
# Sourced by start and stop.

# Is $1 the pid of a live Elasticsearch? A stale pid file may name a recycled pid, and a SIGKILLed node stays a
# zombie until init reaps it (seconds, under load); neither has Elasticsearch's command line.
es_running() {
    [[ "$1" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'org\.elasticsearch'
}
