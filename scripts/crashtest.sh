#!/bin/sh
# Crash-recovery test: SIGKILLs the server while it runs a batch (CRASH_ITEMS, CRASH_KILLS, CRASH_SEED, CRASH_LEASE tune it).
exec go test -tags crash -run TestCrashRecovery -v -timeout 30m ./cmd/infergate/ "$@"
