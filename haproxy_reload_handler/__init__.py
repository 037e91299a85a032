"""The haproxy container's reload handler: serves the master socket and starts, reloads and retires HAProxy.

A program of its own, standard library only (an import-linter contract in pyproject.toml keeps it so), so
that it runs on the haproxy container's system Python without the monitor package. It replaces the
reference static pod's bash+socat loop:

* every line ``reload`` received on the master socket (unix stream) starts a new
  ``haproxy -W -db -f CFG -p PIDFILE -x ADMIN_SOCK -sf OLD_PIDS`` (listening sockets are passed over the
  admin socket, old processes finish their connections), or a plain start if no HAProxy is running;
* reloads are serialized and coalesced: a burst of lines gives at most one reload in progress plus one after;
* a new HAProxy that exits before it forks a worker (bad config) is reported and the old ones keep serving;
* old processes still alive ``--force-stop-after`` seconds after a successful reload get SIGTERM, then
  SIGKILL after ``--kill-grace`` seconds;
* datagrams on the log socket are copied to stdout (HAProxy's ``log`` target);
* SIGTERM/SIGINT stop every HAProxy it started, remove its sockets and exit 0.

The only processes it signals are the ones it started (and their descendants), never ``pidof haproxy``.
Modules: ``cli`` (options and environment), ``server`` (the two sockets), ``processes`` (what /proc and
wait statuses say), ``handler`` (the main loop, the only place that acts), ``log``.
"""
