#!/bin/sh
# farm-cgroup-leaf COMMAND...: make the container's cgroup able to hold one cgroup per agent,
# then exec COMMAND. The sandboxing workers start through it (deploy/k8s/base/*-worker.yaml).
#
# On cgroup v2 a container sees its own cgroup as /sys/fs/cgroup (a private cgroup namespace).
# Unlike the real root, that cgroup may not both hold processes and enable the memory and pids
# controllers for children ("no internal processes": the write fails with EBUSY). So, as root on
# cgroup v2 and only when they are not enabled yet, move every process of the container into a
# child cgroup `leaf`, then enable memory and pids below the container's cgroup; the agents'
# cgroups (`farm/agent-*`) then nest under the pod's, inside its memory limit. On cgroup v1, or
# when the controllers are already enabled, it changes nothing.
set -eu
root="${FARM_CGROUP_ROOT:-/sys/fs/cgroup}"
if [ "$(id -u)" = 0 ] && [ -f "$root/cgroup.controllers" ]; then
    enabled=" $(cat "$root/cgroup.subtree_control") "
    case "$enabled" in *" memory "*) memory=1 ;; *) memory= ;; esac
    case "$enabled" in *" pids "*) pids=1 ;; *) pids= ;; esac
    if [ -z "$memory" ] || [ -z "$pids" ]; then
        mkdir -p "$root/leaf"
        # A process may end between the read and the write (ESRCH): that is fine.
        xargs -rn1 < "$root/cgroup.procs" > "$root/leaf/cgroup.procs" 2>/dev/null || :
        echo "+memory +pids" > "$root/cgroup.subtree_control"
    fi
fi
exec "$@"
