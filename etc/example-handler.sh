#!/bin/sh
# Example exec handler: reads the payload from stdin and reports it. Its
# output goes to qworkerd's log, tagged with the queue and job id.
# Exit 0 = done, 65 = permanent failure (dead at once), anything else = retry.
payload=$(cat)
echo "attempt $QW_ATTEMPT of $QW_MAX_ATTEMPTS: got ${#payload} bytes: $payload"
case $payload in
fail*) echo "payload asks to fail" >&2; exit 1 ;;
esac
exit 0
